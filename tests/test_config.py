"""latent.config: one Settings, read from the environment in one place, with clear errors."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from latent import paths
from latent.config import OFFICIAL_MIRROR, VARIABLES, ConfigError, Settings, variable_for

ROOT = paths.REPO_ROOT


def test_defaults_without_any_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    s = Settings.from_env({})
    assert s.data_dir == tmp_path / ".cache" / "latent-explorer" / "fashion-mnist"
    assert s.cache_dir == tmp_path / ".cache" / "latent-explorer"
    assert s.data_url == OFFICIAL_MIRROR == "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
    assert s.checkpoint == ROOT / "models" / "vae.pt"
    assert (s.torch_threads, s.port, s.address, s.log_timing) == (1, 8501, "localhost", False)


def test_xdg_cache_home_moves_both_default_folders(tmp_path):
    s = Settings.from_env({"XDG_CACHE_HOME": str(tmp_path / "xdg")})
    assert s.data_dir == tmp_path / "xdg" / "latent-explorer" / "fashion-mnist"
    assert s.cache_dir == tmp_path / "xdg" / "latent-explorer"


@pytest.mark.parametrize(("variable", "raw", "field", "expected"), [
    ("LATENT_DATA_DIR", "/data/fm", "data_dir", Path("/data/fm")),
    ("LATENT_DATA_DIR", "~/fm", "data_dir", Path.home() / "fm"),
    ("LATENT_CACHE_DIR", "/tmp/c", "cache_dir", Path("/tmp/c")),
    ("LATENT_DATA_URL", "https://mirror.example/fm/", "data_url", "https://mirror.example/fm/"),
    ("LATENT_DATA_URL", "http://127.0.0.1:8000", "data_url", "http://127.0.0.1:8000"),
    ("LATENT_CHECKPOINT", "runs/other.pt", "checkpoint", Path("runs/other.pt")),
    ("LATENT_TORCH_THREADS", "4", "torch_threads", 4),
    ("LATENT_TORCH_THREADS", " 2 ", "torch_threads", 2),
    ("LATENT_PORT", "8600", "port", 8600),
    ("LATENT_ADDRESS", "0.0.0.0", "address", "0.0.0.0"),
    ("LATENT_LOG_TIMING", "1", "log_timing", True),
    ("LATENT_LOG_TIMING", "0", "log_timing", False),
])
def test_each_variable_sets_its_field_and_nothing_else(variable, raw, field, expected):
    defaults = Settings.from_env({})
    s = Settings.from_env({variable: raw})
    assert getattr(s, field) == expected
    assert variable_for(field) == variable
    assert dataclasses.replace(s, **{field: getattr(defaults, field)}) == defaults


@pytest.mark.parametrize(("variable", "raw", "allowed"), [
    ("LATENT_DATA_DIR", "", "give a path"),
    ("LATENT_DATA_DIR", "   ", "give a path"),
    ("LATENT_CACHE_DIR", "", "give a path"),
    ("LATENT_CHECKPOINT", "", "give a path"),
    ("LATENT_DATA_URL", "file:///etc/", "not an http or https address"),
    ("LATENT_DATA_URL", "fashion-mnist.example/", "not an http or https address"),
    ("LATENT_DATA_URL", "https://", "not an http or https address"),
    ("LATENT_DATA_URL", "", "not an http or https address"),
    ("LATENT_TORCH_THREADS", "two", "a whole number of at least 1"),
    ("LATENT_TORCH_THREADS", "1.5", "a whole number of at least 1"),
    ("LATENT_TORCH_THREADS", "0", "a whole number of at least 1"),
    ("LATENT_TORCH_THREADS", "-3", "a whole number of at least 1"),
    ("LATENT_PORT", "http", "a whole number from 1 to 65535"),
    ("LATENT_PORT", "70000", "a whole number from 1 to 65535"),
    ("LATENT_PORT", "0", "a whole number from 1 to 65535"),
    ("LATENT_ADDRESS", "", "host name or IP"),
    ("LATENT_ADDRESS", "local host", "host name or IP"),
    ("LATENT_LOG_TIMING", "yes", "use 1 (on) or 0 (off)"),
    ("LATENT_LOG_TIMING", "", "use 1 (on) or 0 (off)"),
])
def test_a_bad_value_names_the_variable_the_value_and_what_is_allowed(variable, raw, allowed):
    with pytest.raises(ConfigError) as info:
        Settings.from_env({variable: raw})
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert variable in message and allowed in message
    if raw.strip():
        assert repr(raw) in message


def test_from_env_reads_os_environ_by_default(monkeypatch, tmp_path):
    monkeypatch.setenv("LATENT_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("LATENT_TORCH_THREADS", "3")
    s = Settings.from_env()
    assert (s.cache_dir, s.torch_threads) == (tmp_path, 3)


def test_settings_are_frozen():
    s = Settings.from_env({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.port = 1  # type: ignore[misc]


def test_every_field_has_one_variable_and_every_variable_one_field():
    fields = [f.name for f in dataclasses.fields(Settings)]
    assert [variable_for(f) for f in fields] == list(VARIABLES)
    with pytest.raises(KeyError, match="unknown setting 'colour'"):
        variable_for("colour")


def _sources() -> list[Path]:
    files = [ROOT / "app.py", *ROOT.glob("latent/**/*.py"), *ROOT.glob("ui/**/*.py"), *ROOT.glob("pages/**/*.py")]
    return [f for f in files if f.is_file()]


def test_every_latent_variable_the_project_mentions_is_a_setting():
    mentioned: set[str] = set()
    for path in [*_sources(), *ROOT.glob("scripts/*.sh"), ROOT / "README.md"]:
        mentioned |= set(re.findall(r"\bLATENT_[A-Z_]+[A-Z]\b", path.read_text()))
    assert mentioned, "the scan found no LATENT_ variable at all"
    assert mentioned <= set(VARIABLES), f"not read by latent.config: {sorted(mentioned - set(VARIABLES))}"


def test_the_readme_table_documents_the_user_settings():
    readme = (ROOT / "README.md").read_text()
    table = set(re.findall(r"^\| `(LATENT_[A-Z_]+)` \|", readme, flags=re.M))
    assert table <= set(VARIABLES)
    assert set(VARIABLES) - {"LATENT_LOG_TIMING"} <= table  # LATENT_LOG_TIMING serves bench/bench_app.py only


def test_no_other_module_reads_a_latent_variable_from_the_environment():
    readers = [f"{p.relative_to(ROOT)}: {line.strip()}" for p in _sources() if p != ROOT / "latent" / "config.py"
               for line in p.read_text().splitlines() if re.search(r"(os\.environ|getenv\().*LATENT_", line)]
    assert readers == [], "read settings with latent.config.Settings.from_env()"


def run_config(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", **env}
    return subprocess.run([sys.executable, "-m", "latent.config", *args], cwd=ROOT, env=clean,
                          capture_output=True, text=True, timeout=60)


def test_python_m_latent_config_prints_the_settings_and_single_fields():
    result = run_config(env={"LATENT_PORT": "8600", "LATENT_LOG_TIMING": "1"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split("=", 1)[0] for line in lines] == list(VARIABLES)
    assert "LATENT_PORT=8600" in lines and "LATENT_LOG_TIMING=1" in lines and "LATENT_ADDRESS=localhost" in lines
    fields = run_config("port", "address", env={"LATENT_ADDRESS": "0.0.0.0"})
    assert fields.stdout.splitlines() == ["8501", "0.0.0.0"]


def test_python_m_latent_config_reports_a_bad_value_without_a_traceback():
    result = run_config("port", env={"LATENT_PORT": "eighty"})
    assert result.returncode == 2 and result.stdout == ""
    assert "Traceback" not in result.stderr and "LATENT_PORT='eighty'" in result.stderr
    unknown = run_config("colour", env={})
    assert unknown.returncode == 2 and "unknown setting 'colour'" in unknown.stderr
