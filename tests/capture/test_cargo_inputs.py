"""Which files cargo would read before it builds, the refusal that names one someone else
could have written, and the whole-path ownership rule behind it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from capture.cargo_inputs import (
    CONFIG,
    HOME_CONFIG,
    TOOLCHAIN,
    WORKSPACE,
    CargoInput,
    cargo_inputs,
    configs_seen,
    names_tools,
    untrusted_input,
)
from capture.trust import Distrust, foreign_writer

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")


def test_every_ancestor_manifest_config_and_toolchain_file_then_cargo_home():
    inputs = cargo_inputs("/srv/shared/proj", {"CARGO_HOME": "/home/me/.cargo"})
    assert inputs[:5] == [
        CargoInput("/srv/shared/proj/Cargo.toml", WORKSPACE),
        CargoInput("/srv/shared/proj/.cargo/config.toml", CONFIG),
        CargoInput("/srv/shared/proj/.cargo/config", CONFIG),
        CargoInput("/srv/shared/proj/rust-toolchain.toml", TOOLCHAIN),
        CargoInput("/srv/shared/proj/rust-toolchain", TOOLCHAIN),
    ]
    paths = [i.path for i in inputs]
    assert "/srv/shared/Cargo.toml" in paths and "/srv/shared/.cargo/config.toml" in paths
    assert "/Cargo.toml" in paths and "/.cargo/config" in paths
    assert inputs[-2:] == [
        CargoInput("/home/me/.cargo/config.toml", HOME_CONFIG),
        CargoInput("/home/me/.cargo/config", HOME_CONFIG),
    ]


def test_cargo_home_defaults_to_home_and_is_listed_once_when_it_is_also_above():
    inputs = cargo_inputs("/home/me/proj", {"HOME": "/home/me"})
    paths = [i.path for i in inputs]
    assert paths.count("/home/me/.cargo/config.toml") == 1
    assert CargoInput("/home/me/.cargo/config.toml", CONFIG) in inputs


def test_the_refusal_names_the_file_its_owner_and_the_fix():
    planted = "/srv/shared/Cargo.toml"
    message = untrusted_input(
        "/srv/shared/proj",
        {"HOME": "/home/me"},
        exists=lambda p: p in (planted, "/srv/shared/proj/Cargo.toml"),
        distrust_of=lambda p: Distrust(p, "is owned by mallory (uid 1001)") if p == planted else None,
    )
    assert message == (
        "refusing to build: /srv/shared/Cargo.toml is owned by mallory (uid 1001), and cargo would read it as "
        "this project's workspace (its members' build scripts run as you). Move the project out of /srv/shared, "
        "or have root or you own /srv/shared/Cargo.toml and make it writable only by you."
    )


def test_a_directory_above_a_config_is_named_with_the_config():
    config = "/srv/team/.cargo/config.toml"
    message = untrusted_input(
        "/srv/team/proj",
        {"HOME": "/home/me"},
        exists=lambda p: p == config,
        distrust_of=lambda p: Distrust("/srv/team/.cargo", "is writable by everyone (mode 0777)"),
    )
    assert message is not None
    assert message.startswith(f"refusing to build: cargo would read {config} as configuration")
    assert "but /srv/team/.cargo above it is writable by everyone (mode 0777)" in message
    assert "Move the project out of /srv/team" in message


def test_cargo_home_config_suggests_another_cargo_home():
    home_config = "/shared/cargo/config.toml"
    message = untrusted_input(
        "/home/me/proj",
        {"CARGO_HOME": "/shared/cargo"},
        exists=lambda p: p == home_config,
        distrust_of=lambda p: Distrust(p, "is owned by uid 4242"),
    )
    assert message is not None and "Point CARGO_HOME at a directory of your own" in message


def test_nothing_to_say_when_every_file_is_trusted_or_absent():
    assert untrusted_input("/a/b", {"HOME": "/h"}, exists=lambda p: True, distrust_of=lambda p: None) is None
    refuse_all = lambda p: Distrust(p, "x")  # noqa: E731
    assert untrusted_input("/a/b", {"HOME": "/h"}, exists=lambda p: False, distrust_of=refuse_all) is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ('[source.crates-io]\nreplace-with = "debian"\n[net]\noffline = true\n', False),
        ("[build]\njobs = 2\n", False),
        ('[build]\nrustc = "/opt/rustc"\n', True),
        ('[build]\nrustc-wrapper = "sccache"\n', True),
        ('[build]\nrustflags = ["-Clink-arg=-fuse-ld=/tmp/ld"]\n', True),
        ('[target.x86_64-unknown-linux-gnu]\nlinker = "clang"\n', True),
        ("[target.'cfg(unix)']\nrustflags = []\n", True),
        ('[env]\nLD_PRELOAD = "/tmp/x.so"\n', True),
        ('include = "other.toml"\n', True),
        ("this is [not toml", True),
    ],
)
def test_which_configs_can_name_a_replayed_tool(text, expected):
    assert names_tools(text) is expected


def test_configs_seen_records_identity_and_owner(tmp_path: Path):
    project = tmp_path / "proj"
    (project / ".cargo").mkdir(parents=True)
    config = project / ".cargo" / "config.toml"
    config.write_text('[target.x86_64-unknown-linux-gnu]\nlinker = "cc"\n')
    seen = [c for c in configs_seen(str(project), {"HOME": str(tmp_path)}) if c.file == str(config)]
    info = config.stat()
    identities = [(c.device, c.inode, c.owner, c.names_tools) for c in seen]
    assert identities == [(info.st_dev, info.st_ino, info.st_uid, True)]


# --------------------------------------------------------------------------- foreign_writer, for real


@pytest.fixture
def private(tmp_path: Path) -> Path:
    os.chmod(tmp_path, 0o700)
    return tmp_path


def test_a_private_file_is_trusted(private: Path):
    tool = private / "tool"
    tool.write_text("")
    os.chmod(tool, 0o755)
    assert foreign_writer(tool) is None
    assert foreign_writer(private / "missing") is None


def test_a_file_everyone_can_write_is_not(private: Path):
    tool = private / "tool"
    tool.write_text("")
    os.chmod(tool, 0o666)
    assert foreign_writer(tool) == Distrust(str(tool), "is writable by everyone (mode 0666)")


def test_a_directory_above_that_others_can_write_is_named(private: Path):
    shared = private / "shared"
    (shared / "bin").mkdir(parents=True)
    tool = shared / "bin" / "tool"
    tool.write_text("")
    os.chmod(shared, 0o777)
    assert foreign_writer(tool) == Distrust(str(shared), "is writable by everyone (mode 0777)")
    os.chmod(shared, 0o1777)  # sticky: others can't replace what is not theirs
    assert foreign_writer(tool) is None


def test_a_link_kept_in_a_directory_others_can_write_is_not_trusted(private: Path):
    real = private / "real"
    real.mkdir()
    (real / "tool").write_text("")
    drop = private / "drop"
    drop.mkdir()
    os.symlink(real / "tool", drop / "tool")
    assert foreign_writer(drop / "tool") is None
    os.chmod(drop, 0o777)
    assert foreign_writer(drop / "tool") == Distrust(str(drop), "is writable by everyone (mode 0777)")


@as_root
def test_a_file_owned_by_someone_else_names_them(private: Path):
    import pwd

    nobody = pwd.getpwnam("nobody")
    tool = private / "tool"
    tool.write_text("")
    os.chown(tool, nobody.pw_uid, -1)
    assert foreign_writer(tool, uid=0) == Distrust(str(tool), f"is owned by nobody (uid {nobody.pw_uid})")


def test_a_link_to_nothing_is_not_trusted(private: Path):
    os.symlink(private / "later", private / "config.toml")
    assert foreign_writer(private / "config.toml") == Distrust(
        str(private / "config.toml"), f"is a symbolic link to {private / 'later'}, which does not exist"
    )


@as_root
def test_a_link_owned_by_someone_else_is_named_even_to_a_trusted_file(private: Path):
    import pwd

    nobody = pwd.getpwnam("nobody")
    (private / "real.toml").write_text("")
    link = private / "Cargo.toml"
    os.symlink(private / "real.toml", link)
    os.lchown(link, nobody.pw_uid, -1)
    expected = Distrust(str(link), f"is a symbolic link owned by nobody (uid {nobody.pw_uid})")
    assert foreign_writer(link, uid=0) == expected


def test_a_record_keeps_the_configs_the_capture_passed_to_the_shim():
    import json

    from capture.store import ENV_CARGO_CONFIGS, CaptureRecord, ConfigSeen, configs_from_env

    seen = ConfigSeen("/p/.cargo/config.toml", device=1, inode=2, owner=1000, names_tools=True)
    env = {ENV_CARGO_CONFIGS: json.dumps([{"file": seen.file, "device": 1, "inode": 2, "owner": 1000,
                                           "names_tools": True}])}
    assert configs_from_env(env) == (seen,)
    assert configs_from_env({ENV_CARGO_CONFIGS: "not json"}) == configs_from_env({}) == ()
    record = CaptureRecord(crate_name="app", kind="bin", crate_types=("bin",), rustc="rustc", args=("x",), cwd="/p",
                           env={}, recorded_at=1.0, cargo_configs=(seen,))
    assert CaptureRecord.from_json(json.loads(json.dumps(record.to_json()))).cargo_configs == (seen,)
