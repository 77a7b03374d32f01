"""Copy a fixture workspace somewhere else and keep it building.

A fixture may depend on a crate of this repository by a relative path (the livehost fixture
uses the bundled thinpatch-client crate). Copied elsewhere, such a path would point at
nothing, so the copy's manifests get the absolute path instead.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

_PATH_DEPENDENCY = re.compile(r'(\bpath\s*=\s*")([^"]+)(")')


def copy_fixture_tree(source: Path, destination: Path) -> Path:
    """Copy ``source`` (without ``target/``) to ``destination``; return ``destination``."""
    source = source.resolve()
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns("target"))
    for manifest in destination.rglob("Cargo.toml"):
        original_dir = source / manifest.parent.relative_to(destination)
        text = manifest.read_text()

        def absolute(match: re.Match[str], original_dir: Path = original_dir) -> str:
            target = (original_dir / match.group(2)).resolve()
            if target == source or source in target.parents:
                return match.group(0)  # inside the fixture: copied along, the relative path holds
            return f"{match.group(1)}{os.fspath(target)}{match.group(3)}"

        rewritten = _PATH_DEPENDENCY.sub(absolute, text)
        if rewritten != text:
            manifest.write_text(rewritten)
    return destination
