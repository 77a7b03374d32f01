"""`thinpatch serve`'s defaults are the daemon's own."""

from __future__ import annotations

import argparse

from daemon.cli.commands import serve
from daemon.service.watcher import DEFAULT_DEBOUNCE_MS


def test_serve_offers_the_watchers_default_debounce():
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    assert parser.parse_args([]).debounce_ms == DEFAULT_DEBOUNCE_MS
    assert f"default: {DEFAULT_DEBOUNCE_MS})" in parser.format_help()
