"""The ``--socket`` option shared by the commands that talk to the daemon."""

from __future__ import annotations

import argparse


def add_socket_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--socket",
        metavar="PATH",
        help="daemon socket (default: $THINPATCH_SOCKET, else $XDG_RUNTIME_DIR/thinpatch/thinpatch.sock)",
    )
