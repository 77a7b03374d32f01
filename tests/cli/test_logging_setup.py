import io
import json
import logging

import structlog

from daemon.cli.logging_setup import configure_logging


def test_json_lines_when_not_a_tty_and_stdlib_logs_join_the_pipeline():
    out = io.StringIO()
    configure_logging("debug", stream=out)
    structlog.get_logger("thinpatch.test").info("build finished", crate="app", total_ms=12.5)
    logging.getLogger("watchfiles.main").warning("%d changes detected", 3)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0]["event"] == "build finished" and lines[0]["crate"] == "app"
    assert lines[0]["level"] == "info" and "timestamp" in lines[0]
    assert lines[1]["event"] == "3 changes detected" and lines[1]["logger"] == "watchfiles.main"


def test_environment_values_are_never_rendered():
    out = io.StringIO()
    configure_logging("info", stream=out)
    structlog.get_logger().info("replaying", env={"AWS_SECRET_ACCESS_KEY": "hunter2"})
    assert "hunter2" not in out.getvalue()
    assert json.loads(out.getvalue())["env"] == "<redacted>"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _fail_with_a_secret_in_scope():
    env = {"AWS_SECRET_ACCESS_KEY": "hunter2-in-a-local"}  # noqa: F841  (a frame local, as in a replay)
    raise RuntimeError("the compiler crashed")


def test_tracebacks_on_a_terminal_never_show_locals_even_with_rich():
    import rich  # noqa: F401  (the test extras install it: rich is what would print locals)

    for json_lines in (False, True):
        out = _Terminal() if not json_lines else io.StringIO()
        configure_logging("info", stream=out, json_lines=json_lines)
        try:
            _fail_with_a_secret_in_scope()
        except RuntimeError:
            structlog.get_logger("thinpatch.engine").exception("build crashed")
        text = out.getvalue()
        assert "the compiler crashed" in text and "_fail_with_a_secret_in_scope" in text  # the traceback is there
        assert "hunter2-in-a-local" not in text, text


def test_every_command_replaces_structlogs_default_renderer(monkeypatch, capsys):
    """`thinpatch patch` and the others log through the same pipeline (none of structlog's
    defaults, whose console tracebacks print locals)."""
    import sys

    from daemon.cli.main import main

    monkeypatch.setattr(sys, "argv", ["thinpatch", "status", "--socket", "/nonexistent/x.sock"])
    assert main() == 1
    try:
        _fail_with_a_secret_in_scope()
    except RuntimeError:
        structlog.get_logger("thinpatch.patcher").exception("build crashed")
    err = capsys.readouterr().err
    assert "build crashed" in err and "hunter2-in-a-local" not in err
