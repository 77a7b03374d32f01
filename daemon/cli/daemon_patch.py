"""`thinpatch patch` through a running daemon: its program index, symbol cache and
incremental state are warm, so the one-shot command pays no start-up cost."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from daemon.service.programs import Program

OUTCOMES = ("patch-ready", "build-failed", "patch-rejected", "restart-required")


def serves(status: dict[str, Any], workspace: str, build_id: str | None) -> bool:
    """Whether the daemon's status lists ``workspace`` with this program binary (pure)."""
    return build_id is not None and any(
        entry.get("workspace") == workspace and any(p.get("build_id") == build_id for p in entry.get("programs", []))
        for entry in status.get("workspaces", [])
    )


def outcome_for(event: dict[str, Any], program: Program, after: int) -> bool:
    """The event that ends the build asked for: this program's, live, after seq ``after`` (pure)."""
    return (
        event.get("type") in OUTCOMES
        and not event.get("replayed")
        and event.get("seq", 0) > after
        and (event.get("program") or {}).get("build_id") == program.build_id
    )


async def patch_through_daemon(
    socket_path: Path, workspace: Path, program: Program, crate: str | None, timeout: float = 600.0
) -> dict[str, Any] | None:
    """The outcome event for ``program`` from a daemon that serves it, or None when no daemon
    does (then the caller builds the patch itself)."""
    import anyio

    from daemon.socket.client import DaemonUnavailable, RequestFailed, connect
    from daemon.socket.single_instance import probe

    if probe(socket_path).state != "running":
        return None
    try:
        async with connect(socket_path) as client:
            status = await client.request({"type": "status"})
            workspace = Path(os.path.realpath(workspace))  # the daemon keys workspaces by real path
            if not serves(status, str(workspace), program.build_id):
                return None
            await client.subscribe(str(workspace))
            asked = await client.request(
                {"type": "rebuild", "workspace": str(workspace), "crate": crate or program.crate.name}
            )
            with anyio.fail_after(timeout):
                async for event in client.events():
                    if outcome_for(event, program, asked.get("seq", 0)):
                        return event
    except (DaemonUnavailable, RequestFailed, ConnectionError, OSError, TimeoutError):
        return None
    return None
