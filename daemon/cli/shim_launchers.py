"""Fast-starting launchers for the capture shims, which cargo runs once per compile.

A console script starts Python with ``site``, and ``site`` runs every ``.pth`` file of the
environment. An editable install's import hook alone costs each shim call about 20 ms before
any of our code runs, and a held build pays it while a patch builds beside it. The shims need
only the standard library and the ``capture`` package, so a launcher starts Python isolated and
without ``site`` (``-IS``) and puts that package's directory on ``sys.path`` itself.

Launchers are written to a private directory of the state dir, one per Python and install
(they name both), never through a link, and rewritten only when their text changed. Where none
can be made (a path a ``#!`` line can't hold, a directory that isn't ours), the console
scripts serve as before.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from capture import store
from capture.private_fs import open_file, write_atomic

# Each shim's console script, as pyproject.toml declares it (tests check they agree).
SHIM_ENTRY_POINTS = {
    "thinpatch-rustc": "capture.rustc_shim",
    "thinpatch-linker": "capture.linker_shim",
}
LAUNCHERS_DIRNAME = "launchers"
# Older Linux kernels read 127 bytes of a `#!` line; past that the interpreter's path is cut.
MAX_SHEBANG = 127


def launcher_text(python: str, import_root: str, module: str) -> str | None:
    """The launcher of ``module``'s ``main``, or None when ``python`` can't be named in a
    ``#!`` line (relative, holding whitespace, or too long)."""
    shebang = f"#!{python} -IS"
    if not os.path.isabs(python) or any(c.isspace() for c in python) or len(shebang) > MAX_SHEBANG:
        return None
    return (
        f"{shebang}\n"
        "# thinpatch's capture shim, started without site (see daemon/cli/shim_launchers.py).\n"
        "import sys\n"
        f"sys.path.insert(0, {import_root!r})\n"
        f"from {module} import main\n"
        "sys.exit(main())\n"
    )


def launchers_dir(python: str, import_root: str, env: Mapping[str, str] | None = None) -> Path:
    """One directory per Python and install: two installs never rewrite each other's launchers."""
    digest = hashlib.sha256(f"{python}\0{import_root}".encode()).hexdigest()[:16]
    return store.state_dir(env) / LAUNCHERS_DIRNAME / digest


def capture_import_root() -> str:
    """The directory holding the ``capture`` package this process runs."""
    import capture

    return str(Path(capture.__file__).resolve().parent.parent)


def _current_text(path: Path, within: Path) -> bytes | None:
    try:
        fd = open_file(path, os.O_RDONLY, within)
    except OSError:
        return None
    try:
        if os.fstat(fd).st_mode & 0o777 != 0o700:
            return None
        return os.read(fd, 1 << 16)
    finally:
        os.close(fd)


def ensure_launchers(env: Mapping[str, str] | None = None) -> Path | None:
    """The directory of up-to-date launchers for every shim, or None when they can't be made."""
    python, import_root = sys.executable, capture_import_root()
    directory = launchers_dir(python, import_root, env)
    within = store.state_dir(env).parent
    try:
        for name, module in SHIM_ENTRY_POINTS.items():
            text = launcher_text(python, import_root, module)
            if text is None:
                return None
            path = directory / name
            if _current_text(path, within) != text.encode():
                write_atomic(path, text.encode(), within, mode=0o700)
    except OSError:
        return None
    return directory


def shim_launcher(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """The absolute path of shim ``name``'s launcher (cargo runs it from other directories),
    or None to use its console script."""
    directory = ensure_launchers(env)
    return os.path.abspath(directory / name) if directory is not None else None
