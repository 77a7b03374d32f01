"""Every save ends with the saved code running: patched in place when a patch carries it,
rebuilt and restarted when it can't, and said so. A real cargo project, a real `run` under a
pseudo-terminal, the real client crate reporting its entry points (subsecond's rules)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.end_to_end.test_run_new_user import assert_nothing_left, entry_points_reported, new_project
from tests.end_to_end.test_run_relaunch import start_run, stop_run
from tests.support.daemon_process import save_like_an_editor
from tests.support.protocol_harness import short_socket_path

pexpect = pytest.importorskip("pexpect")
pytestmark = pytest.mark.cargo

# `frame` is the hot entry point and keeps state in `World`; `banner` runs from main's loop,
# where no patch reaches.
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
    "banner one"
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

LINE = r"frame (\d+) score (\d+) says (\S+) \| (banner \w+)"


def read_line(child) -> tuple[int, int, str, str]:
    child.expect(LINE)
    m = child.match
    return int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)


def until(child, says: str, banner: str | None = None) -> tuple[int, int]:
    """Lines until one shows the saved code; its frame number and score."""
    for _ in range(200):
        n, score, text, shown = read_line(child)
        if text == says and (banner is None or shown == banner):
            return n, score
    raise AssertionError(f"never printed {says!r} / {banner!r}")


def test_each_save_runs_the_saved_code_patched_or_restarted(tmp_path: Path, capture_state_dir) -> None:
    game = new_project(tmp_path)
    main = game / "src" / "main.rs"
    main.write_text(GAME_RS)
    socket_path = short_socket_path(tmp_path)
    child = start_run(game, socket_path, tmp_path / "terminal.txt")
    child.timeout = 90
    try:
        child.expect(r"running game \(host-debug\) \(pid (\d+)\)")
        pid = int(child.match.group(1))
        _, before = until(child, "v1")
        entry_points_reported(game, socket_path)

        # A hot edit: patched in place, the state goes on.
        save_like_an_editor(main, main.read_text().replace("says v1", "says v2"))
        child.expect(r"patched\S* frame\(\) in \d+ ms[^:]*: game \(pid (\d+)\) runs the new code")
        assert int(child.match.group(1)) == pid
        _, score = until(child, "v2")
        assert score > before

        # A change no entry point reaches: built under capture, then restarted, and said why.
        save_like_an_editor(main, main.read_text().replace('"banner one"', '"banner two"'))
        child.expect(r"needs a restart\S*: banner\(\) is not reached from a hot entry point")
        child.expect(r"restarted\S* game \(pid (\d+)\): banner\(\) is not reached from a hot entry point; "
                     r"its state was lost")
        restarted = int(child.match.group(1))
        assert restarted != pid
        _, score = until(child, "v2", "banner two")
        assert score < 20  # a new process: the state started again
        entry_points_reported(game, socket_path)  # the new process's

        # And the restarted program is patched again, in place.
        save_like_an_editor(main, main.read_text().replace("says v2", "says v3"))
        child.expect(r"patched\S* frame\(\) in \d+ ms[^:]*: game \(pid (\d+)\) runs the new code")
        assert int(child.match.group(1)) == restarted
        until(child, "v3", "banner two")

        # `main` itself: the same.
        save_like_an_editor(main, main.read_text().replace("for n in 1.. {", "for n in 1000.. {"))
        child.expect(r"restarted\S* game \(pid (\d+)\): main\(\) is not reached from a hot entry point")
        n, _ = until(child, "v3", "banner two")
        assert n >= 1000

        # A field added to the state the hot function takes: never patched, restarted.
        grown = (main.read_text().replace("score: u64,\n", "score: u64,\n    lives: u64,\n")
                 .replace("World { score: 0 }", "World { score: 0, lives: 3 }")
                 .replace('says v3", world.score)', 'says v4", world.score + world.lives)'))
        save_like_an_editor(main, grown)
        child.expect(r"restarted\S* game \(pid (\d+)\): game::World's layout changed \(size 8 → 16 bytes; "
                     r"field `lives` added\); its state was lost")
        _, score = until(child, "v4", "banner two")
        assert score < 30

        # and taken out again: the running program has it now, so that is a layout change too
        save_like_an_editor(main, main.read_text().replace("lives: u64,", "").replace(", lives: 3", "")
                            .replace("world.score + world.lives", "world.score").replace("says v4", "says v5"))
        child.expect(r"restarted\S* game \(pid (\d+)\): game::World's layout changed \(size 16 → 8 bytes; "
                     r"field `lives` removed\)")
        until(child, "v5", "banner two")
    finally:
        stop_run(child, game, socket_path)
    terminal = (tmp_path / "terminal.txt").read_text()
    assert "internal error" not in terminal
    # "runs the new code" only for the saves a patch carried
    assert len(re.findall(r"runs the new code", terminal)) == 2, terminal
    assert_nothing_left(game, socket_path)


CLOSURE_RS = """\
use std::time::Duration;

struct Scene {
    name: &'static str,
}

fn draw(scene: &Scene) -> String {
    format!("{} drawn v1", scene.name)
}

fn main() {
    thinpatch_client::connect();
    let scene = Scene { name: "hall" };
    loop {
        println!("{}", thinpatch_client::call(|| draw(&scene)));
        std::thread::sleep(Duration::from_millis(100));
    }
}
"""


def test_a_pointer_sized_closure_entry_is_named_and_the_program_restarted(tmp_path: Path, capture_state_dir) -> None:
    game = new_project(tmp_path)
    main = game / "src" / "main.rs"
    main.write_text(CLOSURE_RS)
    socket_path = short_socket_path(tmp_path)
    child = start_run(game, socket_path, tmp_path / "terminal.txt")
    child.timeout = 90
    try:
        child.expect(r"running game \(host-debug\) \(pid (\d+)\)")
        child.expect("hall drawn v1")
        entry_points_reported(game, socket_path)
        save_like_an_editor(main, main.read_text().replace("drawn v1", "drawn v2"))
        child.expect(r"needs a restart\S*: draw\(\) runs only through a pointer-sized closure")
        child.expect(r"restarted\S* game \(pid \d+\)")
        child.expect("hall drawn v2")
    finally:
        stop_run(child, game, socket_path)
    assert "runs the new code" not in (tmp_path / "terminal.txt").read_text()
    assert_nothing_left(game, socket_path)
