"""Benchmark of the capture side.

Measures, in one run:
  * the time thinpatch-rustc adds to one real rustc call (median over N interleaved runs of the
    same small compile, with and without the shim; the shim records each one);
  * the shim's cost on a probe (`rustc -vV`, not recorded);
  * the wall time of a from-scratch `cargo build` of a fixture, plain and under `thinpatch capture`
    (target dir removed before each; alternating, order swapped every round).

    python bench/bench_capture.py [--runs N] [--rounds R] [--fixture debian_deps|workspace|single_bin] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from daemon.cli.capture_run import find_shim, run_capture  # noqa: E402
from tests.support.fixtures import copy_fixture_tree  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures"
WRAPPER_VARS = ("RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in WRAPPER_VARS and not k.startswith("THINPATCH_")}
    env.update(extra)
    return env


def real_rustc() -> str:
    sysroot = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True, check=True).stdout.strip()
    return str(Path(sysroot) / "bin" / "rustc")


def timed(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def bench_shim_overhead(work: Path, runs: int) -> dict:
    rustc = real_rustc()
    shim = find_shim("thinpatch-rustc")
    src = work / "lib.rs"
    src.write_text("pub fn add(a: u32, b: u32) -> u32 { a + b }\n")
    out = work / "target" / "debug" / "deps"
    out.mkdir(parents=True)
    (work / "target" / "CACHEDIR.TAG").write_text("Signature: 8a477f597d28d172789f06886806bc55\n")
    compile_args = [
        "--crate-name",
        "bench",
        "--crate-type",
        "lib",
        "--emit=dep-info,link",
        "--out-dir",
        str(out),
        str(src),
    ]
    env = clean_env(
        RUSTC_WORKSPACE_WRAPPER=shim,
        THINPATCH_CAPTURE_ROOT=str(work / "target" / "thinpatch"),
        THINPATCH_WORKSPACE=str(work),
        THINPATCH_STATE_DIR=str(work / "state"),
    )
    direct, wrapped, probe_direct, probe_wrapped = [], [], [], []
    timed([rustc, *compile_args], env)  # warm caches
    timed([shim, rustc, *compile_args], env)
    for _ in range(runs):  # interleaved, so drift hits both sides alike
        direct.append(timed([rustc, *compile_args], env))
        wrapped.append(timed([shim, rustc, *compile_args], env))
        probe_direct.append(timed([rustc, "-vV"], env))
        probe_wrapped.append(timed([shim, rustc, "-vV"], env))
    recorded = (work / "target" / "thinpatch" / "captures" / "host-debug" / "rustc" / "bench.lib.json").is_file()
    return {
        "runs": runs,
        "compile_direct_median_s": statistics.median(direct),
        "compile_shim_median_s": statistics.median(wrapped),
        "shim_added_per_compile_s": statistics.median(wrapped) - statistics.median(direct),
        "probe_direct_median_s": statistics.median(probe_direct),
        "probe_shim_median_s": statistics.median(probe_wrapped),
        "shim_added_per_probe_s": statistics.median(probe_wrapped) - statistics.median(probe_direct),
        "recorded": recorded,
        "shim": shim,
    }


def bench_fat_build(work: Path, fixture: str, rounds: int) -> dict:
    """Alternate plain and captured builds (order swapped each round) so cache warm-up favours neither."""
    ws = work / fixture
    copy_fixture_tree(FIXTURES / fixture, ws)
    env = clean_env(THINPATCH_STATE_DIR=str(work / "state"))
    plain: list[float] = []
    captured: list[float] = []
    crates: list[str] = []

    def plain_build() -> None:
        shutil.rmtree(ws / "target", ignore_errors=True)
        plain.append(timed(["cargo", "build", "-q"], env, cwd=ws))

    def capture_build() -> None:
        shutil.rmtree(ws / "target", ignore_errors=True)
        start = time.perf_counter()
        result = run_capture(ws, env=env, cargo_args=["-q"])
        captured.append(time.perf_counter() - start)
        if result.exit_code != 0:
            raise SystemExit(f"capture of {fixture} failed with exit {result.exit_code}")
        crates[:] = [key.label for key in result.captured]

    for i in range(rounds):
        for step in (plain_build, capture_build) if i % 2 == 0 else (capture_build, plain_build):
            step()
    return {
        "fixture": fixture,
        "rounds": rounds,
        "plain_build_s": plain,
        "capture_build_s": captured,
        "plain_build_median_s": statistics.median(plain),
        "capture_build_median_s": statistics.median(captured),
        "capture_overhead_s": statistics.median(captured) - statistics.median(plain),
        "crates_captured": crates,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15, help="compiles per side for the shim overhead (default 15)")
    parser.add_argument("--fixture", default="debian_deps", choices=["debian_deps", "workspace", "single_bin"])
    parser.add_argument("--rounds", type=int, default=2, help="plain/capture build pairs (default 2)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="thinpatch bench ") as tmp:
        work = Path(tmp)
        (work / "shim").mkdir()
        shim = bench_shim_overhead(work / "shim", args.runs)
        fat = bench_fat_build(work, args.fixture, args.rounds)
    results = {"benchmark": "capture", "shim_overhead": shim, "fat_build": fat}
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    ms = lambda s: f"{s * 1000:.1f} ms"  # noqa: E731
    print(f"thinpatch-rustc overhead ({shim['runs']} interleaved runs, medians):")
    print(
        f"  small compile: rustc {ms(shim['compile_direct_median_s'])}, via shim {ms(shim['compile_shim_median_s'])}"
        f" -> added {ms(shim['shim_added_per_compile_s'])} per recorded call"
    )
    print(
        f"  probe -vV:     rustc {ms(shim['probe_direct_median_s'])}, via shim {ms(shim['probe_shim_median_s'])}"
        f" -> added {ms(shim['shim_added_per_probe_s'])}"
    )
    runs = lambda xs: ", ".join(f"{x:.2f}" for x in xs)  # noqa: E731
    print(f"from-scratch build of {fat['fixture']} (clean target each time, {fat['rounds']} alternating rounds):")
    print(f"  plain cargo build   median {fat['plain_build_median_s']:.2f} s  (runs: {runs(fat['plain_build_s'])})")
    print(
        f"  thinpatch capture   median {fat['capture_build_median_s']:.2f} s  (runs: {runs(fat['capture_build_s'])})"
        f"  -> {fat['capture_overhead_s']:+.2f} s; captured {', '.join(fat['crates_captured'])}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
