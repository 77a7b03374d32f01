"""build: from a captured rustc invocation to a patch library on disk.

Takes capture records (``capture.store``) and the names of the crates that changed. Gives a
``PatchBuild``: the patch library's path, the objects and the timings of rustc and the link.

The plans (``rustc_plan``, ``link_plan``, ``crate_graph``) are pure: data in, data out.
``rebuild`` runs them (rustc, the linker) in process groups; ``session_cache`` names and prunes
the files a session writes; ``diagnostics`` turns rustc's JSON into readable errors.
Uses only ``capture`` and the standard library (plus anyio to run processes).
"""
