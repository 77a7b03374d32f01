"""Benchmark of the daemon: a save, as a subscribed client and a live host see it.

On a copy of tests/fixtures/livehost, captured with `thinpatch capture`, a real `thinpatch serve`
process runs with the live Rust host subscribed over the socket (it applies `patch-ready` events
as subsecond does) and one Python client (`daemon.socket.client`). Each round saves app/src/main.rs the
way an editor does (temp file renamed over) with a round-numbered greeting, and measures in the
same run:
  * save -> `patch-ready` received by the Python client;
  * save -> new behaviour in the host: after the host prints `PATCHED`, send `tick` until its
    TICK line shows the new greeting (time until that line arrives);
  * save -> `cargo build -q` done for the same edit, on a second plain copy with its own target
    dir (built once beforehand, untimed); the order of the two steps is swapped every round;
  * the daemon's own overhead: save -> `patch-ready` minus the event's rustc_ms + link_ms
    (verify_ms reported apart; the debounce is part of the overhead).
Also the daemon's idle CPU (utime+stime from /proc/<pid>/stat over a quiet interval) and RSS
(VmRSS, VmHWM from /proc/<pid>/status), and fan-out: N extra subscribers on raw sockets, a save,
and when each one reads the `patch-ready` (relative to the first reader and to the save), with
a check that every subscriber got the same events.

    python bench/bench_daemon.py [--rounds N] [--fanout-clients N] [--fanout-rounds N] [--idle-seconds S] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

from bench_patch import clean_env, machine, require_string, summary, timed_cargo_build  # noqa: E402

from daemon.cli.capture_run import run_capture  # noqa: E402
from daemon.service.watcher import DEFAULT_DEBOUNCE_MS  # noqa: E402
from daemon.socket import protocol  # noqa: E402
from daemon.socket.client import connect  # noqa: E402
from tests.support.daemon_process import quiet_mark  # noqa: E402
from tests.support.fixtures import copy_fixture_tree  # noqa: E402
from tests.support.live_host import LiveHost  # noqa: E402

FIXTURE = REPO / "tests" / "fixtures" / "livehost"
EDITED_FILE = Path("app") / "src" / "main.rs"
ORIGINAL_LINE = '"app v1 #{} calls={}"'
OUTCOMES = ("patch-ready", "build-failed", "patch-rejected", "full-rebuild-required", "restart-required")
EVENT_TIMEOUT_S = 120.0


def ms_between(start: float, end: float) -> float:
    return (end - start) * 1000


class EditorSaves:
    """app/src/main.rs of one copy; each save writes a temp file and renames it over the source."""

    def __init__(self, workspace: Path):
        self.path = workspace / EDITED_FILE
        self.original = self.path.read_text()
        if ORIGINAL_LINE not in self.original:
            raise SystemExit(f"{self.path} no longer contains {ORIGINAL_LINE}: update the bench")

    @staticmethod
    def greeting(tag: str) -> str:
        return f"app v1 {tag} #"

    def save(self, tag: str) -> None:
        text = self.original.replace(ORIGINAL_LINE, f'"app v1 {tag} #{{}} calls={{}}"')
        tmp = self.path.with_name(f".{self.path.name}.tmp-save")
        tmp.write_text(text)
        os.replace(tmp, self.path)


# ------------------------------------------------------------------ the daemon process


class Daemon:
    """`thinpatch serve` for one workspace, logging to a file (no protocol self-validation)."""

    def __init__(self, socket_path: Path, workspace: Path, debounce_ms: int, env: dict[str, str]):
        self.socket_path = socket_path
        self.log_path = socket_path.parent / "daemon.log"
        self._log = open(self.log_path, "wb")
        args = [sys.executable, "-m", "daemon", "serve", "--socket", str(socket_path),
                "--workspace", str(workspace), "--debounce-ms", str(debounce_ms)]
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        self.pid = self.proc.pid

    def wait_listening(self, timeout: float = 30.0) -> float:
        """Returns the time from process start until the socket accepts a connection."""
        start = time.perf_counter()
        while time.perf_counter() - start < timeout:
            if self.proc.poll() is not None:
                raise SystemExit(f"the daemon exited ({self.proc.returncode}):\n{self.log()}")
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(self.socket_path))
                return ms_between(start, time.perf_counter())
            except OSError:
                time.sleep(0.02)
        raise SystemExit(f"the daemon did not listen within {timeout:g} s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> float | None:
        """SIGTERM; the time it took to exit, or None when it had to be killed."""
        if self.proc.poll() is not None:
            self._log.close()
            return None
        start = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=5)
            took = ms_between(start, time.perf_counter())
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            took = None
        self._log.close()
        return took


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process itself (not of its child builds)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_kb(pid: int) -> dict[str, int]:
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found


async def idle_cpu(pid: int, seconds: float) -> dict:
    start_cpu, start = cpu_seconds(pid), time.perf_counter()
    await anyio.sleep(seconds)
    used, wall = cpu_seconds(pid) - start_cpu, time.perf_counter() - start
    return {
        "seconds": wall,
        "cpu_seconds": used,
        "cpu_percent": 100 * used / wall,
        "clock_ticks_per_s": os.sysconf("SC_CLK_TCK"),
    }


# ------------------------------------------------------------------ clients


async def wait_subscribers(client, count: int) -> None:
    with anyio.fail_after(30):
        while (await client.request({"type": "status"}))["daemon"]["subscribers"] < count:
            await anyio.sleep(0.05)


async def next_outcome(client, mark: int) -> tuple[float, dict, list[dict]]:
    """The first live build outcome after ``mark``: (arrival time, event, live events up to it)."""
    seen = []
    with anyio.fail_after(EVENT_TIMEOUT_S):
        async for event in client.events():
            arrived = time.perf_counter()
            if event.get("replayed") or event.get("seq", 0) <= mark:
                continue
            seen.append(event)
            if event["type"] in OUTCOMES:
                return arrived, event, seen
    raise SystemExit(f"the daemon closed the connection; events so far: {seen}")


class RawSubscriber:
    """A subscriber on a plain socket: reads lines and stamps each message with its arrival time."""

    def __init__(self, stream):
        self.stream = stream
        self.lines = protocol.LineBuffer(protocol.MAX_LINE_BYTES)
        self.received: list[tuple[float, dict]] = []
        self.closed_reason: str | None = None

    @classmethod
    async def open(cls, path: Path) -> RawSubscriber:
        sub = cls(await anyio.connect_unix(str(path)))
        await sub.stream.send(protocol.encode({"type": "subscribe", "seq": 1}))
        return sub

    async def read_forever(self) -> None:
        try:
            while True:
                chunk = await self.stream.receive(65536)
                now = time.perf_counter()
                for line in self.lines.feed(chunk):
                    self.received.append((now, protocol.decode(line)))
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            self.closed_reason = f"connection closed: {exc!r}"

    def subscribed(self) -> bool:
        return any(m.get("type") == "subscribed" for _, m in self.received)

    def live_after(self, mark: int) -> list[tuple[float, dict]]:
        return [
            (t, m)
            for t, m in self.received
            if protocol.is_event(m) and not m.get("replayed") and m.get("seq", 0) > mark
        ]

    def outcome_after(self, mark: int) -> tuple[float, dict] | None:
        for t, m in self.live_after(mark):
            if m["type"] in OUTCOMES:
                return t, m
        return None


# ------------------------------------------------------------------ the bench


async def bench(
    work: Path, rounds: int, fanout_clients: int, fanout_rounds: int, idle_seconds: float, debounce_ms: int
) -> dict:
    machine_info = machine()
    daemon_ws = work / "daemon" / "livehost"
    cargo_ws = work / "cargo" / "livehost"
    for ws in (daemon_ws, cargo_ws):
        copy_fixture_tree(FIXTURE, ws)
    state = work / "state"
    env = clean_env(THINPATCH_STATE_DIR=str(state))

    start = time.perf_counter()
    capture = await anyio.to_thread.run_sync(lambda: run_capture(daemon_ws, env=env, cargo_args=["-q"]))
    capture_ms = ms_between(start, time.perf_counter())
    if not capture.ok:
        raise SystemExit(f"thinpatch capture failed with exit {capture.exit_code}")
    start = time.perf_counter()
    await timed_cargo_build(cargo_ws, env)  # the untimed baseline build; figure kept for context
    cargo_fresh_ms = ms_between(start, time.perf_counter())

    sock_dir = work / "sock"
    sock_dir.mkdir(mode=0o700)
    daemon = Daemon(sock_dir / "thinpatch.sock", daemon_ws, debounce_ms, env)
    host = None
    try:
        listen_ms = daemon.wait_listening()
        host = LiveHost(daemon_ws / "target" / "debug" / "livehost", cwd=daemon_ws)
        host.send(f"socket {daemon.socket_path}")
        host.expect(lambda line: line == "SUBSCRIBED")
        async with connect(daemon.socket_path) as client:
            await client.subscribe(workspace=str(daemon_ws))
            await wait_subscribers(client, 2)
            await quiet_mark(client, daemon_ws, settle_s=0.2, poll_s=0.05, timeout=EVENT_TIMEOUT_S)
            await anyio.sleep(1.0)
            idle_before = await idle_cpu(daemon.pid, idle_seconds)
            memory_before = memory_kb(daemon.pid)

            daemon_source, cargo_source = EditorSaves(daemon_ws), EditorSaves(cargo_ws)
            daemon_runs, cargo_runs = [], []

            async def daemon_round(n: int) -> None:
                mark = await quiet_mark(client, daemon_ws, settle_s=0.2, poll_s=0.05, timeout=EVENT_TIMEOUT_S)
                tag = f"r{n}"
                wanted = EditorSaves.greeting(tag)
                host_times: dict = {}

                def watch_host() -> None:
                    patched = host.expect(
                        lambda line: line.startswith(("PATCHED", "PATCH-ERROR")), timeout=EVENT_TIMEOUT_S
                    )
                    host_times["patched"] = time.perf_counter()
                    host_times["patched_line"] = patched
                    if patched.startswith("PATCH-ERROR"):
                        return
                    # A PATCHED left over from an earlier build shows the old greeting: tick on.
                    deadline = time.perf_counter() + EVENT_TIMEOUT_S
                    while time.perf_counter() < deadline:
                        tick = host.tick()
                        if tick["app"].startswith(wanted):
                            host_times["behaviour"] = time.perf_counter()
                            host_times["tick"] = tick
                            return
                        host_times["stale_ticks"] = host_times.get("stale_ticks", 0) + 1
                        time.sleep(0.005)

                result: dict = {}

                async def wait_client() -> None:
                    result["arrived"], result["event"], result["events"] = await next_outcome(client, mark)

                saved = time.perf_counter()
                daemon_source.save(tag)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(wait_client)
                    tg.start_soon(anyio.to_thread.run_sync, watch_host)
                event = result["event"]
                if event["type"] != "patch-ready":
                    raise SystemExit(f"round {n}: expected patch-ready, got {event}")
                if "behaviour" not in host_times:
                    raise SystemExit(f"round {n}: the host did not show {wanted!r}: {host_times}")
                require_string(Path(event["lib"]), wanted)
                timings = event["timings"]
                ready_ms = ms_between(saved, result["arrived"])
                daemon_runs.append(
                    {
                        "round": n,
                        "save_to_patch_ready_ms": ready_ms,
                        "save_to_host_patched_ms": ms_between(saved, host_times["patched"]),
                        "save_to_behaviour_ms": ms_between(saved, host_times["behaviour"]),
                        **{k: timings[k] for k in ("rustc_ms", "link_ms", "verify_ms", "total_ms")},
                        "daemon_overhead_ms": ready_ms - timings["rustc_ms"] - timings["link_ms"],
                        "outside_build_ms": ready_ms - timings["total_ms"],
                        "builds_started": sum(e["type"] == "build-started" for e in result["events"]),
                        "host_counter": int(host_times["tick"]["counter"]),
                        "stale_ticks": host_times.get("stale_ticks", 0),
                    }
                )

            async def cargo_round(n: int) -> None:
                saved = time.perf_counter()
                cargo_source.save(f"c{n}")
                await timed_cargo_build(cargo_ws, env)
                wall = ms_between(saved, time.perf_counter())
                require_string(cargo_ws / "target" / "debug" / "livehost", EditorSaves.greeting(f"c{n}"))
                cargo_runs.append({"round": n, "save_to_cargo_done_ms": wall})

            # The first save after start also has the daemon parse the host binary: reported apart.
            await daemon_round(0)
            first_save = daemon_runs.pop()
            for n in range(1, rounds + 1):
                for step in (daemon_round, cargo_round) if n % 2 else (cargo_round, daemon_round):
                    await step(n)
            counters = [r["host_counter"] for r in daemon_runs]
            if any(b <= a for a, b in itertools.pairwise(counters)):
                raise SystemExit(f"the host's counter did not keep counting: {counters}")

            fanout = await measure_fanout(client, daemon, daemon_ws, daemon_source, fanout_clients, fanout_rounds)
            await quiet_mark(client, daemon_ws, settle_s=0.2, poll_s=0.05, timeout=EVENT_TIMEOUT_S)
            memory_after = memory_kb(daemon.pid)
        host_alive = host.alive()
    finally:
        if host is not None:
            host.close()
        stop_ms = daemon.stop()

    ready = [r["save_to_patch_ready_ms"] for r in daemon_runs]
    behaviour = [r["save_to_behaviour_ms"] for r in daemon_runs]
    cargo = [r["save_to_cargo_done_ms"] for r in cargo_runs]
    column = lambda key: summary([r[key] for r in daemon_runs])  # noqa: E731
    return {
        "benchmark": "daemon",
        "fixture": "tests/fixtures/livehost",
        "edit": f"{EDITED_FILE}: {ORIGINAL_LINE} -> round-numbered string, saved as temp file + rename",
        "rounds": rounds,
        "debounce_ms": debounce_ms,
        "machine": machine_info,
        "load_average_at_end": os.getloadavg(),
        "setup": {
            "capture_ms": capture_ms,
            "cargo_fresh_build_ms": cargo_fresh_ms,
            "crates_captured": [key.label for key in capture.captured],
            "daemon_listening_ms": listen_ms,
        },
        "save_to_patch_ready": summary(ready),
        "save_to_host_patched": column("save_to_host_patched_ms"),
        "save_to_behaviour": summary(behaviour),
        "save_to_cargo_build": summary(cargo),
        "split": {k: column(k) for k in ("rustc_ms", "link_ms", "verify_ms", "total_ms")},
        "daemon_overhead": column("daemon_overhead_ms"),
        "outside_build": column("outside_build_ms"),
        "ratio_cargo_over_patch_ready": statistics.median(cargo) / statistics.median(ready),
        "ratio_cargo_over_behaviour": statistics.median(cargo) / statistics.median(behaviour),
        "first_save": first_save,
        "daemon_runs": daemon_runs,
        "cargo_runs": cargo_runs,
        "idle": {**idle_before, "rss_kb": memory_before.get("VmRSS")},
        "memory_after_rounds_kb": {"rss": memory_after.get("VmRSS"), "peak_rss": memory_after.get("VmHWM")},
        "fanout": fanout,
        "host_alive_after": host_alive,
        "daemon_stop_ms": stop_ms,
    }


async def measure_fanout(client, daemon: Daemon, workspace: Path, source: EditorSaves, count: int, rounds: int) -> dict:
    async with anyio.create_task_group() as tg:
        subscribers = []
        for _ in range(count):
            sub = await RawSubscriber.open(daemon.socket_path)
            subscribers.append(sub)
            tg.start_soon(sub.read_forever)
        base = (await client.request({"type": "status"}))["daemon"]["subscribers"]
        with anyio.fail_after(30):
            while not all(s.subscribed() for s in subscribers):
                await anyio.sleep(0.02)
        await wait_subscribers(client, base)
        runs = []
        for k in range(1, rounds + 1):
            mark = await quiet_mark(client, workspace, settle_s=0.2, poll_s=0.05, timeout=EVENT_TIMEOUT_S)
            saved = time.perf_counter()
            source.save(f"f{k}")
            reference_arrived, reference, reference_events = await next_outcome(client, mark)
            if reference["type"] != "patch-ready":
                raise SystemExit(f"fan-out round {k}: expected patch-ready, got {reference}")
            with anyio.fail_after(EVENT_TIMEOUT_S):
                while not all(s.outcome_after(mark) or s.closed_reason for s in subscribers):
                    await anyio.sleep(0.005)
            arrivals, lost, disconnected = [], 0, 0
            expected = [(e["type"], e["seq"]) for e in reference_events]
            for sub in subscribers:
                if sub.closed_reason:
                    disconnected += 1
                    continue
                arrived, event = sub.outcome_after(mark)
                got = [(m["type"], m["seq"]) for _, m in sub.live_after(mark) if m["seq"] <= event["seq"]]
                if event["id"] != reference["id"] or got != expected:
                    lost += 1
                arrivals.append(arrived)
            first = min(arrivals)
            spread = [ms_between(first, t) for t in arrivals]
            runs.append(
                {
                    "round": k,
                    "clients": count,
                    "received": len(arrivals),
                    "lost_or_different": lost,
                    "disconnected": disconnected,
                    "save_to_first_ms": ms_between(saved, first),
                    "save_to_all_ms": ms_between(saved, max(arrivals)),
                    "save_to_reference_client_ms": ms_between(saved, reference_arrived),
                    "after_first_median_ms": statistics.median(spread),
                    "after_first_max_ms": max(spread),
                }
            )
        for sub in subscribers:
            await sub.stream.aclose()
        tg.cancel_scope.cancel()
    column = lambda key: summary([r[key] for r in runs])  # noqa: E731
    return {
        "clients": count,
        "rounds": rounds,
        "all_received_every_event": all(
            r["lost_or_different"] == 0 and r["disconnected"] == 0 and r["received"] == count for r in runs
        ),
        "save_to_all": column("save_to_all_ms"),
        "save_to_first": column("save_to_first_ms"),
        "after_first_median": column("after_first_median_ms"),
        "after_first_max": column("after_first_max_ms"),
        "runs": runs,
    }


# ------------------------------------------------------------------ output


def print_report(r: dict) -> None:
    m = r["machine"]
    print(f"machine: {m['nproc']} CPUs, {m['cpu']}, {m['system']}; {m['rustc']}; Python {m['python']}")
    print(
        f"date: {m['date']}; load average at start: {', '.join(f'{x:.2f}' for x in m['load_average_at_start'])};"
        f" at end: {', '.join(f'{x:.2f}' for x in r['load_average_at_end'])}"
    )
    setup = r["setup"]
    print(
        f"fixture: {r['fixture']}; capture {setup['capture_ms'] / 1000:.2f} s; fresh cargo build "
        f"{setup['cargo_fresh_build_ms'] / 1000:.2f} s; daemon listening after {setup['daemon_listening_ms']:.0f} ms"
    )
    print(f"edit: {r['edit']}; debounce {r['debounce_ms']} ms")
    print()
    first = r["first_save"]
    print(
        f"first save (the daemon also parses the host binary): patch-ready {first['save_to_patch_ready_ms']:.0f} ms,"
        f" new behaviour {first['save_to_behaviour_ms']:.0f} ms"
        f" (rustc {first['rustc_ms']:.0f}, link {first['link_ms']:.0f},"
        f" verify {first['verify_ms']:.0f}, total {first['total_ms']:.0f} ms)"
    )
    print()
    runs = lambda s: ", ".join(f"{x:.0f}" for x in s["runs_ms"])  # noqa: E731
    print(f"{r['rounds']} rounds (ms)                             median      min   every run")
    rows = [
        ("save -> patch-ready (Python client)", r["save_to_patch_ready"]),
        ("save -> PATCHED printed by the host", r["save_to_host_patched"]),
        ("save -> new behaviour in the host", r["save_to_behaviour"]),
        ("save -> cargo build done", r["save_to_cargo_build"]),
        ("  event rustc_ms", r["split"]["rustc_ms"]),
        ("  event link_ms", r["split"]["link_ms"]),
        ("  event verify_ms", r["split"]["verify_ms"]),
        ("  event total_ms", r["split"]["total_ms"]),
        ("daemon overhead (e2e - rustc - link)", r["daemon_overhead"]),
        ("  of which outside total_ms", r["outside_build"]),
    ]
    for label, s in rows:
        print(f"  {label:<40}{s['median_ms']:>8.0f} {s['min_ms']:>8.0f}   {runs(s)}")
    print(
        f"  cargo / save->patch-ready: {r['ratio_cargo_over_patch_ready']:.1f}x;"
        f" cargo / save->behaviour: {r['ratio_cargo_over_behaviour']:.1f}x"
    )
    print()
    idle = r["idle"]
    mem = r["memory_after_rounds_kb"]
    print(
        f"daemon idle: {idle['cpu_percent']:.2f}% CPU over {idle['seconds']:.1f} s ({idle['cpu_seconds']:.2f} s CPU);"
        f" RSS {idle['rss_kb'] / 1024:.1f} MiB;"
        f" after the rounds RSS {mem['rss'] / 1024:.1f} MiB, peak {mem['peak_rss'] / 1024:.1f} MiB"
    )
    f = r["fanout"]
    print(f"fan-out to {f['clients']} raw subscribers, {f['rounds']} saves (ms)  median      min   every run")
    for label, key in (
        ("save -> all have patch-ready", "save_to_all"),
        ("save -> first has it", "save_to_first"),
        ("per-client after first: median", "after_first_median"),
        ("per-client after first: max", "after_first_max"),
    ):
        s = f[key]
        print(
            f"  {label:<40}{s['median_ms']:>8.1f} {s['min_ms']:>8.1f}   {', '.join(f'{x:.1f}' for x in s['runs_ms'])}"
        )
    print(f"  every subscriber got every event: {'yes' if f['all_received_every_event'] else 'NO'}")
    print(
        f"host alive after all rounds: {r['host_alive_after']}; daemon exited on SIGTERM in "
        f"{r['daemon_stop_ms']:.0f} ms"
        if r["daemon_stop_ms"] is not None
        else "daemon had to be killed"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="save rounds (default 5)")
    parser.add_argument("--fanout-clients", type=int, default=100, help="extra subscribers for fan-out (default 100)")
    parser.add_argument("--fanout-rounds", type=int, default=3, help="saves with the extra subscribers (default 3)")
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="quiet interval for idle CPU (default 5)")
    parser.add_argument(
        "--debounce-ms",
        type=int,
        default=DEFAULT_DEBOUNCE_MS,
        help=f"the daemon's debounce (default {DEFAULT_DEBOUNCE_MS}, its default)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args()
    if args.rounds < 1 or args.fanout_rounds < 1 or args.fanout_clients < 1:
        parser.error("--rounds, --fanout-rounds and --fanout-clients must be at least 1")
    with tempfile.TemporaryDirectory(prefix="thinpatch-bench-daemon-") as tmp:
        results = anyio.run(
            bench, Path(tmp), args.rounds, args.fanout_clients, args.fanout_rounds, args.idle_seconds, args.debounce_ms
        )
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        print_report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
