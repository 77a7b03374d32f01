"""Change analysis for patches: which functions and statics a patch changes compared with the
code the running process was linked from, and whether the process can reach them from its hot
entry points.

- ``baseline``: the object files (and rlibs) the running program was linked from, per crate;
- ``code_prints``: per-symbol prints of relocatable objects, and what changed between two sets;
- ``reach``: the reach set of the entry points over the patch's call and reference edges, and
  a verdict per changed function;
- ``patch``: prints, changes and reach for one patch's files (``analyse_patch``).

Data in, data out: the only files read are object files and capture records.
"""
