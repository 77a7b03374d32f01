"""Fixtures shared by the end-to-end modules.

``daemon`` is a real `thinpatch serve` for the module, watching the module's ``workspace``.
A module with a workspace of its own (a captured copy of a fixture) defines ``workspace``;
the fault modules use the default, the shared capture of livehost (``captured``, see
tests/support/faults.py). ``host`` is the live Rust host of that workspace subscribed to the
daemon, and ``source`` the app's main.rs, whose text comes back after each test.

A module that needs another daemon (or source) defines its own fixture of that name, and
the fixtures here that depend on it use that one. ``shared`` and ``private`` are the two
sides of the second-user attack modules.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.support.daemon_process import save_like_an_editor, serving
from tests.support.faults import shared_capture, start_host
from tests.support.other_user import shared_dir


@pytest.fixture
def shared():
    """A directory every user may write in, like /tmp, for a second user's plants."""
    path = shared_dir("tp-shared-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def private(tmp_path):
    """The victim's own state (registry, daemon socket, captures), in a 0700 directory."""
    os.chmod(tmp_path, 0o700)
    return tmp_path


@pytest.fixture(scope="module")
def captured(tmp_path_factory, capture_state_dir):
    return shared_capture(tmp_path_factory)


@pytest.fixture(scope="module")
def workspace(captured):
    return captured.workspace


@pytest.fixture(scope="module")
def daemon(workspace, tmp_path_factory):
    with serving(workspace, tmp_path_factory.mktemp("sock")) as d:
        yield d


@pytest.fixture(scope="module")
def host(workspace, daemon):
    h = start_host(workspace, daemon.socket_path)
    yield h
    h.close()


@pytest.fixture
def source(captured, daemon, host):
    """The app's main.rs; its original text comes back after the test (a build follows)."""
    path = captured.app_source
    original = path.read_text()
    yield path
    if not path.exists() or path.read_text() != original:
        save_like_an_editor(path, original)
