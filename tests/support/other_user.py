"""Act as another, unprivileged user (nobody) from a test that runs as root."""

from __future__ import annotations

import grp
import os
import pwd
import socket
from pathlib import Path


def connect_as_nobody(path: Path) -> bytes:
    """Fork, drop to nobody, connect, and return what the daemon sent (or the errno)."""
    nobody = pwd.getpwnam("nobody")
    try:
        nogroup = grp.getgrnam("nogroup").gr_gid
    except KeyError:
        nogroup = nobody.pw_gid
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(nogroup)
            os.setuid(nobody.pw_uid)
            received = b""
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
                raw.settimeout(5)
                try:
                    raw.connect(os.fspath(path))
                except OSError as exc:
                    received = f"CONNECT-FAILED errno={exc.errno}".encode()
                else:
                    while chunk := raw.recv(65536):
                        received += chunk
            os.write(write_end, received)
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(child, 0)
    return data


# --------------------------------------------------------------------------- an attacker's processes

def _python_for_everyone() -> str:
    """A Python every user can run (the test's own interpreter may live in root's home)."""
    import shutil
    import stat
    import sys

    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3", shutil.which("python3"), sys.executable):
        if not candidate or not os.path.exists(candidate):
            continue
        real = Path(os.path.realpath(candidate))
        if all(os.stat(p).st_mode & stat.S_IXOTH for p in (real, *real.parents)):
            return str(real)
    return sys.executable  # the attacker's steps will then fail, saying so


SYSTEM_PYTHON = _python_for_everyone()


def nobody_ids() -> tuple[int, int]:
    nobody = pwd.getpwnam("nobody")
    try:
        return nobody.pw_uid, grp.getgrnam("nogroup").gr_gid
    except KeyError:
        return nobody.pw_uid, nobody.pw_gid


def shared_dir(prefix: str) -> Path:
    """A directory every user may write in, like /tmp (sticky, 1777)."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(path, 0o1777)
    return path


def run_as_nobody(code: str, *args: str, timeout: float = 30) -> str:
    """Run ``code`` with the system Python as nobody; return its stdout. Fails on error."""
    import subprocess

    uid, gid = nobody_ids()
    done = subprocess.run(
        [SYSTEM_PYTHON, "-c", code, *args],
        user=uid, group=gid, extra_groups=[], capture_output=True, text=True, timeout=timeout,
        cwd="/", env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
    )
    assert done.returncode == 0, f"as nobody: {done.stderr}"
    return done.stdout


# Plants a capture whose compiler and linker are a script of the attacker's that writes a
# marker file: argv = capture_root, script, marker, recorded_at.
PLANT_CAPTURE = r"""
import json, os, sys, time
root, script, marker, recorded_at = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
with open(script, "w") as fh:
    fh.write("#!/bin/sh\nid -u > " + marker + "\n")
os.chmod(script, 0o755)
scope = os.path.join(root, "captures", "host-debug")
for sub in ("rustc", "link"):
    os.makedirs(os.path.join(scope, sub), exist_ok=True)
ws = os.path.dirname(os.path.dirname(root))
record = {"format": 1, "crate_name": "app", "kind": "bin", "crate_types": ["bin"], "rustc": script,
          "args": ["--crate-name", "app", "--crate-type", "bin", "src/main.rs"], "cwd": ws, "env": {},
          "recorded_at": recorded_at, "is_top": True, "scope": "host-debug", "src": os.path.join(ws, "src", "main.rs"),
          "manifest_dir": ws}
json.dump(record, open(os.path.join(scope, "rustc", "app.bin.json"), "w"))
link = {"format": 1, "linker": script, "args": ["-o", os.path.join(ws, "target", "debug", "app")],
        "output": os.path.join(ws, "target", "debug", "app"), "crate_name": "app", "recorded_at": recorded_at}
json.dump(link, open(os.path.join(scope, "link", "app.json"), "w"))
# A program for the capture to name (any ELF will do: the compiler runs before it matters).
os.makedirs(os.path.join(ws, "target", "debug"), exist_ok=True)
with open("/bin/true", "rb") as src, open(link["output"], "wb") as dst:
    dst.write(src.read())
os.chmod(link["output"], 0o755)
"""


def plant_capture_as_nobody(workspace: Path, script: Path, marker: Path, recorded_at: float = 0.0) -> Path:
    """As nobody, write ``<workspace>/target/thinpatch`` naming ``script`` as rustc and linker."""
    root = workspace / "target" / "thinpatch"
    run_as_nobody(PLANT_CAPTURE, str(root), str(script), str(marker), str(recorded_at))
    return root


# A fake daemon: greets like thinpatch, logs every line a client sends, and answers a
# subscribe with a patch naming the attacker's library. argv = socket, log, lib, [drop-to-uid].
FAKE_DAEMON = r"""
import json, os, socket, sys, threading
path, log, lib = sys.argv[1], sys.argv[2], sys.argv[3]
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)
os.chmod(path, 0o777)
if len(sys.argv) > 4:  # bound as root, then listens as another user: only the peer uid tells
    uid, gid = map(int, sys.argv[4].split(":"))
    os.setgroups([]); os.setgid(gid); os.setuid(uid)
srv.listen(16)
print("listening", flush=True)
def serve(conn):
    conn.sendall(json.dumps({"type": "hello", "protocol": 1, "version": "0.1.0", "pid": os.getpid()}).encode() + b"\n")
    buf = b""
    while True:
        data = conn.recv(65536)
        if not data:
            return
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            with open(log, "ab") as fh:
                fh.write(line + b"\n")
            msg = json.loads(line)
            reply = {"type": "subscribed", "re": msg.get("seq")} if msg.get("type") == "subscribe" else {
                "type": "status", "re": msg.get("seq"), "daemon": {"pid": os.getpid()}, "workspaces": []}
            conn.sendall(json.dumps(reply).encode() + b"\n")
            table = {"lib": lib, "map": {}, "aslr_reference": 0, "new_base_address": 0, "ifunc_count": 0}
            event = {"type": "patch-ready", "id": 1, "workspace": "/", "crate": "app", "lib": lib, "jump_table": table}
            conn.sendall(json.dumps(event).encode() + b"\n")
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


class FakeDaemon:
    """The attacker's daemon, listening at ``socket_path``. ``requests()`` is what clients sent it."""

    def __init__(self, socket_path: Path, log_path: Path, lib: str, *, bind_as_root: bool = False) -> None:
        import subprocess

        uid, gid = nobody_ids()
        args = [SYSTEM_PYTHON, "-c", FAKE_DAEMON, str(socket_path), str(log_path), lib]
        if bind_as_root:
            args.append(f"{uid}:{gid}")
            ids: dict = {}
        else:
            ids = {"user": uid, "group": gid, "extra_groups": []}
        self.log_path = log_path
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd="/", **ids)
        assert self.proc.stdout.readline().strip() == "listening"

    def requests(self) -> list[str]:
        try:
            return self.log_path.read_text().splitlines()
        except FileNotFoundError:
            return []

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def plant_capture_as_self(workspace: Path, script: Path, marker: Path, recorded_at: float) -> Path:
    """The same capture, written by this user (a victim's own, for comparison)."""
    import subprocess

    root = workspace / "target" / "thinpatch"
    subprocess.run(
        [SYSTEM_PYTHON, "-c", PLANT_CAPTURE, str(root), str(script), str(marker), str(recorded_at)], check=True
    )
    return root
