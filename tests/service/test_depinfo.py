"""dep-info parsing and file → crate mapping (pure)."""

from capture.store import CrateKey
from daemon.service.depinfo import (
    build_source_map,
    changed_kinds,
    crate_sources,
    parse_depinfo,
)

# Verbatim shape of what rustc 1.95 writes for a package in a directory with a space.
RUSTC_DEPINFO = """\
/tmp/w/my app/target/debug/deps/myapp-50862199dff69499.d: src/main.rs src/sub/mod.rs src/../data\\ file.txt

/tmp/w/my app/target/debug/deps/myapp-50862199dff69499: src/main.rs src/sub/mod.rs src/../data\\ file.txt

src/main.rs:
src/sub/mod.rs:
src/../data\\ file.txt:

# env-dep:CARGO_PKG_NAME=myapp
"""


def test_parse_rustc_depinfo_resolves_relative_paths_and_escaped_spaces():
    deps = parse_depinfo(RUSTC_DEPINFO, base_dir="/tmp/w/my app")
    assert deps == [
        "/tmp/w/my app/src/main.rs",
        "/tmp/w/my app/src/sub/mod.rs",
        "/tmp/w/my app/data file.txt",
    ]


def test_parse_keeps_absolute_paths_and_joins_continuation_lines():
    text = "out.d: /abs/a.rs \\\n /abs/b.rs\n"
    assert parse_depinfo(text, base_dir="/elsewhere") == ["/abs/a.rs", "/abs/b.rs"]


def test_comments_and_empty_text_give_nothing():
    assert parse_depinfo("# checksum:abc\n\n") == []


def test_source_map_separates_manifests_and_generated_files():
    cs = crate_sources(
        CrateKey("app", "bin"),
        ["/w/app/src/main.rs", "/w/app/build.rs", "/w/target/debug/build/app-1/out/gen.rs"],
        manifest_dir="/w/app",
        workspace="/w",
        target_dir="/w/target",
    )
    assert cs.sources == ("/w/app/src/main.rs",)
    assert "/w/app/Cargo.toml" in cs.manifest_files
    assert "/w/app/build.rs" in cs.manifest_files
    assert "/w/Cargo.lock" in cs.manifest_files
    smap = build_source_map([cs])
    assert smap.watched_files() >= {"/w/app/src/main.rs", "/w/app/Cargo.toml", "/w/Cargo.lock"}
    assert "/w/target/debug/build/app-1/out/gen.rs" not in smap.watched_files()


def test_changed_files_map_to_every_crate_that_reads_them():
    shared = "/w/shared/mod.rs"
    smap = build_source_map(
        [
            crate_sources(CrateKey("app", "bin"), ["/w/app/src/main.rs", shared], "/w/app", "/w"),
            crate_sources(CrateKey("lib", "lib"), ["/w/lib/src/lib.rs", shared], "/w/lib", "/w"),
        ]
    )
    by_crate, manifests = changed_kinds([shared, "/w/lib/Cargo.toml", "/w/unrelated.rs"], smap)
    assert by_crate == {CrateKey("app", "bin"): [shared], CrateKey("lib", "lib"): [shared]}
    assert manifests == ["/w/lib/Cargo.toml"]
