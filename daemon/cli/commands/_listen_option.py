"""The ``--listen ADDR:PORT`` option of `serve` and `run`: the WebSocket endpoint for other hosts."""

from __future__ import annotations

import argparse

from daemon.socket.listen_address import ListenAddress, ListenAddressError, parse_listen_address


def _listen_address(text: str) -> ListenAddress:
    try:
        return parse_listen_address(text)
    except ListenAddressError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_listen_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen",
        type=_listen_address,
        metavar="ADDR:PORT",
        default=None,
        help="also serve programs on other hosts (containers, VMs, phones) over a WebSocket at "
        "ws://ADDR:PORT/thinpatch, to clients holding the token `thinpatch token` prints "
        "(default: off; see docs/remote.md)",
    )
