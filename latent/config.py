"""The project's settings: every ``LATENT_*`` environment variable, read and checked in one place.

:meth:`Settings.from_env` is the only code that reads them; the command line (:mod:`latent.cli`),
the app (``ui/``) and ``scripts/app.sh`` (through ``python -m latent.config port address``) all take
their values from it. Command-line flags override the environment, which overrides the defaults.

An unset variable takes its default. A variable that is set must hold a valid value: an empty
value, a thread count that is not a whole number, a mirror that is not an http(s) address, ...
raise :class:`ConfigError`, which names the variable, the value and what is allowed.

Run ``python -m latent.config`` to print the settings in effect.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from urllib.parse import urlparse

from . import paths

#: Zalando Research's public mirror of the official Fashion-MNIST files.
OFFICIAL_MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
#: The folder under the user's cache root (``$XDG_CACHE_HOME``, else ``~/.cache``) that holds the defaults.
CACHE_FOLDER_NAME = "latent-explorer"


class ConfigError(ValueError):
    """A setting holds a value that is not allowed; the message names it, the value and what to do."""


@dataclass(frozen=True)
class Settings:
    """The settings in effect; build it with :meth:`from_env` (field = variable: default).

    Attributes:
        data_dir: ``LATENT_DATA_DIR``: the folder with the four Fashion-MNIST ``.gz`` files (missing
            ones are downloaded there). Default ``$XDG_CACHE_HOME/latent-explorer/fashion-mnist``,
            i.e. ``~/.cache/latent-explorer/fashion-mnist``.
        cache_dir: ``LATENT_CACHE_DIR``: derived artefacts (decoded dataset, numpy decoder, catalogs
            and maps of other checkpoints, geodesic graphs, magnification). Default
            ``$XDG_CACHE_HOME/latent-explorer``, i.e. ``~/.cache/latent-explorer``.
        data_url: ``LATENT_DATA_URL``: the http(s) mirror that missing files are downloaded from
            (verified against the official MD5s). Default :data:`OFFICIAL_MIRROR`.
        checkpoint: ``LATENT_CHECKPOINT``: the VAE checkpoint to explore, encode or evaluate.
            Default the shipped ``models/vae.pt``.
        torch_threads: ``LATENT_TORCH_THREADS``: torch's thread count in the server process, a whole
            number >= 1. Default 1 (each interaction is a tiny batch; more threads only contend).
        port: ``LATENT_PORT``: the dashboard's port (``scripts/app.sh``), 1..65535. Default 8501.
        address: ``LATENT_ADDRESS``: the address the dashboard listens on (``scripts/app.sh``).
            Default ``localhost``.
        log_timing: ``LATENT_LOG_TIMING``: ``1`` logs each page run's wall time to stderr (read by
            ``bench/bench_app.py``), ``0`` does not. Default 0.
    """

    data_dir: Path
    cache_dir: Path
    data_url: str = OFFICIAL_MIRROR
    checkpoint: Path = paths.DEFAULT_CHECKPOINT
    torch_threads: int = 1
    port: int = 8501
    address: str = "localhost"
    log_timing: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every ``LATENT_*`` variable (and ``XDG_CACHE_HOME``) from ``environ`` (default ``os.environ``).

        Raises:
            ConfigError: a variable is set to a value that is not allowed.
        """
        env = os.environ if environ is None else environ
        root = Path(env.get("XDG_CACHE_HOME") or Path("~", ".cache")).expanduser() / CACHE_FOLDER_NAME
        values: dict[str, object] = {"data_dir": root / "fashion-mnist", "cache_dir": root}
        for name, (field_name, parse) in _VARIABLES.items():
            raw = env.get(name)
            if raw is not None:
                values[field_name] = parse(raw, name)
        return cls(**values)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- value checks
# Each takes the raw text and where it came from (a variable or a command-line flag), for the message.


def _unset_hint(source: str) -> str:
    return f"unset {source} to use the default" if source.startswith("LATENT_") else "leave it out to use the default"


def parse_path(raw: str, source: str) -> Path:
    """A non-empty path, with ``~`` expanded."""
    if not raw.strip():
        raise ConfigError(f"{source} is set but empty; give a path, or {_unset_hint(source)}.")
    return Path(raw).expanduser()


def parse_url(raw: str, source: str) -> str:
    """An ``http://`` or ``https://`` address with a host (the mirror to download from)."""
    parsed = urlparse(raw.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(f"{source}={raw!r} is not an http or https address; give one such as "
                          f"https://example.org/fashion-mnist/, or {_unset_hint(source)} ({OFFICIAL_MIRROR}).")
    return raw.strip()


def _parse_int(raw: str, source: str, low: int, high: int | None, what: str) -> int:
    allowed = f"a whole number from {low} to {high}" if high is not None else f"a whole number of at least {low}"
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{source}={raw!r} is not a whole number; {what} must be {allowed}.") from None
    if value < low or (high is not None and value > high):
        raise ConfigError(f"{source}={raw!r} is out of range; {what} must be {allowed}.")
    return value


def parse_threads(raw: str, source: str) -> int:
    """A thread count >= 1."""
    return _parse_int(raw, source, 1, None, "the torch thread count")


def parse_port(raw: str, source: str) -> int:
    """A TCP port, 1..65535."""
    return _parse_int(raw, source, 1, 65535, "the port")


def parse_address(raw: str, source: str) -> str:
    """A host name or IP address: non-empty, without spaces."""
    if not raw.strip() or any(c.isspace() for c in raw.strip()):
        raise ConfigError(f"{source}={raw!r} is not an address; give a host name or IP such as localhost or "
                          f"0.0.0.0, or {_unset_hint(source)}.")
    return raw.strip()


def parse_flag(raw: str, source: str) -> bool:
    """``1`` (on) or ``0`` (off)."""
    if raw.strip() not in ("0", "1"):
        raise ConfigError(f"{source}={raw!r} is not allowed; use 1 (on) or 0 (off).")
    return raw.strip() == "1"


#: Environment variable -> (Settings field, parser). Every ``LATENT_*`` variable the project reads.
_VARIABLES = {
    "LATENT_DATA_DIR": ("data_dir", parse_path),
    "LATENT_CACHE_DIR": ("cache_dir", parse_path),
    "LATENT_DATA_URL": ("data_url", parse_url),
    "LATENT_CHECKPOINT": ("checkpoint", parse_path),
    "LATENT_TORCH_THREADS": ("torch_threads", parse_threads),
    "LATENT_PORT": ("port", parse_port),
    "LATENT_ADDRESS": ("address", parse_address),
    "LATENT_LOG_TIMING": ("log_timing", parse_flag),
}
#: The variables' names, in the order of :class:`Settings`' fields.
VARIABLES: tuple[str, ...] = tuple(_VARIABLES)


def variable_for(field_name: str) -> str:
    """The environment variable of a :class:`Settings` field, e.g. ``"port"`` -> ``"LATENT_PORT"``."""
    for name, (candidate, _) in _VARIABLES.items():
        if candidate == field_name:
            return name
    raise KeyError(f"unknown setting {field_name!r}; choose one of: {', '.join(f for f, _ in _VARIABLES.values())}")


def _show(value: object) -> str:
    """A value as the environment variable would spell it (flags as 1 or 0)."""
    return str(int(value)) if isinstance(value, bool) else str(value)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m latent.config [FIELD ...]``: print every setting as ``VARIABLE=value``, or the named
    fields' values one per line (``scripts/app.sh`` reads ``port address`` this way). Exit status 2 on a
    bad value, with the reason on stderr."""
    names = list(sys.argv[1:] if argv is None else argv)
    known = [f.name for f in fields(Settings)]
    unknown = [n for n in names if n not in known]
    if unknown:
        print(f"error: unknown setting {unknown[0]!r}; choose from: {', '.join(known)}", file=sys.stderr)
        return 2
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if names:
        for name in names:
            print(_show(getattr(settings, name)))
    else:
        for name in known:
            print(f"{variable_for(name)}={_show(getattr(settings, name))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
