"""The patch link plan, checked as data.

LINUX_BIN_LINE and LINUX_CDYLIB_LINE are real link lines rustc 1.95 gave its linker on this
machine (paths shortened to /toolchain, /ws, /cd). The macOS lines follow the shape rustc
produces for ld64 through clang (no macOS machine here to record one).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.build.link_plan import LinkPlanError, build_link_plan
from tests.support.records import link_line

STD = "/toolchain/lib/rustlib/x86_64-unknown-linux-gnu/lib"
STD_RLIBS = [
    f"{STD}/libstd-d1237ef7159db0a2.rlib",
    f"{STD}/libpanic_unwind-4be5972b22d3a6da.rlib",
    f"{STD}/libobject-2a81194c9d07bbf6.rlib",
    f"{STD}/libmemchr-ea71fa85f6699d6b.rlib",
    f"{STD}/libaddr2line-a79a8816d9fd6004.rlib",
    f"{STD}/libgimli-46dc78dc6a8cb06a.rlib",
    f"{STD}/libcfg_if-0ce073fff809ec38.rlib",
    f"{STD}/librustc_demangle-146c3f1190dee2e2.rlib",
    f"{STD}/libstd_detect-e305c7135f50bfab.rlib",
    f"{STD}/libhashbrown-1448c95121de53aa.rlib",
    f"{STD}/librustc_std_workspace_alloc-5bc57914b232292d.rlib",
    f"{STD}/libminiz_oxide-5ad929a15a8e6727.rlib",
    f"{STD}/libadler2-1f570ee5c6635aae.rlib",
    f"{STD}/libunwind-545faafa3c69262e.rlib",
    f"{STD}/liblibc-5b1ad6df1855186c.rlib",
    f"{STD}/librustc_std_workspace_core-75c1307561ed9634.rlib",
    f"{STD}/liballoc-6e6df4ffe0af4d15.rlib",
    f"{STD}/libcore-120cbae4e86ec454.rlib",
    f"{STD}/libcompiler_builtins-27cfc16bdf3bb694.rlib",
]
NATIVE = ["-Wl,-Bdynamic", "-lgcc_s", "-lutil", "-lrt", "-lpthread", "-lm", "-ldl", "-lc"]
GCC_LD = "-B/toolchain/lib/rustlib/x86_64-unknown-linux-gnu/bin/gcc-ld"

LINUX_BIN_LINE = [
    "-m64",
    "/ws/target/debug/deps/rustcTlCE79/symbols.o",
    "/ws/target/debug/deps/app-19823c75b2b6817f.1nyzbjev07yl8olgdapucobu3.11gjkl2.rcgu.o",
    "/ws/target/debug/deps/app-19823c75b2b6817f.2ltfs5jdtedfhq06rjo9i4zat.11gjkl2.rcgu.o",
    "/ws/target/debug/deps/app-19823c75b2b6817f.95mn3lnuxbgb420p2nnl8mnwm.11gjkl2.rcgu.o",
    "-Wl,--as-needed",
    "-Wl,-Bstatic",
    "/ws/target/debug/deps/libmid-57a69d518c722f8d.rlib",
    "/ws/target/debug/deps/libgreet-5c25fea796287d64.rlib",
    *STD_RLIBS,
    *NATIVE,
    "-L", "/ws/target/debug/deps/rustcTlCE79/raw-dylibs",
    GCC_LD,
    "-fuse-ld=lld",
    "-Wl,--eh-frame-hdr",
    "-Wl,-z,noexecstack",
    "-L", f"{STD}",
    "-o", "/ws/target/debug/deps/app-19823c75b2b6817f",
    "-Wl,--gc-sections",
    "-pie",
    "-Wl,-z,relro,-z,now",
    "-nodefaultlibs",
    "-Wl,--export-dynamic",
]

LINUX_CDYLIB_LINE = [
    "-Wl,--version-script=/cd/target/debug/deps/rustcDnh8FS/list",
    "-Wl,--no-undefined-version",
    "-m64",
    "/cd/target/debug/deps/rustcDnh8FS/symbols.o",
    "/cd/target/debug/deps/cd.1ri31n0u9xul1ap0skox3nirb.0z49zfl.rcgu.o",
    "/cd/target/debug/deps/cd.c0d2qd5hu8duqvqkuq42qw5ck.0z49zfl.rcgu.o",
    "-Wl,--as-needed",
    "-Wl,-Bstatic",
    *STD_RLIBS,
    *NATIVE,
    "-L", "/cd/target/debug/deps/rustcDnh8FS/raw-dylibs",
    GCC_LD,
    "-fuse-ld=lld",
    "-Wl,--eh-frame-hdr",
    "-Wl,-z,noexecstack",
    "-L", f"{STD}",
    "-o", "/cd/target/debug/deps/libcd.so",
    "-Wl,--gc-sections",
    "-shared",
    "-Wl,-z,relro,-z,now",
    "-nodefaultlibs",
]

MAC_STD = "/toolchain/lib/rustlib/aarch64-apple-darwin/lib"
MACOS_BIN_LINE = [
    "/var/folders/xy/T/rustcAbC123/symbols.o",
    "/ws/target/debug/deps/app-1.a1.rcgu.o",
    "/ws/target/debug/deps/app-1.b2.rcgu.o",
    "/ws/target/debug/deps/libgreet-2.rlib",
    f"{MAC_STD}/libstd-3.rlib",
    "-framework", "CoreFoundation",
    "-lSystem", "-lc", "-lm",
    "-arch", "arm64",
    "-mmacosx-version-min=11.0.0",
    "-L", f"{MAC_STD}",
    "-o", "/ws/target/debug/deps/app-1",
    "-Wl,-dead_strip",
    "-nodefaultlibs",
    "-Wl,-export_dynamic",
]
MACOS_CDYLIB_LINE = [
    "-Wl,-exported_symbols_list,/var/folders/xy/T/rustcAbC123/list",
    "/var/folders/xy/T/rustcAbC123/symbols.o",
    "/cd/target/debug/deps/cd.a1.rcgu.o",
    f"{MAC_STD}/libstd-3.rlib",
    "-lSystem",
    "-arch", "arm64",
    "-o", "/cd/target/debug/deps/libcd.dylib",
    "-dead_strip",
    "-dynamiclib",
    "-Wl,-dylib",
    "-Wl,-undefined,error",
    "-nodefaultlibs",
]

OBJS = ["/s/objects/lib/greet.o", "/s/objects/bin/app.o"]


def link(args, os_name, **kw):
    return build_link_plan(link_line("cc", args, cwd="/ws"), OBJS, "/s/patches/libapp-patch-3.so", os_name, **kw)


def test_linux_bin_plan_exact():
    plan = link(LINUX_BIN_LINE, "linux")
    assert plan.program == "cc"
    assert plan.cwd == "/ws"
    assert list(plan.args) == [
        "-m64",
        *OBJS,
        "-Wl,--as-needed",
        "-Wl,-Bstatic",
        *NATIVE,
        GCC_LD,
        "-fuse-ld=lld",
        "-Wl,--eh-frame-hdr",
        "-Wl,-z,noexecstack",
        "-L", f"{STD}",
        "-Wl,-z,relro,-z,now",
        "-nodefaultlibs",
        "-Wl,--export-dynamic",
        "-shared",
        "-Wl,-Bsymbolic-functions",
        "-Wl,--unresolved-symbols=ignore-all",
        "-o", "/s/patches/libapp-patch-3.so",
    ]


def test_linux_bin_plan_keeping_dependency_archives():
    plan = link(LINUX_BIN_LINE, "linux", dependency_archives="keep")
    args = list(plan.args)
    # new objects come before the archives, where the old objects were
    assert args.index(OBJS[-1]) < args.index("/ws/target/debug/deps/libmid-57a69d518c722f8d.rlib")
    for rlib in STD_RLIBS:
        assert rlib in args
    assert not any(a.endswith((".rcgu.o", "symbols.o")) for a in args)


def test_linux_cdylib_plan_drops_version_script_and_duplicate_shared():
    plan = link(LINUX_CDYLIB_LINE, "linux")
    args = list(plan.args)
    assert not any("version-script" in a or "no-undefined-version" in a for a in args)
    assert args.count("-shared") == 1
    assert args[:3] == ["-m64", *OBJS]
    assert "-Wl,--gc-sections" not in args and "-o" in args and args[args.index("-o") + 1].endswith("patch-3.so")
    assert not any("rustcDnh8FS" in a for a in args)


@pytest.mark.parametrize(
    "given, expected",
    [
        (["-Wl,--version-script", "-Wl,/t/list", "-lc"], ["-lc"]),
        (["-Xlinker", "--version-script", "-Xlinker", "/t/list", "-lc"], ["-lc"]),
        (["-Wl,--as-needed,--gc-sections,-z,relro"], ["-Wl,--as-needed,-z,relro"]),
        (["-Wl,--gc-sections,--version-script=/t/l"], []),
        (["-Wl,--unresolved-symbols=report-all", "-Wl,-z,defs", "-Wl,--no-undefined"], []),
        (["-Wl,-z,relro,-z,defs,-z,now"], ["-Wl,-z,relro,-z,now"]),
        (["-static-pie", "-no-pie", "-pie", "-shared", "-shared"], []),
        (["-Wl,-soname=libhost.so", "-Wl,-soname,libhost.so"], []),
        (["-o/t/out", "-lc"], ["-lc"]),
        (["-Wl,-Bsymbolic", "-Wl,--as-needed,-Bsymbolic-functions", "-Xlinker", "-Bsymbolic"], ["-Wl,--as-needed"]),
        (["-L/t/rustcAbC123/raw-dylibs", "-L/keep/me"], ["-L/keep/me"]),
    ],
    ids=[
        "version-script split over two -Wl",
        "version-script via -Xlinker",
        "gc-sections inside a comma list",
        "list emptied entirely",
        "unresolved-symbol directives",
        "-z defs among -z options",
        "pie variants and shared",
        "soname",
        "joined -o",
        "captured -Bsymbolic (binds data too) replaced by the plan's own",
        "rustc temp search dir",
    ],
)
def test_linux_edits(given, expected):
    plan = build_link_plan(link_line("cc", given), ["/s/a.o"], "/s/p.so", "linux")
    assert list(plan.args) == [
        *expected,
        "/s/a.o",
        "-shared",
        "-Wl,-Bsymbolic-functions",
        "-Wl,--unresolved-symbols=ignore-all",
        "-o",
        "/s/p.so",
    ]


def test_macos_bin_plan_exact():
    plan = link(MACOS_BIN_LINE, "macos")
    assert list(plan.args) == [
        *OBJS,
        "-framework",
        "CoreFoundation",
        "-lSystem",
        "-lc",
        "-lm",
        "-arch",
        "arm64",
        "-mmacosx-version-min=11.0.0",
        "-L",
        f"{MAC_STD}",
        "-nodefaultlibs",
        "-Wl,-export_dynamic",
        "-shared",
        "-Wl,-twolevel_namespace",
        "-Wl,-undefined,dynamic_lookup",
        "-o",
        "/s/patches/libapp-patch-3.so",
    ]


def test_macos_cdylib_plan_drops_exported_symbols_dead_strip_and_undefined():
    plan = link(MACOS_CDYLIB_LINE, "macos")
    assert list(plan.args) == [
        *OBJS,
        "-lSystem",
        "-arch",
        "arm64",
        "-nodefaultlibs",
        "-shared",
        "-Wl,-twolevel_namespace",
        "-Wl,-undefined,dynamic_lookup",
        "-o",
        "/s/patches/libapp-patch-3.so",
    ]


def test_macos_driver_level_exported_symbols_list():
    plan = build_link_plan(
        link_line("clang", ["-exported_symbols_list", "/t/l", "-undefined", "error", "-lSystem"]),
        ["/s/a.o"],
        "/s/p.dylib",
        "macos",
    )
    assert list(plan.args) == [
        "-lSystem",
        "/s/a.o",
        "-shared",
        "-Wl,-twolevel_namespace",
        "-Wl,-undefined,dynamic_lookup",
        "-o",
        "/s/p.dylib",
    ]


def test_macos_patch_binds_its_own_functions_never_through_a_flat_namespace():
    # flat namespace makes every function interposable by the running program's old copy
    captured = ["-Wl,-flat_namespace", "-Xlinker", "-interposable", "-Wl,-force_flat_namespace,-lSystem"]
    plan = build_link_plan(link_line("clang", captured), ["/s/a.o"], "/s/p.dylib", "macos")
    args = list(plan.args)
    assert not any("flat_namespace" in a or "interposable" in a for a in args)
    assert args.count("-Wl,-twolevel_namespace") == 1
    assert args.index("-Wl,-twolevel_namespace") > args.index("-shared")


def test_patch_binds_functions_to_itself_but_not_data():
    # -Bsymbolic (all symbols) would give the patch its own copy of a library `pub static`
    args = list(link(LINUX_BIN_LINE, "linux").args)
    assert args.count("-Wl,-Bsymbolic-functions") == 1
    assert not any(a.split(",")[-1] == "-Bsymbolic" for a in args)


def test_plan_is_stable_when_applied_to_its_own_output():
    first = link(LINUX_BIN_LINE, "linux")
    again = build_link_plan(link_line("cc", list(first.args)), OBJS, "/s/patches/libapp-patch-3.so", "linux")
    assert again.args == first.args


def test_link_record_objects_are_accepted():
    from pathlib import Path

    from capture.store import LinkRecord

    rec = LinkRecord.from_json(
        {"linker": "cc", "args": LINUX_BIN_LINE, "output": "/ws/app", "cwd": "/ws", "recorded_at": 1.0, "format": 1},
        Path("/c/link/app.json"),
    )
    plan = build_link_plan(rec, OBJS, "/s/p.so", "linux")
    assert plan.cwd == "/ws" and plan.program == "cc"


def test_refusals():
    with pytest.raises(LinkPlanError, match="windows"):
        link(LINUX_BIN_LINE, "windows")
    with pytest.raises(LinkPlanError, match="object"):
        build_link_plan(link_line("cc", LINUX_BIN_LINE), [], "/s/p.so", "linux")
    with pytest.raises(ValueError):
        link(LINUX_BIN_LINE, "linux", dependency_archives="sometimes")


def test_every_unit_object_is_linked_in_the_given_order():
    # several codegen units per crate: linking only the changed ones leaves hidden symbols
    # of the others undefined
    units = [f"/s/objects/bin/app/app-1.u{i:03}.rcgu.o" for i in range(256)]
    lib_units = [f"/s/objects/lib/greet/greet-5.u{i}.rcgu.o" for i in range(3)]
    plan = build_link_plan(link_line("cc", LINUX_BIN_LINE, cwd="/ws"), lib_units + units, "/s/p.so", "linux")
    linked = [a for a in plan.args if a.endswith(".o")]
    assert linked == lib_units + units
    assert plan.objects == tuple(Path(o) for o in lib_units + units)
