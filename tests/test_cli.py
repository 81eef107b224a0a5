"""``python -m latent``: real subprocesses, clear errors without tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from latent import paths
from latent.catalog import cache_file_for, catalog_key, file_sha256
from latent.cli import build_parser, resolve_settings
from latent.config import ConfigError, Settings
from latent.data import FILES
from tests.http_mirror import tiny_mirror

ROOT = paths.REPO_ROOT


@pytest.fixture
def mirror(tmp_path):
    with tiny_mirror(tmp_path) as served:
        yield served


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


# --------------------------------------------------------------------------- settings: flags > environment > defaults


def test_download_takes_the_mirror_from_latent_data_url(mirror, tmp_path):
    """The README documents LATENT_DATA_URL for every download, the command line's included."""
    url, server, _ = mirror
    target = tmp_path / "fm"
    result = run_cli("download", "--data-dir", str(target), env={"LATENT_DATA_URL": url}, timeout=120)
    # The mirror's tiny files are not the official downloads, so the official MD5 check refuses the first one.
    assert server.requests == [FILES["train-images"]]
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert url + FILES["train-images"] in result.stderr and "MD5" in result.stderr
    assert not target.exists() or not any(target.iterdir())


def test_the_data_url_flag_overrides_the_environment(mirror, tmp_path):
    url, server, _ = mirror
    result = run_cli("download", "--data-dir", str(tmp_path / "fm"), "--data-url", url,
                     env={"LATENT_DATA_URL": "http://127.0.0.1:9/unused/"}, timeout=120)
    assert server.requests == [FILES["train-images"]] and url in result.stderr and "127.0.0.1:9/" not in result.stderr


def test_a_bad_setting_is_one_clear_line(tmp_path):
    result = run_cli("download", "--data-dir", str(tmp_path), env={"LATENT_DATA_URL": "ftp://mirror/"}, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "LATENT_DATA_URL='ftp://mirror/' is not an http or https address" in result.stderr
    flag = run_cli("download", "--data-dir", "", timeout=60)
    assert flag.returncode == 2 and "--data-dir is set but empty" in flag.stderr


@pytest.mark.parametrize(("argv", "env", "expected"), [
    (["encode"], {}, {"checkpoint": paths.DEFAULT_CHECKPOINT}),
    (["encode"], {"LATENT_CHECKPOINT": "/m/env.pt"}, {"checkpoint": Path("/m/env.pt")}),
    (["encode", "--checkpoint", "/m/flag.pt"], {"LATENT_CHECKPOINT": "/m/env.pt"}, {"checkpoint": Path("/m/flag.pt")}),
    (["train"], {"LATENT_CHECKPOINT": "/m/env.pt"}, {"checkpoint": Path("/m/env.pt")}),
    (["train", "--out", "/m/new.pt"], {"LATENT_CHECKPOINT": "/m/env.pt"}, {"checkpoint": Path("/m/new.pt")}),
    (["download"], {"LATENT_DATA_DIR": "/d/env"}, {"data_dir": Path("/d/env")}),
    (["download", "--data-dir", "/d/flag"], {"LATENT_DATA_DIR": "/d/env"}, {"data_dir": Path("/d/flag")}),
    (["map"], {"LATENT_DATA_URL": "https://env.example/"}, {"data_url": "https://env.example/"}),
    (["map", "--data-url", "https://flag.example/"], {"LATENT_DATA_URL": "https://env.example/"},
     {"data_url": "https://flag.example/"}),
    (["evaluate"], {"LATENT_CACHE_DIR": "/c"}, {"cache_dir": Path("/c")}),
])
def test_flags_override_the_environment_which_overrides_the_defaults(argv, env, expected):
    settings = resolve_settings(build_parser().parse_args(argv), env)
    for field, value in expected.items():
        assert getattr(settings, field) == value
    assert resolve_settings(build_parser().parse_args(argv), {}).cache_dir == Settings.from_env({}).cache_dir


def test_a_bad_flag_names_the_flag():
    with pytest.raises(ConfigError, match="--data-url='file:///x' is not an http or https address"):
        resolve_settings(build_parser().parse_args(["download", "--data-url", "file:///x"]), {})
    with pytest.raises(ConfigError, match="--out is set but empty"):
        resolve_settings(build_parser().parse_args(["train", "--out", ""]), {})


def test_the_history_defaults_to_beside_the_checkpoint():
    assert paths.history_path(Path("/m/run.pt")) == Path("/m/run-history.json")
    assert paths.DEFAULT_HISTORY == paths.MODELS_DIR / "vae-history.json"
