"""The source watcher against a real directory and real watchfiles events."""

from __future__ import annotations

import os
import shutil

import anyio
import pytest

from daemon.service.watcher import SourceWatcher, filter_watch_set, git_ignored, is_editor_temp, watch_roots


async def _next_batch(it, timeout=5.0):
    with anyio.fail_after(timeout):
        return await it.__anext__()


@pytest.fixture
def src(tmp_path):
    d = tmp_path / "crate dir" / "src"
    d.mkdir(parents=True)
    (d / "main.rs").write_text("fn main() {}\n")
    (d / "util.rs").write_text("pub fn f() {}\n")
    return d


async def _armed(watcher, timeout=5.0):
    # Until the OS watch is in place: writes from then on arrive as events (an earlier one
    # would only be found by the rescan after arming).
    with anyio.fail_after(timeout):
        await watcher.armed.wait()


@pytest.mark.asyncio
async def test_reports_a_real_edit(src):
    w = SourceWatcher([str(src / "main.rs"), str(src / "util.rs")])
    it = w.changes().__aiter__()

    async def edit():
        await _armed(w)
        (src / "main.rs").write_text("fn main() { println!(); }\n")
    async with anyio.create_task_group() as tg:
        tg.start_soon(edit)
        batch = await _next_batch(it)
    assert batch == {str(src / "main.rs")}
    w.stop()
    await it.aclose()


@pytest.mark.asyncio
async def test_same_content_save_is_ignored_but_next_real_change_is_seen(src):
    w = SourceWatcher([str(src / "main.rs"), str(src / "util.rs")])
    it = w.changes().__aiter__()

    async def edits():
        await _armed(w)
        (src / "main.rs").write_text("fn main() {}\n")  # identical bytes
        await anyio.sleep(0.3)
        (src / "util.rs").write_text("pub fn f() { 1; }\n")

    async with anyio.create_task_group() as tg:
        tg.start_soon(edits)
        batch = await _next_batch(it)
    assert batch == {str(src / "util.rs")}
    w.stop()
    await it.aclose()


@pytest.mark.asyncio
async def test_atomic_rename_save_is_a_change_of_the_target(src):
    target = src / "main.rs"
    w = SourceWatcher([str(target)])
    it = w.changes().__aiter__()

    async def save_like_an_editor():
        await _armed(w)
        tmp = src / ".main.rs.swp"
        tmp.write_text("fn main() { /* saved */ }\n")
        os.replace(tmp, target)

    async with anyio.create_task_group() as tg:
        tg.start_soon(save_like_an_editor)
        batch = await _next_batch(it)
    assert batch == {str(target)}
    w.stop()
    await it.aclose()


@pytest.mark.asyncio
async def test_unwatched_and_temp_files_do_not_trigger(src):
    w = SourceWatcher([str(src / "main.rs")])
    it = w.changes().__aiter__()

    async def noise_then_a_watched_edit():
        await _armed(w)
        (src / "notes.txt").write_text("x")
        (src / "main.rs~").write_text("x")
        (src / "4913").write_text("")
        await anyio.sleep(0.6)  # a batch the noise caused would arrive before the edit below
        (src / "main.rs").write_text("fn main() { 1; }\n")

    async with anyio.create_task_group() as tg:
        tg.start_soon(noise_then_a_watched_edit)
        batch = await _next_batch(it)
    # The first batch is the watched file's edit, alone: the noise made none, and the watch works.
    assert batch == {str(src / "main.rs")}
    w.stop()
    await it.aclose()


@pytest.mark.asyncio
async def test_fifty_rapid_saves_give_few_batches_and_final_content(src):
    target = src / "main.rs"
    w = SourceWatcher([str(target)], debounce_ms=50)
    it = w.changes().__aiter__()
    batches = []

    async def burst():
        await _armed(w)
        for i in range(50):
            target.write_text(f"fn main() {{ {i}; }}\n")
            await anyio.sleep(0.01)

    async def collect():
        while True:
            batches.append(await it.__anext__())

    async with anyio.create_task_group() as tg:
        tg.start_soon(collect)
        await burst()
        await anyio.sleep(1.0)
        tg.cancel_scope.cancel()
    assert 1 <= len(batches) <= 10, len(batches)
    assert target.read_text() == "fn main() { 49; }\n"
    w.stop()
    await it.aclose()


@pytest.mark.asyncio
async def test_deleted_file_is_reported(src):
    target = src / "util.rs"
    w = SourceWatcher([str(target), str(src / "main.rs")])
    it = w.changes().__aiter__()

    async def delete():
        await _armed(w)
        target.unlink()

    async with anyio.create_task_group() as tg:
        tg.start_soon(delete)
        batch = await _next_batch(it)
    assert batch == {str(target)}
    w.stop()
    await it.aclose()


@pytest.mark.asyncio
async def test_recreated_directory_rearms_the_watch(src):
    target = src / "main.rs"
    w = SourceWatcher([str(target)])
    it = w.changes().__aiter__()

    async def replace_dir():
        await _armed(w)
        shutil.rmtree(src)
        await anyio.sleep(0.3)
        src.mkdir()
        target.write_text("fn main() { /* restored, changed */ }\n")

    async with anyio.create_task_group() as tg:
        tg.start_soon(replace_dir)
        seen = set()
        with anyio.fail_after(8):
            while True:
                seen |= await it.__anext__()
                if target.exists() and "restored" in target.read_text() and w._digests.get(str(target)):
                    break
    assert str(target) in seen
    # And the re-armed watch still sees later edits.
    async def edit_again():
        await anyio.sleep(0.3)
        target.write_text("fn main() { /* again */ }\n")

    async with anyio.create_task_group() as tg:
        tg.start_soon(edit_again)
        batch = await _next_batch(it)
    assert batch == {str(target)}
    assert w.restarts >= 1
    w.stop()
    await it.aclose()


def test_filter_watch_set_drops_target_git_and_temp_files():
    files = {
        "/w/src/main.rs",
        "/w/target/debug/build/x/out/gen.rs",
        "/w/.git/HEAD",
        "/w/src/.#main.rs",
        "/w/src/secret.rs",
    }
    assert filter_watch_set(files, ["/w/target"], ignored=["/w/src/secret.rs"]) == {"/w/src/main.rs"}


def test_git_ignored_asks_git(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    import subprocess

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("generated.rs\n")
    paths = [str(tmp_path / "generated.rs"), str(tmp_path / "main.rs")]
    assert git_ignored(paths, str(tmp_path)) == {str(tmp_path / "generated.rs")}


def test_editor_temp_names():
    for name in ["a.rs~", ".a.rs.swp", ".#a.rs", "#a.rs#", "4913"]:
        assert is_editor_temp(f"/w/{name}"), name
    assert not is_editor_temp("/w/a.rs")


def test_watch_roots_fall_back_to_existing_ancestor(tmp_path):
    assert watch_roots([str(tmp_path / "gone" / "deeper" / "x.rs")]) == {str(tmp_path)}


@pytest.mark.asyncio
async def test_an_edit_made_before_the_watch_is_armed_is_not_lost(src):
    target = src / "main.rs"
    w = SourceWatcher([str(target)])  # digests are read here
    target.write_text("fn main() { /* saved before the OS watch existed */ }\n")
    it = w.changes().__aiter__()
    batch = await _next_batch(it)
    assert batch == {str(target)}
    assert w.armed.is_set()
    w.stop()
    await it.aclose()

