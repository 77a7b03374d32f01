"""Benchmark of the WebSocket endpoint: one save, as a local and a remote subscriber get it.

On a workspace captured with `thinpatch capture` (a copy of tests/fixtures/livehost; or, with
`--workspace large`, the large benchmark's captured copy from bench_large.py's `prepare`, kept
under `--work`, and its bin edit), a real `thinpatch serve --listen 127.0.0.1:0` runs with two
subscribers for the captured binary (by build ID): one on the Unix socket
(`daemon.socket.client`), one on the WebSocket (websockets' client, as a device). Each round
saves app/src/main.rs the way an editor does, and measures
for that same save:
  * save -> `patch-ready` at the Unix subscriber, then the library read from the session cache
    and hashed (what a local program that checks its bytes would do);
  * save -> the last payload frame at the WebSocket subscriber, the bytes joined and their
    SHA-256 checked against the event's `payload`;
so the two figures of a round come from one patch, and neither side goes first. Both sides
then check that the bytes hold the round's edit, so no figure comes from a stale patch. Reported:
the medians of each side and of the per-round difference, the library's size, the machine's
load at start and end. A loopback WebSocket: the figures are the protocol's cost, not a network's.
Both subscribers share this process's event loop, so WebSocket frames that arrive while the Unix
side reads and hashes wait for it: the difference is an upper bound, by at most that read and
hash (reported too).

    python bench/bench_remote.py [--workspace livehost|large] [--work DIR] [--rounds N] [--json]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH / "large"))

import bench_large  # noqa: E402
from bench_daemon import EditorSaves, ms_between  # noqa: E402
from bench_patch import clean_env, machine, summary  # noqa: E402

from daemon.binary.build_id import read_build_id  # noqa: E402
from daemon.cli.capture_run import run_capture  # noqa: E402
from daemon.socket.client import connect  # noqa: E402
from daemon.socket.payload import split_frame  # noqa: E402
from tests.support.fixtures import copy_fixture_tree  # noqa: E402

EVENT_TIMEOUT_S = 300.0
WORKSPACES = ("livehost", "large")


@dataclass
class Target:
    """The captured workspace a run serves, its program, and how a save edits it."""

    workspace: Path
    binary: Path
    save: Callable[[str], None]  # tag -> the edit saved
    marker: Callable[[str], bytes]  # tag -> bytes the patch built from that save contains
    setup: dict


def livehost_target(work: Path, env: dict[str, str]) -> Target:
    """A fresh copy of tests/fixtures/livehost under ``work``, captured."""
    workspace = copy_fixture_tree(REPO / "tests" / "fixtures" / "livehost", work / "livehost")
    if not run_capture(workspace, env=env).ok:
        raise SystemExit("the capture of the livehost fixture failed")
    source = EditorSaves(workspace)
    return Target(
        workspace, workspace / "target" / "debug" / "livehost", source.save,
        lambda tag: EditorSaves.greeting(tag).encode(), {},
    )


def large_target(work: Path, env: dict[str, str]) -> Target:
    """The large benchmark's captured copy under ``work`` (bench_large.prepare: generated and
    built once, then reused) and its bin edit of app/src/main.rs."""
    setup = bench_large.prepare(work, env)
    workspace = work / "daemon"
    source = bench_large.Sources(workspace)
    return Target(
        workspace, workspace / "target" / "debug" / "benchapp", lambda tag: source.save("bin", tag),
        lambda tag: bench_large.Sources.marker("bin", tag).encode(), setup,
    )


def check_marker(data: bytes, saved: dict, patch_id: str, side: str) -> None:
    if saved["marker"] not in data:
        raise SystemExit(f"patch {patch_id} at the {side} subscriber does not hold the edit of its save")


async def unix_side(socket_path: Path, build_id: str, saved: dict, results: dict, ready: anyio.Event) -> None:
    async with connect(socket_path) as client:
        await client.subscribe(build_id=build_id)
        ready.set()
        async for event in client.events():
            if event["type"] != "patch-ready" or event.get("replayed"):
                continue
            arrived = time.perf_counter()
            data = Path(event["lib"]).read_bytes()
            hashlib.sha256(data).hexdigest()
            entry = results.setdefault(event["id"], {})
            entry["unix_ms"] = ms_between(saved["at"], time.perf_counter())
            # both sides share this event loop: the WebSocket side's frames wait this long if they came after
            entry["unix_read_hash_ms"] = ms_between(arrived, time.perf_counter())
            check_marker(data, saved, event["id"], "Unix socket")


async def ws_side(url: str, token: str, build_id: str, saved: dict, results: dict, ready: anyio.Event) -> None:
    from websockets.asyncio.client import connect as ws_connect

    async with ws_connect(url, additional_headers={"Authorization": f"Bearer {token}"}, max_size=None) as ws:
        await ws.recv()  # hello
        await ws.send(json.dumps({"type": "subscribe", "seq": 1, "pid": os.getpid(), "build_id": build_id}))
        await ws.recv()  # subscribed
        ready.set()
        while True:
            event = json.loads(await ws.recv())
            if event["type"] != "patch-ready":
                continue
            data = bytearray()
            for _ in range(event["payload"]["chunks"]):
                data += split_frame(await ws.recv())[1]
            if hashlib.sha256(data).hexdigest() != event["payload"]["sha256"]:
                raise SystemExit(f"patch {event['id']}: the bytes do not match their sha256")
            if event.get("replayed"):
                continue
            entry = results.setdefault(event["id"], {})
            entry["ws_ms"] = ms_between(saved["at"], time.perf_counter())
            check_marker(bytes(data), saved, event["id"], "WebSocket")
            entry["size"] = len(data)


async def bench(kind: str, large_work: Path, rounds: int) -> dict:
    info = machine()
    work = Path(tempfile.mkdtemp(prefix="thinpatch-bench-remote-"))  # socket, token, log; removed at the end
    os.chmod(work, 0o700)
    try:
        if kind == "large":
            env = clean_env(THINPATCH_STATE_DIR=str(large_work / "state"))
            prepared = functools.partial(large_target, large_work, env)
        else:
            env = clean_env(THINPATCH_STATE_DIR=str(work / "state"))
            prepared = functools.partial(livehost_target, work, env)
        os.environ["THINPATCH_STATE_DIR"] = env["THINPATCH_STATE_DIR"]
        target = await anyio.to_thread.run_sync(prepared)
        results = await measure(target, env, work, rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    measured = list(results.values())
    unix = [r["unix_ms"] for r in measured]
    ws = [r["ws_ms"] for r in measured]
    return {
        "workspace": kind,
        "machine": info,
        "setup": target.setup,
        "rounds": len(measured),
        "library_bytes": statistics.median(r["size"] for r in measured),
        "save_to_unix_patch_ready_and_hashed": summary(unix),
        "save_to_websocket_bytes_verified": summary(ws),
        "websocket_minus_unix_ms": summary([r["ws_ms"] - r["unix_ms"] for r in measured]),
        "unix_read_and_hash_ms": summary([r["unix_read_hash_ms"] for r in measured]),
        "load_average_at_end": os.getloadavg(),
    }


async def measure(target: Target, env: dict[str, str], work: Path, rounds: int) -> dict:
    """Serve ``target`` with both subscribers; ``rounds`` saves (after one not counted). Returns
    each patch's figures by its id."""
    build_id = read_build_id(target.binary)
    if build_id is None:
        raise SystemExit(f"{target.binary} has no build ID")
    workspace = target.workspace
    (work / "run").mkdir(mode=0o700)
    socket_path = work / "run" / "thinpatch.sock"
    log = open(work / "daemon.log", "wb")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "daemon", "serve", "--socket", str(socket_path), "--workspace", str(workspace),
         "--listen", "127.0.0.1:0"], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
    )
    try:
        with anyio.fail_after(60):
            while True:
                try:
                    async with connect(socket_path) as client:
                        status = await client.request({"type": "status"})
                        if status["daemon"].get("listen") and any(
                            w.get("watching") for w in status.get("workspaces", [])
                        ):
                            url = status["daemon"]["listen"]
                            break
                except Exception:
                    pass
                await anyio.sleep(0.1)
        token = (socket_path.parent / "token").read_text().strip()
        saved: dict = {}
        results: dict = {}
        async with anyio.create_task_group() as tg:
            ready = [anyio.Event(), anyio.Event()]
            tg.start_soon(unix_side, socket_path, build_id, saved, results, ready[0])
            tg.start_soon(ws_side, url, token, build_id, saved, results, ready[1])
            for event in ready:
                await event.wait()
            async with connect(socket_path) as observer:
                await observer.subscribe()
                for n in range(rounds + 1):  # the first save warms the session up; not counted
                    tag = f"remote-{n}-{time.time_ns()}"
                    saved["marker"] = target.marker(tag)
                    saved["at"] = time.perf_counter()  # one save at a time: each round waits for both sides
                    target.save(tag)
                    with anyio.fail_after(EVENT_TIMEOUT_S):
                        async for event in observer.events():
                            if event["type"] in ("build-failed", "patch-rejected", "restart-required"):
                                raise SystemExit(f"round {n}: {event['type']}: {event}")
                            if event["type"] == "patch-ready" and not event.get("replayed"):
                                patch_id = event["id"]
                                break
                    with anyio.fail_after(EVENT_TIMEOUT_S):
                        while len(results.get(patch_id, {})) < 4:
                            await anyio.sleep(0.005)
                    if n == 0:
                        results.pop(patch_id)
            tg.cancel_scope.cancel()
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)
        log.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument(
        "--workspace", choices=WORKSPACES, default="livehost",
        help="livehost: a copy of tests/fixtures/livehost (default); large: bench_large.py's workspace, its bin edit",
    )
    parser.add_argument(
        "--work", type=Path, default=None,
        help="with --workspace large: where bench_large.py keeps its copies (default: its own, "
        "$XDG_CACHE_HOME/thinpatch-bench/large)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.work is not None and args.workspace != "large":
        parser.error("--work goes with --workspace large (the livehost copy is made in a temporary directory)")
    large_work = (args.work or bench_large.default_work_dir()).resolve()
    result = anyio.run(bench, args.workspace, large_work, args.rounds)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    edit = "bin edits of the large workspace" if args.workspace == "large" else "saves of the livehost fixture"
    print(f"{result['rounds']} {edit}, patch library {result['library_bytes'] / 1024:.0f} KiB")
    for name in (
        "save_to_unix_patch_ready_and_hashed", "save_to_websocket_bytes_verified", "websocket_minus_unix_ms",
        "unix_read_and_hash_ms",
    ):
        figures = result[name]
        print(f"  {name}: median {figures['median_ms']:.1f} ms, min {figures['min_ms']:.1f} ms")
    start, end = result["machine"]["load_average_at_start"], result["load_average_at_end"]
    print(f"  load average (1/5/15 min) at start {start[0]:.2f} {start[1]:.2f} {start[2]:.2f}, "
          f"at end {end[0]:.2f} {end[1]:.2f} {end[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
