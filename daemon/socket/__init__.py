"""socket: the protocol and both ends of the Unix socket.

Takes events from the service and requests from clients. ``protocol`` defines the
newline-delimited JSON messages: one constructor per event type, which the service uses to make
every event, and the checks of each request (all of it matched by ``protocol_schema``'s JSON
Schema); ``server`` serves them to subscribers; ``client`` is the Python end used by the CLI
and tests. ``socket_paths``, ``single_instance``, ``peercred`` and ``systemd`` find, bind, guard
and activate the socket. ``websocket`` serves the same protocol to programs on other hosts
(``remote_token``, ``payload`` and ``listen_address`` are its pure parts).
Uses the standard library, anyio and websockets; knows nothing of builds.
"""
