"""``--listen ADDR:PORT``: where the WebSocket endpoint listens, and whether to warn about it.

Pure: parsing and wording only. ``127.0.0.1:9876``, ``0.0.0.0:9876``, ``[::1]:9876`` and
``localhost:9876`` are accepted; a port of 0 lets the system choose one.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

ENDPOINT_PATH = "/thinpatch"


class ListenAddressError(ValueError):
    """The ``--listen`` value is not ``ADDR:PORT``; the message shows the accepted forms."""


@dataclass(frozen=True)
class ListenAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False  # a host name: it may resolve to any interface

    def url(self, port: int | None = None, host: str | None = None) -> str:
        """The ``ws://`` address a device dials (``host`` instead of a wildcard address)."""
        shown = ListenAddress(host or self.host, self.port if port is None else port)
        return f"ws://{shown}{ENDPOINT_PATH}"


def dial_url(endpoint_url: str) -> str:
    """The address a program on this machine dials for an endpoint listening on ``endpoint_url``:
    a wildcard address (every interface) is reached through loopback."""
    return endpoint_url.replace("ws://0.0.0.0:", "ws://127.0.0.1:", 1).replace("ws://[::]:", "ws://[::1]:", 1)


def parse_listen_address(text: str) -> ListenAddress:
    """``ADDR:PORT`` (an IPv6 address in brackets) as a :class:`ListenAddress`."""
    usage = "expected ADDR:PORT, such as 127.0.0.1:9876, 0.0.0.0:9876 or [::1]:9876"
    text = text.strip()
    if text.startswith(("ws://", "wss://", "http://", "https://")):
        raise ListenAddressError(f"{text!r}: give the address without a scheme; {usage}")
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ListenAddressError(f"{text!r}: {usage}")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ListenAddressError(f"{text!r}: {host!r} is not an IPv6 address; {usage}") from None
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon or not host or ":" in host:
            raise ListenAddressError(f"{text!r}: {usage}")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ListenAddressError(f"{text!r}: the port must be a number from 0 to 65535; {usage}")
    return ListenAddress(host, int(port_text))


def exposure_warning(address: ListenAddress) -> str | None:
    """The warning a non-loopback address deserves, or ``None`` for a loopback one."""
    if address.is_loopback:
        return None
    return (
        f"the WebSocket endpoint listens on {address}, beyond this machine: anyone who can reach it "
        "and holds the token can run code in the subscribed programs. Use a tunnel "
        "(`ssh -R`, `adb reverse`) to a loopback address, or a network you trust."
    )
