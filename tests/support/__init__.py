"""Helpers shared by the test rooms: daemon processes, the live Rust test host, a protocol
harness with a fake engine, synthetic ELF/Mach-O images and the fault suite's fixtures."""
