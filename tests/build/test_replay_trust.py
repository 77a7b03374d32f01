"""The programs a patch build replays, and why one of them (or the config that chose it) is
not run: pure, with a stand-in for the disk."""

from __future__ import annotations

from dataclasses import dataclass, field

from capture.store import CaptureRecord, ConfigSeen, LinkRecord
from capture.trust import Distrust
from daemon.build.replay_trust import replay_refusals, replayed_programs

CONFIG = ConfigSeen("/work/.cargo/config.toml", device=1, inode=10, owner=1000, names_tools=True)


def record(configs: tuple[ConfigSeen, ...] = (), rustc: str = "/opt/rust/bin/rustc") -> CaptureRecord:
    return CaptureRecord(
        crate_name="app", kind="bin", crate_types=("bin",), rustc=rustc, args=("--crate-name", "app", "src/main.rs"),
        cwd="/work/app", env={"PATH": "/usr/bin:/bin"}, recorded_at=1.0, is_top=True, cargo_configs=configs,
    )


LINK = LinkRecord(
    linker="cc",
    args=("-B/opt/rust/lib/gcc-ld", "-fuse-ld=lld", "-fuse-ld=/opt/ld/mold", "--ld-path=/opt/ld/ld.x", "-o", "app"),
    output="/work/target/debug/app",
    recorded_at=1.0,
    cwd="/work",
)


@dataclass
class Disk:
    """What the probe answers: files on PATH, owners, and who else could write a path."""

    on_path: dict[str, str] = field(default_factory=lambda: {"cc": "/usr/bin/cc"})
    identities: dict[str, tuple[int, int, int]] = field(default_factory=lambda: {CONFIG.file: (1, 10, 1000)})
    foreign: dict[str, Distrust] = field(default_factory=dict)

    def which(self, program: str, search_path: str, cwd: str) -> str | None:
        return program if program.startswith("/") else self.on_path.get(program)

    def distrust(self, path: str) -> Distrust | None:
        return self.foreign.get(path)

    def identity(self, path: str) -> tuple[int, int, int] | None:
        return self.identities.get(path)


def test_every_program_a_build_runs_is_listed_once():
    programs = {(p.program, p.is_directory) for p in replayed_programs([record(), record()], LINK)}
    assert programs == {
        ("/opt/rust/bin/rustc", False),
        ("cc", False),
        ("/opt/rust/lib/gcc-ld", True),
        ("/opt/ld/mold", False),
        ("/opt/ld/ld.x", False),
    }


def test_nothing_to_refuse_when_all_is_as_captured():
    assert replay_refusals([record((CONFIG,))], LINK, Disk()) == []


def test_a_linker_someone_else_owns_is_not_run():
    disk = Disk(foreign={"/usr/bin/cc": Distrust("/usr/bin/cc", "is owned by mallory (uid 1001)")})
    [refusal] = replay_refusals([record()], LINK, disk)
    assert refusal.startswith("not running the linker /usr/bin/cc: /usr/bin/cc is owned by mallory (uid 1001)")
    assert "run `thinpatch capture` again" in refusal


def test_a_fuse_ld_path_in_a_directory_others_can_write_is_not_run():
    disk = Disk(foreign={"/opt/ld/mold": Distrust("/opt/ld", "is writable by everyone (mode 0777)")})
    [refusal] = replay_refusals([record()], LINK, disk)
    assert "not running the linker that -fuse-ld names /opt/ld/mold: /opt/ld is writable by everyone" in refusal


def test_a_dash_b_directory_someone_else_owns_is_not_used():
    disk = Disk(foreign={"/opt/rust/lib/gcc-ld": Distrust("/opt/rust/lib/gcc-ld", "is owned by uid 4242")})
    [refusal] = replay_refusals([record()], LINK, disk)
    assert refusal.startswith("not running the programs in the link's -B directory /opt/rust/lib/gcc-ld: ")


def test_a_compiler_that_is_gone_is_left_to_fail_as_not_found():
    disk = Disk(on_path={})
    assert replay_refusals([record(rustc="rustc")], None, disk) == []


def test_a_deleted_config_stops_the_replay_and_says_why():
    [refusal] = replay_refusals([record((CONFIG,))], LINK, Disk(identities={}))
    assert f"the cargo config {CONFIG.file}" in refusal and "has been deleted since" in refusal
    assert "Run `thinpatch capture` again" in refusal


def test_a_config_that_changed_owner_or_file_stops_the_replay():
    [owner] = replay_refusals([record((CONFIG,))], LINK, Disk(identities={CONFIG.file: (1, 10, 4242)}))
    assert "now belongs to uid 4242" in owner
    [replaced] = replay_refusals([record((CONFIG,))], LINK, Disk(identities={CONFIG.file: (1, 11, 1000)}))
    assert "has been replaced by another file since" in replaced


def test_a_config_others_can_now_write_stops_the_replay():
    disk = Disk(foreign={CONFIG.file: Distrust("/work/.cargo", "is writable by everyone (mode 0777)")})
    [refusal] = replay_refusals([record((CONFIG,))], LINK, disk)
    assert "can now be changed by someone else (/work/.cargo is writable by everyone (mode 0777))" in refusal


def test_a_config_that_names_no_tool_may_go():
    harmless = ConfigSeen("/work/.cargo/config", device=1, inode=12, owner=1000, names_tools=False)
    assert replay_refusals([record((harmless,))], LINK, Disk()) == []
