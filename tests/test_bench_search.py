"""The search benchmark's smoke mode runs, covers every score, and finds the index equal to the naive code.

Correctness only: timings depend on the machine and are never asserted.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from latent.scores import SCORES

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_benchmark_table_covers_every_score_and_agrees_with_naive(tmp_path: Path) -> None:
    out = tmp_path / "search.md"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_search.py"), "--quick", "--n", "3000", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # the script must not depend on the working directory
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = out.read_text()
    assert table.strip() in result.stdout
    assert "Machine:" in table and "torch" in table

    header = next(line for line in table.splitlines() if line.startswith("| N |"))
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    exact_column = columns.index("exact")
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in table.splitlines()
        if line.startswith("| 3,000 |")
    ]
    thread_counts = {row[1] for row in rows}
    assert "1" in thread_counts
    for threads in thread_counts:
        assert sorted(row[2] for row in rows if row[1] == threads) == sorted(SCORES)
    # Every row compared the index's top-k with the naive code run in float64.
    assert all(row[exact_column] == "yes" for row in rows), table
    assert "index top-k equals the naive float64 top-k: yes" in table
