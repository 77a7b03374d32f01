"""analysis: what a patch changes in the running program, and whether the program can reach it.

Takes the files the running program was linked from (its own objects, kept at capture time,
and the workspace libraries' rlibs), a patch's objects and the hot entry points' symbol names.
Gives the functions and statics that differ and, for each changed function, whether the
process reaches it from an entry point. Data in, data out: it reads object files and capture
records only.

- ``baseline``: the object files (and rlibs) the running program was linked from, per crate;
- ``code_prints``: per-symbol prints of relocatable objects, and what changed between two sets;
- ``unchanged_sections``: which sections of a rewritten unit are as in its earlier build, so
  their prints are taken over instead of made again;
- ``program_types``: the running program's type layouts, read per unit where a patch needs them;
- ``reach``: the reach set of the entry points over the patch's call and reference edges, and
  a verdict per changed function;
- ``patch``: prints, changes and reach for one patch's files (``analyse_patch``).
"""
