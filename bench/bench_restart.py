"""Benchmark: a save that needs a restart under `thinpatch run`, against the capture build it waits for.

A small real program (`cargo new` + `thinpatch init`; a hot `frame` called through
`thinpatch_client::HotFn`, and a `banner()` that `main`'s loop prints, which no patch reaches)
in two copies under a temporary directory:
  * the run copy runs under a real `thinpatch run --socket ...` in a pseudo-terminal (its own
    XDG_RUNTIME_DIR / XDG_STATE_HOME / XDG_CACHE_HOME and THINPATCH_STATE_DIR), with
    `thinpatch watch --json` on the same socket in the background;
  * the capture copy is only built, by the function `thinpatch run` builds with
    (`daemon.cli.capture_run.capture_workspace`: `cargo build` through the capture shims, then
    the capture's records read back), in this process, registered in a state dir of its own
    so that the run's daemon does not serve it.
Each round changes the banner's string to a round-numbered one in both copies, in an order
swapped every round:
  * restart: from the save (a temp file renamed over `src/main.rs`) until the program's first
    line with the new banner reaches the terminal, with the run's own lines on the way
    ("needs a restart", "restarted game (pid N)") and the daemon's events (build-started,
    restart-required and its timings, session-reset when it serves the new build) stamped as
    they arrive; a `not-patchable` event for any process fails the run;
  * capture build: from the save until `capture_workspace` returns; the binary is checked to
    hold the round's banner.

`thinpatch run` holds each save's capture build early (--early-build; auto, its default, does
so with 2 or more CPUs, and on one only after a save that needed a restart, as every timed
round here is unless --after-patch). With --after-patch, each round first makes a save that a
patch carries (`frame`'s string, untimed; the capture copy builds the same source), so each
timed restart is the first after a patched save.

    python bench/bench_restart.py [--rounds N] [--early-build auto|always|never] [--after-patch] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import anyio
import pexpect

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

from bench_patch import clean_env, machine, require_string, summary  # noqa: E402

from daemon.cli.capture_run import capture_workspace  # noqa: E402

# `frame` is the hot entry point (reported by thinpatch-client); `banner` runs from main's loop,
# where no patch reaches, so changing its string needs a restart.
GAME_RS = """\
use std::time::Duration;

struct World {
    score: u64,
}

fn frame(world: &mut World, n: u64) -> String {
    world.score += 1;
    format!("frame {n} score {} says v1", world.score)
}

fn banner() -> &'static str {
    "banner BANNER"
}

fn main() {
    thinpatch_client::connect();
    let mut world = World { score: 0 };
    for n in 1.. {
        let line = thinpatch_client::HotFn::current(frame).call((&mut world, n));
        println!("{line} | {}", banner());
        std::thread::sleep(Duration::from_millis(100));
    }
}
"""
STEP_TIMEOUT_S = 120


def ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000


def source(tag: str, says: str = "v1") -> str:
    return GAME_RS.replace("BANNER", tag).replace("says v1", f"says {says}")


def save(path: Path, text: str) -> None:
    """As editors save: a temp file beside it, renamed over it."""
    tmp = path.with_name(f".{path.name}.tmp-save")
    tmp.write_text(text)
    os.replace(tmp, path)


def thinpatch(args: list[str], cwd: Path, env: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, "-m", "daemon", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"thinpatch {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")


def new_project(parent: Path, env: dict[str, str]) -> Path:
    """`cargo new` (edition 2024) and `thinpatch init`, then the game's main.rs."""
    subprocess.run(["cargo", "new", "--bin", "--edition", "2024", "--vcs", "none", "game"], cwd=parent, env=env,
                   check=True, capture_output=True)
    game = parent / "game"
    thinpatch(["init"], game, env)
    (game / "src" / "main.rs").write_text(source("start"))
    return game


class Events:
    """`thinpatch watch --json` on the run's socket, each event stamped when its line arrives."""

    def __init__(self, socket_path: Path, env: dict[str, str]):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "daemon", "watch", "--json", "--socket", str(socket_path)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        self.lock = threading.Lock()
        self.seen: list[tuple[float, dict]] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            stamp = time.perf_counter()
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                self.seen.append((stamp, event))

    def since(self, start: float) -> list[tuple[float, dict]]:
        with self.lock:
            return [(t, e) for t, e in self.seen if t >= start and not e.get("replayed")]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


class Run:
    """`thinpatch run --socket ...` of the run copy, in a pseudo-terminal."""

    def __init__(self, game: Path, socket_path: Path, env: dict[str, str], log: Path, options: tuple[str, ...] = ()):
        self.game, self.socket_path = game, socket_path
        self.child = pexpect.spawn(
            sys.executable, ["-m", "daemon", "run", "--socket", str(socket_path), *options],
            cwd=str(game), env={**env, "TERM": "xterm", "NO_COLOR": "1"}, encoding="utf-8",
            timeout=STEP_TIMEOUT_S, maxread=65536,
        )
        self.child.logfile_read = open(log, "w")  # what a user would have seen, for a failure
        self.child.expect(r"running game \(host-debug\) \(pid (\d+)\)")
        self.pid = int(self.child.match.group(1))
        self.child.expect(r"\| banner start")

    def drain(self) -> None:
        """Read what the program printed so far (it prints ten lines a second)."""
        try:
            while True:
                self.child.read_nonblocking(65536, timeout=0.05)
        except pexpect.TIMEOUT:
            pass

    def patch(self, main: Path, banner: str, says: str) -> None:
        """A save a patch carries (`frame`'s string), until the program prints it."""
        self.drain()
        save(main, source(banner, says))
        self.child.expect(r"patched [^\r\n]* runs the new code")
        self.child.expect(rf"says {re.escape(says)} \| banner {re.escape(banner)}\r?\n")

    def restart(self, main: Path, tag: str, says: str = "v1") -> dict:
        self.drain()
        saved = time.perf_counter()
        save(main, source(tag, says))
        self.child.expect(r"needs a restart: ([^\r\n]*)")
        decided = ms_since(saved)
        reason = self.child.match.group(1)
        self.child.expect(r"building game under capture")
        building = ms_since(saved)
        self.child.expect(r"Finished `dev` profile")  # cargo's last line, on the same terminal
        cargo_done = ms_since(saved)
        self.child.expect(r"restarted game \(pid (\d+)\)")
        restarted = ms_since(saved)
        pid = int(self.child.match.group(1))
        self.child.expect(rf"frame (\d+) score \d+ says {re.escape(says)} \| banner {re.escape(tag)}\r?\n")
        first_line = ms_since(saved)
        if pid == self.pid or int(self.child.match.group(1)) > 20:
            raise SystemExit(f"round {tag}: the program was not restarted (pid {self.pid} -> {pid})")
        self.pid = pid
        return {"save_to_new_line_ms": first_line, "save_to_needs_restart_line_ms": decided,
                "save_to_building_line_ms": building, "save_to_cargo_finished_line_ms": cargo_done,
                "save_to_restarted_line_ms": restarted,
                "reason": reason, "saved": saved}

    def stop(self) -> None:
        self.child.sendintr()
        try:
            self.child.expect(pexpect.EOF, timeout=30)
        finally:
            self.child.close(force=True)


def daemon_split(events: Events, saved: float, tag: str, workspace: str) -> dict:
    """The patch attempt that decided the restart, from the daemon's events about ``workspace``:
    build-started -> restart-required (arrival at `thinpatch watch`), and the restart-required
    event's timings."""
    seen = [(t, e) for t, e in events.since(saved) if e.get("workspace") in (None, workspace)]
    started = next((t for t, e in seen if e.get("type") == "build-started"), None)
    decided = next(((t, e) for t, e in seen if e.get("type") == "restart-required"), None)
    if started is None or decided is None:
        raise SystemExit(f"round {tag}: no build-started / restart-required in {[e.get('type') for _, e in seen]}")
    refused = [e for _, e in seen if e.get("type") == "not-patchable" and e.get("for_pid")]
    if refused:  # the restarted program must be served, never told it gets no patches
        raise SystemExit(f"round {tag}: a process was told it is not patchable: {refused}")
    timings = decided[1].get("timings") or {}
    firsts: dict[str, float] = {}
    for t, e in seen:
        firsts.setdefault(str(e.get("type")), (t - saved) * 1000)
    served = {"save_to_daemon_serving_ms": firsts["session-reset"]} if "session-reset" in firsts else {}
    return {
        "events": firsts,
        **served,  # the daemon's new session for the new build (its session-reset event)
        "save_to_build_started_ms": (started - saved) * 1000,
        "build_started_to_restart_required_ms": (decided[0] - started) * 1000,
        **{f"event_{k}": v for k, v in timings.items() if isinstance(v, (int, float))},
    }


async def timed_capture(game: Path, tag: str, env: dict[str, str], says: str = "v1") -> float:
    saved = time.perf_counter()
    save(game / "src" / "main.rs", source(tag, says))
    result = await capture_workspace(game, env=env)
    wall = ms_since(saved)
    if not result.ok:
        raise SystemExit(f"capture build of round {tag} failed (exit {result.exit_code})")
    require_string(game / "target" / "debug" / "game", f"banner {tag}")
    return wall


def bench(rounds: int, keep: bool, early_build: str = "auto", after_patch: bool = False) -> dict:
    info = machine()
    tmp = Path(tempfile.mkdtemp(prefix="tp-restart-"))
    homes = {name: tmp / name.lower() for name in ("XDG_RUNTIME_DIR", "XDG_STATE_HOME", "XDG_CACHE_HOME")}
    for path in homes.values():
        path.mkdir(mode=0o700)
    env = clean_env(THINPATCH_STATE_DIR=str(tmp / "state"), **{k: str(v) for k, v in homes.items()})
    socket_path = tmp / "sock" / "thinpatch.sock"
    (tmp / "run").mkdir()
    (tmp / "capture").mkdir()
    run_game = new_project(tmp / "run", env)
    shutil.copytree(run_game, tmp / "capture" / "game")
    capture_game = tmp / "capture" / "game"
    setup: dict = {}
    start = time.perf_counter()
    # The capture copy registers in a state dir of its own: the run's daemon must not serve
    # it (a session of its own, a warm-up build) while the run copy restarts.
    capture_env = {**env, "THINPATCH_STATE_DIR": str(tmp / "capture-state")}
    first = anyio.run(lambda: capture_workspace(capture_game, env=capture_env))
    if not first.ok:
        raise SystemExit("the first capture build failed")
    setup["capture_copy_first_build_ms"] = ms_since(start)
    start = time.perf_counter()
    run = Run(run_game, socket_path, env, tmp / "terminal.txt", (f"--early-build={early_build}",))
    setup["run_start_to_first_line_ms"] = ms_since(start)  # builds under capture, starts the daemon
    events = Events(socket_path, env)
    restarts: list[dict] = []
    captures: list[float] = []
    warmup: dict = {}
    try:
        time.sleep(1.0)  # `watch` subscribed
        # one untimed round each first: the first restart also starts the daemon's work on this program
        warm = run.restart(run_game / "src" / "main.rs", "warm")
        warmup = {"restart_ms": warm["save_to_new_line_ms"],
                  "capture_ms": anyio.run(timed_capture, capture_game, "warm", capture_env)}
        banner = "warm"
        for n in range(1, rounds + 1):
            tag = f"r{n}"
            says = f"p{n}" if after_patch else "v1"
            if after_patch:  # untimed: the timed restart is the first after a patched save
                run.patch(run_game / "src" / "main.rs", banner, says)
                time.sleep(0.5)
            steps = ["restart", "capture"] if n % 2 else ["capture", "restart"]
            for step in steps:
                if step == "restart":
                    r = run.restart(run_game / "src" / "main.rs", tag, says)
                    time.sleep(0.3)  # the last events reach `watch`
                    r.update(daemon_split(events, r.pop("saved"), tag, os.path.realpath(run_game)))
                    restarts.append(r)
                else:
                    captures.append(anyio.run(timed_capture, capture_game, tag, capture_env, says))
                time.sleep(0.5)
            banner = tag
    finally:
        run.stop()
        events.stop()
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    restart = summary([r["save_to_new_line_ms"] for r in restarts])
    capture = summary(captures)
    for r in restarts:
        r["cargo_finished_to_restarted_line_ms"] = r["save_to_restarted_line_ms"] - r["save_to_cargo_finished_line_ms"]
        r["restarted_line_to_new_line_ms"] = r["save_to_new_line_ms"] - r["save_to_restarted_line_ms"]
    split_keys = [k for k in restarts[0] if k.endswith("_ms") and k != "save_to_new_line_ms"]
    return {
        "benchmark": "restart",
        "machine": info,
        "rounds": rounds,
        "early_build": early_build,
        "after_patch": after_patch,
        "setup": setup,
        "warmup": warmup,
        "restart": restart,
        "capture_build": capture,
        "ratio_restart_over_capture": restart["median_ms"] / capture["median_ms"],
        "split": {k: summary([r[k] for r in restarts if k in r]) for k in split_keys},
        "reasons": sorted({r["reason"] for r in restarts}),
        # per round: each daemon event type's first arrival at `watch`, ms after the save
        "daemon_events_ms": [r["events"] for r in restarts],
        "load_average_at_end": os.getloadavg(),
    }


def print_report(r: dict) -> None:
    m = r["machine"]
    print(f"machine: {m.get('nproc', '?')} CPUs; load average at start {m.get('load_average_at_start', '?')}")

    def rng(x: dict) -> str:
        return f"{x['median_ms']:.0f} ms [{min(x['runs_ms']):.0f}-{max(x['runs_ms']):.0f}]"

    after = ", each after a patched save" if r.get("after_patch") else ""
    print(f"{r['rounds']} rounds{after}, --early-build={r['early_build']}, medians [min-max]; "
          f"restart reason: {'; '.join(r['reasons'])}")
    print(f"save -> first line of the restarted program: {rng(r['restart'])}")
    print(f"save -> capture build done (other copy):     {rng(r['capture_build'])}")
    print(f"restart / capture build: {r['ratio_restart_over_capture']:.2f}")
    for key, value in r["split"].items():
        print(f"  {key}: {rng(value)}")
    print(f"warm-up round (untimed in the figures): restart {r['warmup']['restart_ms']:.0f} ms, "
          f"capture {r['warmup']['capture_ms']:.0f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (terminal.txt)")
    parser.add_argument("--early-build", choices=("auto", "always", "never"), default="auto",
                        help="passed to `thinpatch run` (auto: early builds with 2+ CPUs; on one CPU "
                        "after a restart only)")
    parser.add_argument("--after-patch", action="store_true",
                        help="before each timed restart, an untimed save that a patch carries (frame's "
                        "string): every restart is the first after a patched save")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = bench(args.rounds, args.keep, args.early_build, args.after_patch)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print_report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
