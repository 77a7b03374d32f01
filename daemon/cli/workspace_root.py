"""The cargo workspace root containing a directory, found by asking cargo: after checking
that every file cargo would read there is trusted (cargo reads the configs and manifests
above it before it answers)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from capture.cargo_inputs import untrusted_input


class WorkspaceRefused(Exception):
    """A file cargo would read could be someone else's; the message names it and the fix."""


def workspace_root(directory: Path) -> Path:
    """The workspace root containing ``directory`` (as `cargo locate-project --workspace`), or
    ``directory`` itself when cargo can't tell. Raises WorkspaceRefused before cargo runs."""
    refusal = untrusted_input(str(directory), os.environ)
    if refusal is not None:
        raise WorkspaceRefused(refusal)
    try:
        out = subprocess.run(
            ["cargo", "locate-project", "--workspace", "--message-format", "json"],
            cwd=directory, capture_output=True, text=True, timeout=60,
        )
        if out.returncode == 0:
            return Path(json.loads(out.stdout)["root"]).parent
    except (OSError, ValueError, KeyError, subprocess.SubprocessError):
        pass
    return directory
