"""capture: the rustc and linker shims and the capture store.

Takes cargo's rustc and link calls (``thinpatch-rustc`` as the workspace's rustc wrapper,
``thinpatch-linker`` as the program's linker). Gives capture records on disk: one
``store.CaptureRecord`` per crate (its rustc, args, cwd and environment) and one
``store.LinkRecord`` per program link line, read back by ``store.load_captures`` as
``Captures`` keyed by ``store.CrateKey(name, kind)``, validated once, at load.

``rustc_args`` is the one parser of rustc's command line (the daemon's editors use it too);
``environment`` says which of cargo's variables a record keeps; ``fatbuild`` prepares the
program's build so patches can load into it; ``link_line`` reads a link line; ``platforms``
names the operating systems and object formats; ``trust`` decides who may have written a path.

Standard library only, and nothing imported that a call does not use: the shims run for every
rustc call cargo makes and must start fast.
"""
