"""build: from a captured rustc invocation to a patch library on disk.

Takes capture records (``capture.store``) and the crates that changed. Gives a
``PatchBuild``: the patch library's path, the objects and the timings of rustc and the link.

The plans are pure, data in, data out: ``crate_plans`` finds the captured crates and plans
each one to rebuild (in ``crate_graph``'s order, with ``rustc_plan``); ``link_plan`` turns the
captured link line into the patch's; ``refusals`` recognises builds that can't give a patch.
``rebuild`` runs the plans: rustc for each crate, then the linker, each tool through
``processes`` (a process group, killed on cancel). ``crate_objects`` keeps a crate's objects
in the session, ``session_cache`` names and prunes the files a session writes, ``concurrency``
holds a session's build lock and runs tidying beside the work. ``diagnostics`` turns rustc's
JSON into readable errors, and ``errors`` says why a patch could not be built.
Uses only ``capture`` and the standard library (plus anyio to run processes).
"""
