"""The download path over real HTTP on 127.0.0.1: good, corrupt, truncated and missing files."""

from __future__ import annotations

import http.server
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from latent.data import FILES, DataError, download_file, load_fashion_mnist
from tests.http_mirror import tiny_mirror


@pytest.fixture
def mirror(tmp_path) -> Iterator[tuple[str, http.server.HTTPServer, dict[str, str]]]:
    with tiny_mirror(tmp_path) as served:
        yield served


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_good_download_verifies_md5_loads_and_reports_progress(mirror, tmp_path):
    url, server, md5s = mirror
    target = tmp_path / "data"
    calls: list[tuple[str, int, int | None]] = []
    data = load_fashion_mnist(target, base_url=url, checksums=md5s, expected_counts=None,
                              progress=lambda label, done, total: calls.append((label, done, total)))
    assert leftovers(target) == sorted(FILES.values())
    for name, body in server.files.items():
        assert (target / name).read_bytes() == body
    assert len(data) == 40 and data.is_test.sum() == 10
    # Progress: every file starts at 0 and ends at its full size, never going backwards.
    for name, body in server.files.items():
        seen = [done for label, done, total in calls if label == name]
        assert seen[0] == 0 and seen[-1] == len(body) and seen == sorted(seen)
        assert {total for label, _, total in calls if label == name} == {len(body)}


def test_only_missing_files_are_downloaded(mirror, tmp_path):
    url, server, md5s = mirror
    target = tmp_path / "data"
    target.mkdir()
    for name in list(FILES.values())[:3]:
        (target / name).write_bytes(server.files[name])
    load_fashion_mnist(target, base_url=url, checksums=md5s, expected_counts=None)
    assert server.requests == [FILES["test-labels"]]


def test_corrupt_download_is_rejected_and_nothing_stays_behind(mirror, tmp_path):
    url, server, md5s = mirror
    name = FILES["train-images"]
    body = bytearray(server.files[name])
    body[len(body) // 2] ^= 0xFF
    server.files[name] = bytes(body)
    target = tmp_path / "data"
    with pytest.raises(DataError) as info:
        load_fashion_mnist(target, base_url=url, checksums=md5s, expected_counts=None)
    message = str(info.value)
    assert name in message and md5s[name] in message and "MD5" in message
    assert leftovers(target) == []  # neither the file nor a temporary file (it was the first one fetched)


def test_truncated_download_is_rejected_and_nothing_stays_behind(mirror, tmp_path):
    url, server, md5s = mirror
    name = FILES["train-labels"]
    server.mode[name] = "truncate"
    target = tmp_path / "data"
    with pytest.raises(DataError, match="cut off") as info:
        load_fashion_mnist(target, base_url=url, checksums=md5s, expected_counts=None)
    assert name in str(info.value)
    assert leftovers(target) == [FILES["train-images"]]  # fetched before it; no temporary file stays behind


def test_official_md5s_apply_to_downloads(mirror, tmp_path):
    """Without test checksums, the official MD5s are enforced, so these tiny files are refused."""
    url, _, _ = mirror
    with pytest.raises(DataError, match="8d4fb7e6c68d591d4c3dfef9ec88bf0d"):
        load_fashion_mnist(tmp_path / "data", base_url=url, expected_counts=None)


def test_http_404_names_the_url(mirror, tmp_path):
    url, server, md5s = mirror
    del server.files[FILES["test-images"]]
    with pytest.raises(DataError, match=r"HTTP 404") as info:
        load_fashion_mnist(tmp_path / "data", base_url=url, checksums=md5s, expected_counts=None)
    assert url + FILES["test-images"] in str(info.value)


def test_no_network_names_the_folder_to_fill_by_hand(tmp_path):
    with socket.socket() as sock:  # a port on 127.0.0.1 with nothing listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    target = tmp_path / "data"
    with pytest.raises(DataError) as info:
        download_file(f"http://127.0.0.1:{port}/x.gz", target / "x.gz", md5=None)
    message = str(info.value)
    assert "Could not download" in message and str(target) in message and "by hand" in message
    assert leftovers(target) == []


def test_download_then_load_equals_loading_the_source(mirror, tmp_path):
    url, _, md5s = mirror
    downloaded = load_fashion_mnist(tmp_path / "data", base_url=url, checksums=md5s, expected_counts=None)
    direct = load_fashion_mnist(tmp_path / "mirror", download=False, expected_counts=None)
    np.testing.assert_array_equal(downloaded.images, direct.images)
    assert downloaded.fingerprint == direct.fingerprint
