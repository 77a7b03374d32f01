"""binary: reading and judging binaries, with no processes.

Takes the running program's binary and a freshly linked patch library. Gives their symbol
tables (``symbols``, cached on disk by ``symbol_cache``), whether the patch will load in that
program (``load_check``), and subsecond's jump table from old to new addresses
(``jump_table``), with ``demangle`` for readable names in reports.
Uses only the standard library.
"""
