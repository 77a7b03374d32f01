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
