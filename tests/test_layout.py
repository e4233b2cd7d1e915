"""The package's layout is its architecture: parts import only the parts beneath them."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import prefect_omnihuman

PACKAGE = Path(prefect_omnihuman.__file__).parent

#: Each part's rank: a module may import its own part and parts of a lower or equal rank.
RANKS = {
    "errors": 0,
    "api": 1,
    "results": 2,
    "storage": 3,
    "media": 4,
    "emulator": 4,
    "workflows": 5,
    "batch": 6,
    "demo": 7,
    "cli": 8,
    "ledger_cli": 8,
    "cli_server": 8,
    "kept_server": 8,
    "kept_server_app": 8,
    "__init__": 9,
}
#: Parts that run without Prefect installed in the process's import graph.
PREFECT_FREE = {"errors", "api", "results", "media"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__") or "__init__"


def _imports(path: Path) -> set[str]:
    """Every module this file imports, at any depth of its code (TYPE_CHECKING included)."""
    package = ["prefect_omnihuman", *path.relative_to(PACKAGE).parent.parts]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        own = set()
        for imported in _imports(path):
            if imported == "prefect_omnihuman":
                own.add("__init__")
            elif imported.startswith("prefect_omnihuman."):
                target = imported.removeprefix("prefect_omnihuman.")
                if target in modules and target != name:
                    own.add(target)
        graph[name] = own
    return graph


def test_top_level_is_thin_and_parts_say_what_they_are_for() -> None:
    top_modules = [p for p in PACKAGE.glob("*.py")]
    assert len(top_modules) <= 12, sorted(p.name for p in top_modules)
    subpackages = [p for p in PACKAGE.iterdir() if (p / "__init__.py").exists()]
    assert len(subpackages) >= 4
    for sub in subpackages:
        docstring = ast.get_docstring(ast.parse((sub / "__init__.py").read_text()))
        assert (docstring and "May import" in docstring) or sub.name == "emulator", sub.name


def test_no_import_runs_back_up_a_layer() -> None:
    wrong = []
    for module, targets in _graph().items():
        rank = RANKS[module.split(".")[0]]
        for target in targets:
            if RANKS[target.split(".")[0]] > rank:
                wrong.append(f"{module} imports {target}")
    assert not wrong, wrong


def test_no_import_circle() -> None:
    graph = _graph()
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> None:
        if node in path:
            raise AssertionError(" -> ".join([*path[path.index(node) :], node]))
        if node in done:
            return
        path.append(node)
        for target in sorted(graph[node]):
            visit(target)
        path.pop()
        done.add(node)

    for node in sorted(graph):
        visit(node)


def test_client_and_media_do_not_import_prefect() -> None:
    offenders = [
        f"{_module_name(path)}: {name}"
        for path in PACKAGE.rglob("*.py")
        if _module_name(path).split(".")[0] in PREFECT_FREE
        for name in _imports(path)
        if name == "prefect" or name.startswith("prefect.")
    ]
    assert not offenders, offenders


def test_every_public_name_is_served_from_the_top() -> None:
    for name in prefect_omnihuman.__all__:
        assert getattr(prefect_omnihuman, name) is not None


def test_the_command_and_the_ledger_load_without_prefect() -> None:
    """The package's public names load on first use, so importing it and the command's
    modules (what `omnihuman ... --help` does) does not import Prefect."""
    script = (
        "import sys, prefect_omnihuman, prefect_omnihuman.cli, prefect_omnihuman.ledger_cli\n"
        "assert 'prefect' not in sys.modules, sorted(m for m in sys.modules if 'prefect.' in m)\n"
        "assert prefect_omnihuman.omnihuman_video.name == 'omnihuman-video'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
