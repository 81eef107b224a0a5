"""``python -m latent``: real subprocesses, clear errors without tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from latent import paths
from latent.catalog import cache_file_for, catalog_key, file_sha256
from latent.data import FILES

ROOT = paths.REPO_ROOT


def run_cli(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "latent", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def test_bad_data_file_is_one_clear_line_not_a_traceback(tmp_path, real_data_dir):
    for name in FILES.values():
        (tmp_path / name).symlink_to(real_data_dir / name)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"garbage")
    result = run_cli("encode", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "t10k-labels-idx1-ubyte.gz" in result.stderr and "not a gzip file" in result.stderr


def test_bad_checkpoint_is_a_clear_error(tmp_path, real_data_dir):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 64)
    result = run_cli("encode", "--data-dir", str(real_data_dir), "--checkpoint", str(bad))
    assert result.returncode == 2 and "Traceback" not in result.stderr and "corrupt" in result.stderr


def test_encode_builds_the_catalog_cache(real_data, tmp_path):
    env = {"LATENT_CACHE_DIR": str(tmp_path)}
    result = run_cli("encode", "--rebuild", "--data-dir", str(real_data.source), env=env)
    assert result.returncode == 0, result.stderr
    assert "Catalog: 70000 items, d=10" in result.stdout and "built" in result.stdout
    key = catalog_key(file_sha256(paths.DEFAULT_CHECKPOINT), real_data.fingerprint)
    cached = cache_file_for(key, tmp_path)
    with np.load(cached) as npz:
        mu, sigma = npz["mu"], npz["sigma"]
    assert mu.shape == sigma.shape == (70000, 10) and np.isfinite(mu).all() and (sigma > 0).all()
    again = run_cli("encode", "--data-dir", str(real_data.source), env=env)
    assert "loaded from cache" in again.stdout
