"""Run one tool (rustc, the linker) as a child process, and make sure it can't outlive us.

Takes an argument list, a working directory and an environment. Gives a ``ToolRun``: the
exit status, the captured output and the time taken. Every child runs in a process group
of its own; a cancelled run kills that group and reaps the child before the cancellation
goes on, so a half-finished rustc never keeps writing into the session. On Linux the child
is also killed by the kernel when the daemon dies (``dies_with_parent``).

Raises ToolNotFound when the program can't be started, MissingCapture when the directory it
ran in at capture time is gone.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import anyio
from anyio.abc import ByteReceiveStream

from daemon.build.errors import RECAPTURE_HINT, MissingCapture, ToolNotFound


@dataclass(frozen=True)
class ToolRun:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    elapsed_ms: float


async def _drain(
    stream: ByteReceiveStream | None, sink: list[bytes], on_line: Callable[[bytes], None] | None = None
) -> None:
    if stream is None:
        return
    pending = b""
    async for chunk in stream:
        sink.append(chunk)
        if on_line is not None:
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                on_line(line)
    if on_line is not None and pending:
        on_line(pending)


# Linux: a tool started through `setpriv --pdeathsig KILL` is killed by the kernel when the
# daemon dies, even by SIGKILL, so it never writes into a session the next daemon uses.
_SETPRIV = shutil.which("setpriv") if sys.platform.startswith("linux") else None


def dies_with_parent(argv: Sequence[str], env: Mapping[str, str], signal_name: str = "KILL") -> list[str]:
    """``argv``, started so that it gets ``signal_name`` when this process dies, where the OS
    allows. (Linux sends it when the thread that started the child ends: start it from a
    thread that lives as long as the process.)

    Only wrapped when the program exists and is executable: a missing compiler must still
    fail to start (ToolNotFound), not run a wrapper that reports it."""
    if _SETPRIV is None or not argv:
        return list(argv)
    program = argv[0] if os.sep in argv[0] else shutil.which(argv[0], path=env.get("PATH"))
    if program is None or not os.path.isfile(program) or not os.access(program, os.X_OK):
        return list(argv)
    return [_SETPRIV, "--pdeathsig", signal_name, "--", *argv]


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


async def run_tool(
    argv: Sequence[str],
    *,
    cwd: str | None,
    env: Mapping[str, str],
    tool: str,
    on_stderr_line: Callable[[bytes], None] | None = None,
) -> ToolRun:
    """Run ``argv`` in a new process group, capturing stdout and stderr (and handing each
    stderr line to ``on_stderr_line`` as it arrives).

    Cancellation kills the whole group and reaps the child before re-raising.
    """
    started = time.perf_counter()
    try:
        process = await anyio.open_process(
            dies_with_parent(argv, env), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, start_new_session=True
        )
    except FileNotFoundError as exc:
        if cwd is not None and not os.path.isdir(cwd):
            raise MissingCapture(
                f"the directory {tool} ran in at capture time no longer exists: {cwd}. {RECAPTURE_HINT}"
            ) from exc
        raise ToolNotFound(tool, argv[0]) from exc
    except PermissionError as exc:
        raise ToolNotFound(tool, argv[0], "is not executable") from exc
    out: list[bytes] = []
    err: list[bytes] = []
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(_drain, process.stdout, out)
            group.start_soon(_drain, process.stderr, err, on_stderr_line)
        returncode = await process.wait()
    except BaseException:
        _kill_group(process.pid)
        with anyio.CancelScope(shield=True):
            await process.wait()
            await process.aclose()
        raise
    await process.aclose()
    return ToolRun(
        argv=tuple(argv),
        returncode=returncode,
        stdout=b"".join(out).decode("utf-8", "replace"),
        stderr=b"".join(err).decode("utf-8", "replace"),
        elapsed_ms=(time.perf_counter() - started) * 1000.0,
    )
