"""The daemon's rooms and the direction of imports between them.

The pipeline runs capture → build / binary → analysis → service → cli, with ``socket`` beside it:
  - ``capture`` is stdlib-only and knows nothing of the daemon;
  - ``build`` and ``binary`` use only ``capture``'s records (and the standard library);
  - ``analysis`` reads objects with ``binary`` and finds them through ``capture``'s records;
  - ``socket`` knows nothing of builds; anyone may use ``socket.protocol``'s types;
    it shares ``capture.trust`` (who may have written a path) with every other reader;
  - ``service`` uses build, binary, analysis and socket.protocol;
  - ``cli`` may use everything.
"""

from __future__ import annotations

import ast
import fnmatch
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROOMS = ("build", "binary", "analysis", "service", "socket", "cli")

# What each room may import from the project, as dotted prefixes. Its own room is always allowed.
ALLOWED: dict[str, tuple[str, ...]] = {
    "capture": (),
    "daemon.build": ("capture",),
    "daemon.binary": ("capture",),
    "daemon.analysis": ("capture", "daemon.binary"),
    "daemon.socket": ("daemon.__version__", "capture.trust"),
    "daemon.service": ("capture", "daemon.build", "daemon.binary", "daemon.analysis", "daemon.socket.protocol"),
    "daemon.cli": ("capture", "daemon"),
    "daemon.__main__": ("daemon.cli",),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def room_of(module: str) -> str:
    for room in sorted(ALLOWED, key=len, reverse=True):
        if module == room or module.startswith(room + "."):
            return room
    if module == "daemon":
        return "daemon"
    raise AssertionError(f"{module} is in no room: put it in one of daemon/{{{','.join(ROOMS)}}}/")


def imported_names(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """Every project-level name a module imports, anywhere in it (also inside functions)."""
    names: list[tuple[int, str]] = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return sorted((line, n) for line, n in names if n.split(".")[0] in ("daemon", "capture"))


def violations(module: str, names: list[tuple[int, str]]) -> list[str]:
    room = room_of(module)
    if room == "daemon":
        return []
    allowed = (room,) + ALLOWED[room]
    bad = []
    for line, name in names:
        # `from daemon.build import rebuild` names daemon.build.rebuild; `from daemon import x` names daemon.x.
        if not any(name == p or name.startswith(p + ".") for p in allowed):
            bad.append(f"{module}:{line} imports {name}, against the pipeline ({room} may use {', '.join(allowed)})")
    return bad


def project_modules() -> list[Path]:
    return sorted(p for top in ("capture", "daemon") for p in (ROOT / top).rglob("*.py"))


def test_every_import_points_down_the_pipeline() -> None:
    problems: list[str] = []
    for path in project_modules():
        module = module_name(path)
        problems += violations(module, imported_names(path.read_text(), module, path.name == "__init__.py"))
    assert not problems, "\n".join(problems)


def test_the_checker_catches_an_upward_import() -> None:
    source = "def f():\n    from daemon.service.engine import Engine\nfrom daemon.socket import server\n"
    found = violations("daemon.build.rebuild", imported_names(source, "daemon.build.rebuild", False))
    assert [p.split(" imports ")[1].split(",")[0] for p in found] == [
        "daemon.service.engine.Engine",
        "daemon.socket.server",
    ]
    relative = imported_names("from ..socket import server\n", "daemon.service.engine", False)
    assert violations("daemon.service.engine", relative) == [
        "daemon.service.engine:1 imports daemon.socket.server, against the pipeline "
        "(daemon.service may use daemon.service, capture, daemon.build, daemon.binary, daemon.analysis, "
        "daemon.socket.protocol)"
    ]
    assert violations("daemon.service.engine", [(1, "daemon.socket.protocol.RequestError")]) == []


def test_daemon_has_only_rooms_at_its_top() -> None:
    loose = [p.name for p in (ROOT / "daemon").glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert not loose, f"modules outside a room: {loose}"


@pytest.mark.parametrize("room", ROOMS)
def test_each_room_says_its_job(room: str) -> None:
    doc = ast.get_docstring(ast.parse((ROOT / "daemon" / room / "__init__.py").read_text()))
    assert doc and doc.startswith(f"{room}: "), f"daemon/{room}/__init__.py needs a docstring saying its one job"


def test_every_test_room_is_collected(request: pytest.FixtureRequest) -> None:
    skipped = request.config.getini("norecursedirs")
    rooms = [p.name for p in (ROOT / "tests").iterdir() if p.is_dir() and any(p.glob("test_*.py"))]
    hidden = [room for room in rooms if any(fnmatch.fnmatch(room, pattern) for pattern in skipped)]
    assert not hidden, f"pytest's norecursedirs hides tests/{hidden}"
