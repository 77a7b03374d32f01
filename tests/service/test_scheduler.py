import anyio
import pytest

from daemon.service.scheduler import WARM_UP, BuildRequest, WorkspaceScheduler


def req(*files, crate="app"):
    return BuildRequest("/w", frozenset({(crate, "bin")}), frozenset(files))


class Recorder:
    """A build that takes `duration` seconds and records what it saw finish."""

    def __init__(self, duration=0.2):
        self.duration = duration
        self.started = []
        self.finished = []
        self.content = None

    async def __call__(self, request):
        self.started.append(request)
        seen = self.content  # what the "source" held when this build began
        await anyio.sleep(self.duration)
        self.finished.append((request, seen))


@pytest.mark.asyncio
async def test_restart_cancels_running_build_and_final_build_sees_final_content():
    rec = Recorder(duration=0.2)
    sched = WorkspaceScheduler(rec, policy="restart")
    async with anyio.create_task_group() as tg:
        tg.start_soon(sched.run)
        for i in range(50):  # fifty saves within a second
            rec.content = i
            sched.submit(req(f"/w/src/f{i % 3}.rs"))
            await anyio.sleep(0.015)
        await anyio.sleep(0.05)
        await sched.wait_idle()
        tg.cancel_scope.cancel()
    assert len(rec.finished) == 1, rec.finished
    final_request, final_content = rec.finished[-1]
    assert final_content == 49
    # Files of cancelled builds are folded into the build that completes.
    assert final_request.files == {"/w/src/f0.rs", "/w/src/f1.rs", "/w/src/f2.rs"}
    assert sched.stats.cancelled == len(rec.started) - 1


@pytest.mark.asyncio
async def test_queue_policy_finishes_current_build_then_builds_merged_newer_edits():
    rec = Recorder(duration=0.2)
    sched = WorkspaceScheduler(rec, policy="queue")
    async with anyio.create_task_group() as tg:
        tg.start_soon(sched.run)
        rec.content = "first"
        sched.submit(req("/w/a.rs"))
        await anyio.sleep(0.05)
        for i in range(10):
            rec.content = f"edit {i}"
            sched.submit(req("/w/b.rs", crate="lib"))
            await anyio.sleep(0.01)
        await anyio.sleep(0.01)
        await sched.wait_idle()
        tg.cancel_scope.cancel()
    assert [r.files for r, _ in rec.finished] == [{"/w/a.rs"}, {"/w/b.rs"}]
    assert rec.finished[-1][1] == "edit 9"
    assert sched.stats.cancelled == 0


def test_unknown_policy_is_a_clear_error():
    with pytest.raises(ValueError, match="restart, queue"):
        WorkspaceScheduler(lambda r: None, policy="sometimes")


async def _saves_every(sched, rec, interval, count):
    for i in range(count):
        rec.content = i
        sched.submit(req("/w/src/main.rs"))
        await anyio.sleep(interval)


@pytest.mark.asyncio
@pytest.mark.parametrize("settle_s, most_builds_started", [(0.25, 3), (0.0, None)])
async def test_a_burst_of_saves_waits_for_the_burst_to_end(settle_s, most_builds_started):
    # Saves every 100 ms for a second, each build taking 0.15 s: the watcher's pace when a
    # file is saved over and over.
    rec = Recorder(duration=0.15)
    sched = WorkspaceScheduler(rec, policy="restart", burst_settle_s=settle_s)
    async with anyio.create_task_group() as tg:
        tg.start_soon(sched.run)
        await _saves_every(sched, rec, 0.1, 10)
        await anyio.sleep(0.05)
        await sched.wait_idle()
        tg.cancel_scope.cancel()
    assert rec.finished[-1][1] == 9  # the final build saw the final content
    if most_builds_started is None:
        assert len(rec.started) >= 8  # without settling, nearly every save starts a build
    else:
        assert len(rec.started) <= most_builds_started, len(rec.started)


@pytest.mark.asyncio
async def test_a_single_save_is_not_delayed_by_the_burst_rule():
    rec = Recorder(duration=0.0)
    sched = WorkspaceScheduler(rec, policy="restart")
    async with anyio.create_task_group() as tg:
        tg.start_soon(sched.run)
        started = anyio.current_time()
        sched.submit(req("/w/a.rs"))
        await anyio.sleep(0.01)
        await sched.wait_idle()
        tg.cancel_scope.cancel()
    assert anyio.current_time() - started < 0.2


def warm_up():
    return BuildRequest("/w", frozenset({("app", "bin"), ("tool", "bin")}), frozenset(), reason=WARM_UP)


@pytest.mark.asyncio
async def test_a_save_during_the_warm_up_cancels_it_and_builds_only_what_was_saved():
    rec = Recorder(duration=0.3)
    sched = WorkspaceScheduler(rec, policy="restart")
    async with anyio.create_task_group() as tg:
        tg.start_soon(sched.run)
        sched.submit(warm_up())
        await anyio.sleep(0.05)
        sched.submit(req("/w/src/main.rs"))
        await anyio.sleep(0.05)
        await sched.wait_idle()
        tg.cancel_scope.cancel()
    assert [r.reason for r in rec.started] == [WARM_UP, "edit"]
    [(finished, _)] = rec.finished
    assert finished.crates == {("app", "bin")} and finished.reason == "edit"  # not the warm-up's programs


@pytest.mark.asyncio
async def test_a_pending_warm_up_gives_way_to_a_save_even_when_queueing():
    rec = Recorder(duration=0.2)
    sched = WorkspaceScheduler(rec, policy="queue")
    async with anyio.create_task_group() as tg:
        tg.start_soon(sched.run)
        sched.submit(req("/w/a.rs", crate="lib"))
        await anyio.sleep(0.05)
        sched.submit(warm_up())  # queued behind the running build
        sched.submit(req("/w/src/main.rs"))
        await sched.wait_idle()
        tg.cancel_scope.cancel()
    started = [(r.reason, sorted(r.crates)) for r in rec.started]
    assert started == [("edit", [("lib", "bin")]), ("edit", [("app", "bin")])]
