"""Find captured workspaces: through the per-user registry, or by looking under a directory.

Only captures nobody else could have written are found (``capture.trust``), and the look-up
never leaves the cargo workspace it starts in: a capture planted in a shared directory
above a project is never used for it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from capture.store import CAPTURE_DIRNAME, captures_dir, iter_registered_workspaces
from capture.trust import untrusted_reason


@dataclass(frozen=True)
class CapturedWorkspace:
    workspace: Path
    capture_root: Path


class NoCapture(LookupError):
    pass


def registered_workspaces(env: dict[str, str] | None = None) -> list[CapturedWorkspace]:
    """Workspaces `thinpatch capture` has registered whose captures still exist and are trusted."""
    found = []
    for entry in iter_registered_workspaces(env):
        ws, root = entry.workspace, entry.capture_root
        if captures_dir(root).is_dir() and untrusted_reason(root) is None:
            found.append(CapturedWorkspace(ws, root))
    return found


_WORKSPACE_TABLE = re.compile(r"^\s*\[workspace\]\s*(#.*)?$", re.MULTILINE)


def _declares_workspace(manifest: Path) -> bool:
    try:
        return bool(_WORKSPACE_TABLE.search(manifest.read_text(encoding="utf-8", errors="replace")))
    except OSError:
        return False


def search_directories(start: Path) -> list[Path]:
    """The directories a capture for ``start`` may live in: ``start`` and its parents up to
    the cargo workspace root (the nearest ``Cargo.toml`` with ``[workspace]``, else the
    nearest ``Cargo.toml``), never above it. Without any ``Cargo.toml``: ``start`` alone."""
    chain = [start, *start.parents]
    package_root = next((i for i, d in enumerate(chain) if (d / "Cargo.toml").is_file()), None)
    if package_root is None:
        return [start]
    workspace_root = next(
        (i for i in range(package_root, len(chain)) if _declares_workspace(chain[i] / "Cargo.toml")),
        package_root,
    )
    return chain[: workspace_root + 1]


def find_captured_workspace(
    directory: str | Path | None = None, env: dict[str, str] | None = None
) -> CapturedWorkspace:
    """The captured workspace that contains ``directory`` (default: the current directory)."""
    start = Path(directory or os.getcwd()).resolve()
    if not start.is_dir():
        raise NoCapture(f"{start} is not a directory. Name the workspace directory (the one with Cargo.toml).")
    candidates = sorted(registered_workspaces(env), key=lambda c: len(str(c.workspace)), reverse=True)
    for cand in candidates:
        if start == cand.workspace or cand.workspace in start.parents:
            return cand
    refused = []
    for d in search_directories(start):
        root = d / "target" / CAPTURE_DIRNAME
        if captures_dir(root).is_dir():
            reason = untrusted_reason(root)
            if reason is None:
                return CapturedWorkspace(d, root)
            refused.append(f"ignored {root}: {reason}")
    raise NoCapture(
        "\n".join(
            [
                f"no capture found for {start}. Run `thinpatch capture` in the workspace first "
                "(it builds the program once and records how).",
                *refused,
            ]
        )
    )
