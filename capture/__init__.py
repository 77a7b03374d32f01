"""Capture side of thinpatch: the rustc and linker shims and the capture store.

Everything in this package uses the standard library only, because the shims run
for every rustc call cargo makes and must start fast.
"""
