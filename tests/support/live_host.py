"""Drive the live test host (tests/fixtures/livehost): a real Rust process that applies
patches the way subsecond does and prints what its hot functions return."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from pathlib import Path


class LiveHost:
    def __init__(self, binary: Path, cwd: Path | None = None):
        self.proc = subprocess.Popen(
            [str(binary)],
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.transcript: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        ready = self.expect(lambda line: line.startswith("READY"))
        self.pid = int(ready.split("pid=")[1])

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put("<EOF>")

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def expect(self, predicate, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("timed out; host said:\n" + "\n".join(self.transcript[-30:]))
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            self.transcript.append(line)
            if line == "<EOF>":
                raise AssertionError("host exited; it said:\n" + "\n".join(self.transcript[-30:]))
            if predicate(line):
                return line

    def tick(self) -> dict[str, str]:
        """One TICK line, split into its parts: counter, app, lib, words."""
        self.send("tick")
        line = self.expect(lambda line: line.startswith("TICK "))
        counter, app, lib, words = [p.strip() for p in line[len("TICK ") :].split("|")]
        return {"counter": counter, "app": app, "lib": lib, "words": words, "line": line}

    def apply(self, patch_json: dict) -> str:
        self.send(json.dumps(patch_json))
        return self.expect(lambda line: line.startswith(("APPLIED", "APPLY-ERROR")))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
