"""Patches that really run: one live Rust process, real cargo/rustc/linker, real dlopen.

Every scenario edits the captured fixture's sources, runs `thinpatch patch --json` exactly
as a user would, feeds the result to the running host and checks what it prints. The host
keeps running across all scenarios, and its counter (a local in `main`) must never reset.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import copy_fixture
from tests.support.live_host import LiveHost

pytestmark = pytest.mark.cargo


@pytest.fixture(scope="module")
def captured_livehost(tmp_path_factory, capture_state_dir):
    from daemon.cli.capture_run import run_capture

    workspace = copy_fixture("livehost", tmp_path_factory.mktemp("live host"))
    result = run_capture(workspace)
    assert result.exit_code == 0, result
    return workspace


@pytest.fixture(scope="module")
def host(captured_livehost):
    h = LiveHost(captured_livehost / "target" / "debug" / "livehost", cwd=captured_livehost)
    yield h
    h.close()


class Sources:
    """Edit fixture files; every edit is undone when the test ends."""

    def __init__(self, root: Path):
        self.root = root
        self.saved: dict[Path, str] = {}

    def replace(self, rel: str, old: str, new: str) -> None:
        path = self.root / rel
        text = path.read_text()
        assert old in text, f"{old!r} not in {rel}"
        self.saved.setdefault(path, text)
        path.write_text(text.replace(old, new, 1))

    def restore(self) -> None:
        for path, text in self.saved.items():
            path.write_text(text)
        self.saved.clear()


@pytest.fixture
def sources(captured_livehost):
    s = Sources(captured_livehost)
    yield s
    s.restore()


def thinpatch_patch(workspace: Path, *extra: str) -> tuple[int, dict]:
    proc = subprocess.run(
        [sys.executable, "-m", "daemon", "patch", "--json", "--workspace", str(workspace), *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc.returncode, json.loads(proc.stdout)


def patch_and_apply(host: LiveHost, workspace: Path, *extra: str) -> dict:
    code, result = thinpatch_patch(workspace, *extra)
    assert code == 0, result
    assert host.apply(result).startswith("APPLIED"), host.transcript[-3:]
    return result


def counter_of(tick: dict) -> int:
    return int(tick["counter"])


def test_1_body_edit_in_the_bin_crate(host, captured_livehost, sources):
    before = host.tick()
    assert before["app"].startswith("app v1")
    sources.replace(
        "app/src/main.rs", 'format!("app v1 #{} calls={}", n, calls)', 'format!("app EDITED #{} calls={}", n, calls)'
    )
    result = patch_and_apply(host, captured_livehost)
    after = host.tick()
    assert after["app"].startswith("app EDITED")
    assert counter_of(after) == counter_of(before) + 1
    assert result["report"]["mapped"] > 0
    assert set(result["timings"]) == {
        "rustc_ms", "link_ms", "verify_ms", "analysis_ms", "analysis_prints_ms", "analysis_judge_ms",
        "analysis_cpu_ms", "analysis_after_link_ms", "total_ms",
    }


def test_2_edit_calls_std_functions_the_original_never_called(host, captured_livehost, sources, tmp_path):
    data = tmp_path / "note.txt"
    data.write_text("from a file")
    before = host.tick()
    sources.replace(
        "app/src/main.rs",
        "    // APP-EDIT\n",
        f"""    // APP-EDIT
    let home_set = std::env::var("PATH").is_ok();
    let text = std::fs::read_to_string({json.dumps(str(data))}).unwrap_or_default();
    let size = std::fs::metadata({json.dumps(str(data))}).map(|m| m.len()).unwrap_or(0);
    let mut tree = std::collections::BTreeMap::new();
    tree.insert("b", 2);
    tree.insert("a", 1);
    let keys: Vec<_> = tree.keys().collect();
    return format!("std path={{}} text={{}} size={{}} keys={{:?}} #{{}}", home_set, text, size, keys, n + calls * 0);
""",
    )
    patch_and_apply(host, captured_livehost)
    after = host.tick()
    assert after["app"] == f'std path=true text=from a file size=11 keys=["a", "b"] #{counter_of(before) + 1}'


def test_3_edit_calls_regex_and_serde_json_apis_the_original_never_used(host, captured_livehost, sources):
    sources.replace(
        "app/src/main.rs",
        "    // DEPS-EDIT\n",
        """    // DEPS-EDIT
    let escaped = regex::escape("a.b*c");
    let all: Vec<&str> = re.find_iter("xy 12 zw").map(|m| m.as_str()).collect();
    let value: serde_json::Value = serde_json::from_str(r#"{"k": [1, 2]}"#).unwrap();
    let pretty = serde_json::to_string_pretty(&value["k"]).unwrap().replace('\\n', "");
    return format!("deps escaped={} all={:?} pretty={} #{}", escaped, all, pretty, n);
""",
    )
    patch_and_apply(host, captured_livehost)
    after = host.tick()
    assert after["words"] == f'deps escaped=a\\.b\\*c all=["xy", "zw"] pretty=[  1,  2] #{after["counter"]}'


def test_3b_edit_calls_a_library_function_the_original_never_called(host, captured_livehost, sources):
    # counterlib::extras::shout is in an archive member the original link never needed; the
    # patch only rebuilds the bin crate, so the function must already be in the host.
    sources.replace(
        "app/src/main.rs",
        'format!("app v1 #{} calls={}", n, calls)',
        'format!("{} #{} calls={}", counterlib::extras::shout("app"), n, calls)',
    )
    patch_and_apply(host, captured_livehost)
    after = host.tick()
    assert after["app"].startswith("APP! #")


def test_4_edit_in_a_workspace_path_dependency_library(host, captured_livehost, sources):
    before = host.tick()
    sources.replace("counterlib/src/lib.rs", 'format!("lib v1 ticks={}", n)', 'format!("lib EDITED ticks={}", n)')
    result = patch_and_apply(host, captured_livehost, "--crate", "counterlib")
    assert result["edited_crate"] == "counterlib" and result["crate"] == "livehost"
    after = host.tick()
    assert after["lib"].startswith("lib EDITED")
    assert counter_of(after) == counter_of(before) + 1


def test_5_three_patches_in_a_row_then_revert(host, captured_livehost, sources):
    start = counter_of(host.tick())
    seen = []
    for version in ("alpha", "beta", "gamma"):
        sources.restore()
        sources.replace("app/src/main.rs", '"app v1 #{} calls={}"', f'"app {version} #{{}} calls={{}}"')
        patch_and_apply(host, captured_livehost)
        seen.append(host.tick())
    sources.restore()
    patch_and_apply(host, captured_livehost)
    reverted = host.tick()
    assert [t["app"].split(" #")[0] for t in seen] == ["app alpha", "app beta", "app gamma"]
    assert reverted["app"].startswith("app v1 #")
    assert [counter_of(t) for t in [*seen, reverted]] == [start + 1, start + 2, start + 3, start + 4]


def test_6_a_patch_that_cannot_load_is_rejected_and_the_process_is_unaffected(host, captured_livehost, sources):
    before = host.tick()
    sources.replace(
        "app/src/main.rs",
        "    // APP-EDIT\n",
        """    // APP-EDIT
    extern "C" {
        fn thinpatch_no_such_function_anywhere() -> u64;
    }
    let _ = unsafe { thinpatch_no_such_function_anywhere() };
""",
    )
    code, result = thinpatch_patch(captured_livehost)
    assert code == 1
    assert result["error"] == "patch-rejected"
    assert "thinpatch_no_such_function_anywhere" in result["missing_symbols"]
    assert "thinpatch capture" in result["action"]
    after = host.tick()
    assert host.alive()
    assert after["app"].split(" #")[0] == before["app"].split(" #")[0]
    assert counter_of(after) == counter_of(before) + 1


def test_7_statics_a_library_pub_static_keeps_its_value_a_bin_private_static_is_reported(
    host, captured_livehost, sources
):
    before = host.tick()
    ticks_before = int(before["lib"].rsplit("ticks=", 1)[1])
    # Patch the library function that increments the pub static: it must keep counting
    # from the running value, not restart from zero.
    sources.replace(
        "counterlib/src/lib.rs",
        "TICKS.fetch_add(1, Ordering::SeqCst) + 1",
        "TICKS.fetch_add(1, Ordering::SeqCst) + 1 + 0 * 7",
    )
    sources.replace("counterlib/src/lib.rs", 'format!("lib v1 ticks={}", n)', 'format!("lib STATIC ticks={}", n)')
    sources.replace("app/src/main.rs", '"app v1 #{} calls={}"', '"app STATIC #{} calls={}"')
    result = patch_and_apply(host, captured_livehost, "--crate", "counterlib")
    after = host.tick()
    assert after["lib"] == f"lib STATIC ticks={ticks_before + 1}"
    # The bin crate's private static can't bind to the host's copy: it starts over, and the
    # report says so, naming it and what to do.
    assert after["app"].endswith("calls=1")
    warnings = " ".join(result["report"]["warnings"])
    assert "livehost::GREETINGS" in warnings and "library crate" in warnings


def test_8_an_app_only_patch_keeps_an_earlier_library_edit(host, captured_livehost, sources):
    # Each `thinpatch patch` is a new process: the crates edited since the capture are
    # remembered in the session, and the host replaces its whole table with every patch.
    sources.replace("counterlib/src/lib.rs", 'format!("lib v1 ticks={}", n)', 'format!("lib KEPT ticks={}", n)')
    patch_and_apply(host, captured_livehost, "--crate", "counterlib")
    sources.replace("app/src/main.rs", '"app v1 #{} calls={}"', '"app LATER #{} calls={}"')
    result = patch_and_apply(host, captured_livehost)
    after = host.tick()
    assert after["app"].startswith("app LATER #") and after["lib"].startswith("lib KEPT "), after
    assert result["edited_crate"] == "livehost"
    assert set(result["report"]["rebuilt_crates"]) == {"counterlib", "livehost"}
