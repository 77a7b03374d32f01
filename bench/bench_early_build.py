"""Benchmark: what `thinpatch run`'s early build costs a carried save and saves a restart.

`thinpatch run` can start a save's capture build beside its patch build, held before any
compile until the daemon's verdict (daemon/cli/early_build.py). On a two-core machine that held
cargo competes with the patch build for the CPU. This runs the program of bench_restart.py
(`cargo new` + `thinpatch init`; a hot `frame`, and a `banner()` no patch reaches) under real
`thinpatch run` sessions, alternately with --early-build=always and --early-build=never, on the
same project; in each session, every round makes
  * a carried save (the string `frame` returns): from the save to run's "patched ... runs the
    new code" line, and the daemon's own patch time on that line;
  * a save that needs a restart (the banner's string): from the save to the restarted
    program's first line with the new banner.

    python bench/bench_early_build.py [--sessions N] [--rounds N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from bench_patch import clean_env, machine, summary  # noqa: E402
from bench_restart import GAME_RS, Run, ms_since, new_project, save  # noqa: E402

MODES = {"always": ("--early-build=always",), "never": ("--early-build=never",)}


def text(says: str, banner: str) -> str:
    return GAME_RS.replace("BANNER", banner).replace("says v1", f"says {says}")


def timed_save(run: Run, main: Path, source: str, until: str) -> float:
    """ms from saving ``source`` over ``main`` until the terminal shows ``until`` (its match
    stays in ``run.child.match``)."""
    run.drain()
    saved = time.perf_counter()
    save(main, source)
    run.child.expect(until)
    return ms_since(saved)


def session(game: Path, env: dict[str, str], tmp: Path, name: str, rounds: int) -> dict[str, list[float]]:
    main = game / "src" / "main.rs"
    save(main, text("v1", "start"))
    options = MODES[name.split("-")[0]]
    run = Run(game, tmp / f"sock-{name}" / "thinpatch.sock", env, tmp / f"terminal-{name}.txt", options)
    out: dict[str, list[float]] = {"carried_line_ms": [], "carried_daemon_ms": [], "restart_ms": []}
    try:
        time.sleep(1.0)  # the program subscribed and reported its entry point
        banner = "start"
        for n in range(rounds + 1):  # round 0 is a warm-up: the first patch also reads the program
            says = f"{name}x{n}"
            line = timed_save(run, main, text(says, banner), r"patched[^\r\n]* in (\d+) ms[^\r\n]*runs the new code")
            daemon = float(run.child.match.group(1))
            run.child.expect(f"says {says} ")
            time.sleep(0.3)
            banner = f"{name}b{n}"
            first_line = rf"frame (\d+) score \d+ says {says} \| banner {banner}\r?\n"
            restart = timed_save(run, main, text(says, banner), first_line)
            if int(run.child.match.group(1)) > 20:
                raise SystemExit(f"{name} round {n}: the program was not restarted")
            if n:
                out["carried_line_ms"].append(line)
                out["carried_daemon_ms"].append(daemon)
                out["restart_ms"].append(restart)
            time.sleep(0.5)
    finally:
        run.stop()
    return out


def bench(sessions: int, rounds: int) -> dict:
    info = machine()
    tmp = Path(tempfile.mkdtemp(prefix="tp-early-"))
    homes = {name: tmp / name.lower() for name in ("XDG_RUNTIME_DIR", "XDG_STATE_HOME", "XDG_CACHE_HOME")}
    for path in homes.values():
        path.mkdir(mode=0o700)
    env = clean_env(THINPATCH_STATE_DIR=str(tmp / "state"), **{k: str(v) for k, v in homes.items()})
    game = new_project(tmp, env)
    found: dict[str, dict[str, list[float]]] = {mode: {} for mode in MODES}
    try:
        for i in range(sessions):
            for mode in (list(MODES) if i % 2 == 0 else list(reversed(MODES))):
                for key, values in session(game, env, tmp, f"{mode}-{i}", rounds).items():
                    found[mode].setdefault(key, []).extend(values)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results = {mode: {k: summary(v) for k, v in found[mode].items()} for mode in MODES}
    ratios = {k: results["always"][k]["median_ms"] / results["never"][k]["median_ms"] for k in results["always"]}
    return {"benchmark": "early_build", "machine": info, "sessions": sessions, "rounds": rounds,
            "results": results, "ratio_always_over_never": ratios, "load_average_at_end": os.getloadavg()}


def print_report(r: dict) -> None:
    m = r["machine"]
    print(f"machine: {m.get('nproc', '?')} CPUs; {r['sessions']} sessions per mode, alternating, "
          f"{r['rounds']} rounds each; medians [min-max]")
    labels = {"carried_line_ms": "carried save -> \"patched\" line",
              "carried_daemon_ms": "  the daemon's patch time on it",
              "restart_ms": "restart save -> new program's first line"}
    for key, label in labels.items():
        cells = []
        for mode in MODES:
            s = r["results"][mode][key]
            spread = f"[{min(s['runs_ms']):.0f}-{max(s['runs_ms']):.0f}]"
            cells.append(f"{mode} {s['median_ms']:.0f} ms {spread}")
        print(f"{label}: {'; '.join(cells)}; always / never {r['ratio_always_over_never'][key]:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=2, help="run sessions per mode (default 2)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per session (default 5)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = bench(args.sessions, args.rounds)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print_report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
