"""The suite's own per-user directories, set before any test runs.

thinpatch keeps per-user files where the environment says: its registry of captured
workspaces in ``$THINPATCH_STATE_DIR``, else ``$XDG_STATE_HOME/thinpatch`` (else
``~/.local/state/thinpatch``); its socket at ``$THINPATCH_SOCKET``, else in
``$XDG_RUNTIME_DIR/thinpatch/``; service files under ``$XDG_CONFIG_HOME``. At the start of
the pytest session the suite points every XDG base directory at a temporary directory of its
own and drops thinpatch's own location variables, in ``os.environ``, so the captures, daemons
and commands the tests start (all of which inherit it) never touch the user's real files.

HOME stays as it is: cargo and rustup find the toolchain through it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

# Each XDG base directory -> its directory under the suite's root. The runtime directory is
# 0700 like a real one: clients refuse a socket in a directory others could write.
XDG_DIRS = {
    "XDG_STATE_HOME": "state",
    "XDG_RUNTIME_DIR": "runtime",
    "XDG_CACHE_HOME": "cache",
    "XDG_CONFIG_HOME": "config",
    "XDG_DATA_HOME": "data",
}
# Set by a user to move thinpatch's files; without them thinpatch uses the XDG directories.
THINPATCH_LOCATIONS = ("THINPATCH_STATE_DIR", "THINPATCH_SOCKET")

_original: dict[str, str] | None = None
_root: Path | None = None


def isolate() -> Path:
    """Point the XDG directories at a new private temporary directory; returns it."""
    global _original, _root
    if _root is not None:
        return _root
    _original = dict(os.environ)
    root = Path(tempfile.mkdtemp(prefix="thinpatch-tests-"))  # 0700
    for var, name in XDG_DIRS.items():
        path = root / name
        path.mkdir(mode=0o700)
        os.chmod(path, 0o700)  # whatever the umask
        os.environ[var] = str(path)
    for var in THINPATCH_LOCATIONS:
        os.environ.pop(var, None)
    _root = root
    return root


def restore() -> None:
    """Put the environment back as it was and remove the suite's directories."""
    global _original, _root
    if _root is None:
        return
    for var in (*XDG_DIRS, *THINPATCH_LOCATIONS):
        if var in _original:
            os.environ[var] = _original[var]
        else:
            os.environ.pop(var, None)
    shutil.rmtree(_root, ignore_errors=True)
    _original = _root = None


def suite_root() -> Path:
    assert _root is not None, "the suite's directories are set in tests/conftest.py's pytest_configure"
    return _root


def original_environ() -> dict[str, str]:
    """The environment pytest started with, before the suite set its own directories."""
    assert _original is not None, "the suite's directories are set in tests/conftest.py's pytest_configure"
    return dict(_original)
