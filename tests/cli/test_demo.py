"""`thinpatch demo`: the scripted run end to end (real cargo, daemon, app and saves), its
interactive mode, a machine without cargo, and the pure script it plays."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest

from daemon.cli.demo import copy_bundled_app
from daemon.cli.demo_script import (
    COMPILE_ERROR,
    PATCH,
    SCENE_FILE,
    STEPS,
    StepResult,
    Tick,
    compile_error_location,
    counters_increase,
    parse_tick,
    summary_table,
)
from daemon.cli.terminal import Style, strip_ansi

BUNDLED_APP = Path(__file__).parents[2] / "daemon" / "data" / "demo_app"
REPO = Path(__file__).parents[2]


def demo_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "daemon", "demo", *args]


def process_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention ``text`` (a demo's temp dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{entry.name}: {cmdline}")
    return found


def expected_error_line() -> int:
    source = (BUNDLED_APP / SCENE_FILE).read_text()
    for step in STEPS:
        if step.kind == COMPILE_ERROR:
            return step.edited_line(source)
        source = step.apply(source)
    raise AssertionError("no compile-error step")


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def demo_run():
    started = time.monotonic()
    out = subprocess.run(demo_command("--json"), capture_output=True, text=True, timeout=600, cwd=REPO)
    took = time.monotonic() - started
    return out, took


@pytest.mark.cargo
def test_demo_exits_0_and_reports_every_step_observed(demo_run):
    out, took = demo_run
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["ok"] is True and summary["problem"] is None
    steps = summary["steps"]
    assert [s["name"] for s in steps] == [s.name for s in STEPS]
    assert all(s["status"] == "passed" for s in steps), steps
    assert summary["counter_never_reset"] is True
    print(f"demo took {took:.1f} s (capture {summary['capture_s']} s)")


@pytest.mark.cargo
def test_demo_patch_steps_show_the_new_output_and_their_timings(demo_run):
    summary = json.loads(demo_run[0].stdout)
    for step, reported in zip(STEPS, summary["steps"]):
        if step.kind != PATCH:
            continue
        assert reported["outcome"] == "patch-ready", reported
        assert set(reported["timings"]) == {
            "rustc_ms", "link_ms", "verify_ms", "analysis_ms", "analysis_prints_ms", "analysis_judge_ms",
            "analysis_cpu_ms", "analysis_after_link_ms", "total_ms",
        }
        assert reported["timings"]["total_ms"] > 0
        tick = parse_tick(reported["output"])
        assert tick is not None and tick.counter == reported["counter"]
        assert step.shows(tick), (step.expected, reported["output"])
    first, second, third, _, fix = (parse_tick(s["output"]) for s in summary["steps"])
    assert first.title == "Hello, hot-patched world!"
    assert second.formula == f"n * n = {second.counter ** 2}"
    assert third.extra == "letters=7 t=2 env=hello-from-the-environment"
    assert fix.formula == f"n * n + 1 = {fix.counter ** 2 + 1}"
    # Earlier edits stay in effect: the state of the code accumulates, the app is never restarted.
    assert fix.title == first.title and fix.extra == third.extra


@pytest.mark.cargo
def test_demo_compile_error_is_reported_with_file_and_line_and_the_app_keeps_running(demo_run):
    summary = json.loads(demo_run[0].stdout)
    [failed] = [s for s in summary["steps"] if s["kind"] == COMPILE_ERROR]
    assert failed["outcome"] == "build-failed"
    assert failed["error"]["file"] == SCENE_FILE
    assert failed["error"]["line"] == expected_error_line()
    assert "&str" in failed["error"]["message"]
    # The app still runs the previous patch: its formula is n * n for a later counter.
    tick = parse_tick(failed["output"])
    assert tick.formula == f"n * n = {tick.counter ** 2}"
    assert f"{SCENE_FILE}:{expected_error_line()}" in demo_run[0].stderr


@pytest.mark.cargo
def test_demo_counter_strictly_increases_across_steps(demo_run):
    counters = [s["counter"] for s in json.loads(demo_run[0].stdout)["steps"]]
    assert None not in counters
    assert all(b > a for a, b in itertools.pairwise(counters)), counters


@pytest.mark.cargo
def test_demo_shows_progress_and_a_summary_table(demo_run):
    stderr = demo_run[0].stderr
    for number in range(1, len(STEPS) + 1):
        assert f"step {number}/{len(STEPS)}" in stderr
    header = next(line for line in stderr.splitlines() if line.startswith("step  edit"))
    assert "rustc ms" in header and "counter" in header
    assert re.search(r"All 5 steps observed in [\d.]+ s", stderr)


@pytest.mark.cargo
def test_demo_output_fits_100_columns_names_no_deleted_path_and_ends_with_the_next_step(demo_run):
    stderr = demo_run[0].stderr
    summary = json.loads(demo_run[0].stdout)
    assert "\x1b[" not in stderr  # not a terminal: no colour
    assert [line for line in stderr.splitlines() if len(line) > 100] == []
    assert summary["directory"] not in stderr
    assert "passed (" not in stderr
    ending = stderr.rstrip().splitlines()[-3:]
    assert ending[1].split()[:2] == ["thinpatch", "init"] and ending[2].split()[:2] == ["thinpatch", "run"]


@pytest.mark.cargo
def test_demo_leaves_no_process_and_no_temp_dir(demo_run):
    summary = json.loads(demo_run[0].stdout)
    assert process_gone(summary["app_pid"])
    assert summary["directory"] and not Path(summary["directory"]).exists()
    assert processes_mentioning(summary["directory"]) == []


@pytest.mark.cargo
def test_interactive_mode_patches_a_users_edit_and_cleans_up_on_ctrl_c():
    proc = subprocess.Popen(
        demo_command("--interactive", "--keep", "--json"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )
    lines: list[str] = []
    seen = threading.Event()
    wanted: list[str] = []

    def pump() -> None:
        assert proc.stderr is not None
        try:
            for line in proc.stderr:
                lines.append(line.rstrip("\n"))
                if wanted and wanted[0] in line:
                    seen.set()
        except ValueError:
            pass  # communicate() below closed the pipe: what is left, it read

    def wait_for(text: str, timeout: float = 120) -> None:
        seen.clear()
        wanted[:] = [text]
        if any(text in line for line in lines):
            return
        assert seen.wait(timeout), "\n".join(lines[-30:])

    threading.Thread(target=pump, daemon=True).start()
    try:
        wait_for("Press Ctrl-C")
        pid = int(re.search(r"app running \(pid (\d+)\)", "\n".join(lines)).group(1))
        index = next(i for i, line in enumerate(lines) if line.startswith("Edit this file")) + 1
        scene = Path(lines[index].strip())
        assert scene.name == "scene.rs" and scene.exists()
        text = scene.read_text()
        tmp = scene.with_name(".scene.rs.swp-save")
        tmp.write_text(text.replace('String::from("Hello, hot-patched world!")', 'String::from("edited by hand")'))
        os.replace(tmp, scene)
        wait_for("| edited by hand |")
        assert process_gone(pid, timeout=0.2) is False  # still running while interactive
        proc.send_signal(signal.SIGINT)
        stdout, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        # --keep: the test removes the demo's directory itself.
        announced = re.search(r"the example app is in (.+)/app$", "\n".join(lines), re.M)
        directory = Path(announced.group(1)) if announced else None
    try:
        assert proc.returncode == 0, "\n".join(lines[-30:])
        summary = json.loads(stdout)
        assert summary["ok"] is True and summary["kept"] is True
        assert Path(summary["directory"]) == directory
        assert process_gone(pid)
        assert (directory / "app" / SCENE_FILE).exists()
        assert processes_mentioning(str(directory)) == []
    finally:
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


def test_without_cargo_on_path_it_fails_saying_how_to_install_rust_and_starts_nothing():
    path = os.pathsep.join(
        d for d in os.environ.get("PATH", "").split(os.pathsep) if d and not os.path.exists(os.path.join(d, "cargo"))
    )
    env = dict(os.environ, PATH=path)
    out = subprocess.run(demo_command("--json"), capture_output=True, text=True, timeout=60, env=env, cwd=REPO)
    assert out.returncode != 0
    assert "cargo was not found on PATH" in out.stderr
    assert "rustup" in out.stderr and "https://rustup.rs" in out.stderr
    summary = json.loads(out.stdout)
    assert summary["ok"] is False and summary["app_pid"] is None and summary["directory"] is None


# --------------------------------------------------------------------------- the script (pure)


def test_the_scripted_edits_apply_in_order_to_the_bundled_app():
    source = (BUNDLED_APP / SCENE_FILE).read_text()
    for step in STEPS:
        edited = step.apply(source)
        assert edited != source
        changed_line = step.edited_line(source)
        assert edited.splitlines()[changed_line - 1] != source.splitlines()[changed_line - 1]
        source = edited
    assert 'n * n + 1' in source and "BTreeMap" in source and '+ "1"' not in source


def test_the_bundled_app_depends_only_on_the_bundled_client_crate_and_has_no_build_output():
    manifest = tomllib.loads((BUNDLED_APP / "Cargo.toml").read_text())
    assert manifest["dependencies"] == {"thinpatch-client": {"path": "../thinpatch-client"}}
    assert (BUNDLED_APP / "../thinpatch-client/Cargo.toml").is_file()
    client = tomllib.loads((BUNDLED_APP / "../thinpatch-client/Cargo.toml").read_text())
    assert client.get("dependencies", {}) == {}
    assert not (BUNDLED_APP / "target").exists()
    # The app uses no std API the "new std API" step introduces.
    main_sources = "".join(p.read_text() for p in (BUNDLED_APP / "src").glob("*.rs"))
    assert "BTreeMap" not in main_sources and "env::var" not in main_sources


def test_the_demo_copies_the_app_with_the_client_crate_beside_it(tmp_path):
    copy_bundled_app(tmp_path / "app")
    assert (tmp_path / "app" / SCENE_FILE).is_file() and (tmp_path / "app" / "Cargo.lock").is_file()
    assert (tmp_path / "thinpatch-client" / "src" / "lib.rs").is_file()
    assert not (tmp_path / "thinpatch-client" / "target").exists()


def test_a_step_refuses_to_apply_when_its_text_is_missing():
    with pytest.raises(ValueError):
        STEPS[1].apply("fn main() {}")


def test_parse_tick():
    tick = parse_tick("TICK 12 | Hello | n * n = 144 | extra text")
    assert tick == Tick(12, "Hello", "n * n = 144", "extra text", "TICK 12 | Hello | n * n = 144 | extra text")
    assert parse_tick("PATCHED id=3 entries=4") is None
    assert parse_tick("TICK x | a | b | c") is None
    assert parse_tick("TICK 1 | a | b") is None


def test_compile_error_location_takes_the_first_primary_error_span():
    event = {
        "type": "build-failed",
        "diagnostics": [
            {
                "level": "warning",
                "message": "unused",
                "spans": [{"file_name": "/w/src/a.rs", "line_start": 1, "is_primary": True}],
            },
            {
                "level": "error",
                "message": "cannot add",
                "spans": [
                    {"file_name": "/w/src/lib.rs", "line_start": 2, "column_start": 1, "is_primary": False},
                    {"file_name": "/w/src/scene.rs", "line_start": 13, "column_start": 33, "is_primary": True},
                ],
            },
        ],
    }
    location = compile_error_location(event, relative_to="/w")
    assert (location.file, location.line, location.column, location.message) == ("src/scene.rs", 13, 33, "cannot add")
    assert compile_error_location(event).file == "/w/src/scene.rs"
    assert compile_error_location({"diagnostics": []}) is None


def test_counters_must_strictly_increase():
    def at(*counters):
        return [StepResult(i, "s", "", PATCH, "", counter=c) for i, c in enumerate(counters)]

    assert counters_increase(at(3, 5, 9))
    assert counters_increase(at(3, None, 4))
    assert not counters_increase(at(3, 5, 5))
    assert not counters_increase(at(7, 2))


def test_summary_table_has_a_row_per_step():
    results = [
        StepResult(
            1,
            "changed string",
            "",
            PATCH,
            "",
            status="passed",
            outcome="patch-ready",
            timings={"rustc_ms": 300.4, "link_ms": 20, "verify_ms": 3, "total_ms": 330},
            counter=4,
            output="TICK 4 | Hi | n + n = 8 | none",
        ),
        StepResult(2, "changed formula", "", PATCH, "", status="failed", problem="no build within 120 s"),
    ]
    table = summary_table(results).splitlines()
    assert len(table) == 6  # headers, then a row of figures and a line of detail per step
    assert table[2].split()[:3] == ["1", "changed", "string"] and "300" in table[2] and "patched" in table[2]
    assert table[3].strip() == "Hi | n + n = 8 | none"
    assert "FAILED" in table[4] and table[5].strip() == "no build within 120 s"


def test_summary_table_fits_100_columns_and_reads_naturally_in_colour_and_plain():
    long_output = "TICK 1234 | Hello, hot-patched world! | n * n + 1 = 1522757 | letters=7 t=2 env=" + "x" * 80
    results = [
        StepResult(
            i,
            step.name,
            step.description,
            step.kind,
            step.expected,
            status="passed",
            outcome="build-failed" if step.kind == COMPILE_ERROR else "patch-ready",
            timings={"rustc_ms": 12345.6, "link_ms": 20, "verify_ms": 3, "total_ms": 23456.7},
            seen_ms=34567.8,
            counter=1234,
            output=long_output,
        )
        for i, step in enumerate(STEPS, 1)
    ]
    plain = summary_table(results)
    assert max(len(line) for line in plain.splitlines()) <= 100
    assert "passed (" not in plain and "build-failed" not in plain
    assert [re.split(r"\s{2,}", line)[2] for line in plain.splitlines()[2::2]] == [
        "error shown" if s.kind == COMPILE_ERROR else "patched" for s in STEPS
    ]
    coloured = summary_table(results, Style(True))
    assert "\x1b[32mpatched\x1b[0m" in coloured and strip_ansi(coloured) == plain


@pytest.mark.cargo
def test_a_failing_cargo_build_shows_cargos_error_exits_1_and_removes_its_dir():
    env = dict(os.environ, RUSTFLAGS="-C no-such-option")
    out = subprocess.run(demo_command("--json"), capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert out.returncode == 1
    assert "unknown codegen option: `no-such-option`" in out.stderr  # cargo's own error
    summary = json.loads(out.stdout)
    assert "cargo build" in summary["problem"] and "exit code" in summary["problem"]
    assert "cargo new hello" in summary["hint"]
    assert summary["app_pid"] is None and not Path(summary["directory"]).exists()


@pytest.mark.cargo
def test_sigterm_in_the_middle_stops_the_app_and_the_daemon_and_exits_non_zero():
    proc = subprocess.Popen(demo_command("--json"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stderr is not None
    progress = []
    for line in proc.stderr:
        progress.append(line)
        if line.startswith("step 2/"):
            break
    else:
        proc.wait()
        raise AssertionError("".join(progress))
    proc.send_signal(signal.SIGTERM)
    stdout, rest = proc.communicate(timeout=30)
    assert proc.returncode == 1, "".join(progress) + rest
    summary = json.loads(stdout)
    assert summary["interrupted"] is True and summary["problem"] == "interrupted before every step ran"
    assert summary["steps"][0]["status"] == "passed"
    assert {s["status"] for s in summary["steps"][1:]} <= {"passed", "interrupted", "not run"}
    assert process_gone(summary["app_pid"])
    assert not Path(summary["directory"]).exists()
    assert processes_mentioning(summary["directory"]) == []
