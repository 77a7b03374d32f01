"""Find captured workspaces: through the per-user registry, or by looking under a directory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from capture.store import CAPTURE_DIRNAME, captures_dir, iter_registered_workspaces


@dataclass(frozen=True)
class CapturedWorkspace:
    workspace: Path
    capture_root: Path


class NoCapture(LookupError):
    pass


def registered_workspaces(env: dict[str, str] | None = None) -> list[CapturedWorkspace]:
    """Workspaces `thinpatch capture` has registered whose captures still exist."""
    found = []
    for entry in iter_registered_workspaces(env):
        ws, root = Path(entry["workspace"]), Path(entry["capture_root"])
        if captures_dir(root).is_dir():
            found.append(CapturedWorkspace(ws, root))
    return found


def find_captured_workspace(directory: str | Path | None = None, env: dict[str, str] | None = None) -> CapturedWorkspace:
    """The captured workspace that contains ``directory`` (default: the current directory)."""
    start = Path(directory or os.getcwd()).resolve()
    candidates = sorted(registered_workspaces(env), key=lambda c: len(str(c.workspace)), reverse=True)
    for cand in candidates:
        if start == cand.workspace or cand.workspace in start.parents:
            return cand
    for d in (start, *start.parents):
        root = d / "target" / CAPTURE_DIRNAME
        if captures_dir(root).is_dir():
            return CapturedWorkspace(d, root)
    raise NoCapture(
        f"no capture found for {start}. Run `thinpatch capture` in the workspace first "
        "(it builds the program once and records how)."
    )
