"""`thinpatch token`: the token programs on other hosts present to the daemon."""

from __future__ import annotations

import argparse
import sys

HELP = "print the token that programs on other hosts present to the daemon's --listen endpoint"
DESCRIPTION = """\
Prints the daemon's token (64 hex characters; the last word of the line). A program on
another host (a container, a VM, a phone) that connects to `thinpatch serve --listen` or
`thinpatch run --listen` must present it: set THINPATCH_TOKEN to it in the program's
environment. It is made the first time it is asked for, kept beside the daemon's socket
(mode 0600) and stays the same across daemon restarts; remove that file to make a new one.
See docs/remote.md.

examples:
  thinpatch token
  export THINPATCH_TOKEN=$(thinpatch token | awk '{print $NF}')
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from daemon.cli.commands._socket_option import add_socket_option

    add_socket_option(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from daemon.socket.remote_token import TokenError, load_or_create_token
    from daemon.socket.socket_paths import SocketPathError, default_socket_path, prepare_socket_dir

    socket_path = Path(args.socket) if args.socket else default_socket_path()
    try:
        prepare_socket_dir(socket_path)
        token = load_or_create_token(socket_path)
    except (SocketPathError, TokenError) as exc:
        print(f"thinpatch token: {exc}", file=sys.stderr)
        return 1
    print(f"token: {token}")
    return 0
