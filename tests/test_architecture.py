"""The shape of the house: the library never imports streamlit, its modules import each other without
cycles, and pages stay composition (short files)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from latent import paths

LATENT = paths.REPO_ROOT / "latent"


def module_name(file: Path) -> str:
    parts = file.relative_to(paths.REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(file: Path, modules: set[str] | None = None) -> set[str]:
    """The modules that ``file`` imports anywhere (top level or inside functions), resolved. For
    ``from package import name`` this is ``package.name`` when that is one of ``modules`` (a submodule),
    else ``package``."""
    package = module_name(file) if file.name == "__init__.py" else module_name(file).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if modules is not None and sub in modules else base)
    return found


def latent_graph() -> dict[str, set[str]]:
    files = {module_name(f): f for f in LATENT.rglob("*.py")}
    names = set(files)
    return {name: {m for m in imports_of(file, names) if m in names and m != name} for name, file in files.items()}


def test_the_library_never_imports_streamlit():
    offenders = [module_name(f) for f in LATENT.rglob("*.py") if any(
        m == "streamlit" or m.startswith("streamlit.") for m in imports_of(f))]
    assert offenders == []


def test_latent_has_no_import_cycle():
    graph = latent_graph()
    assert "latent.search._index" in graph and "latent.scores" in graph  # the walk saw the package
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt):], nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])


def test_a_cycle_is_detected(monkeypatch):
    """The cycle check itself can fail: a two-module cycle is reported."""
    fake = {"latent.a": {"latent.b"}, "latent.b": {"latent.a"}, "latent.search._index": set(), "latent.scores": set()}
    monkeypatch.setitem(globals(), "latent_graph", lambda: fake)
    with pytest.raises(AssertionError, match=r"import cycle: latent\.a -> latent\.b -> latent\.a"):
        test_latent_has_no_import_cycle()


def test_pages_are_short_compositions():
    long_pages = {f.name: n for f in (paths.REPO_ROOT / "pages").glob("*.py")
                  if (n := len(f.read_text(encoding="utf-8").splitlines())) > 200}
    assert long_pages == {}, "pages compose library calls and widgets; move figures to ui/figures/, numerics to latent/"
