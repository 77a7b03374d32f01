"""socket: the protocol and both ends of the Unix socket.

Takes events from the service and requests from clients. ``protocol`` defines the
newline-delimited JSON messages: one constructor per event type, which the service uses to make
every event, and the checks of each request (all of it matched by ``protocol_schema``'s JSON
Schema); ``server`` serves them to subscribers; ``client`` is the Python end used by the CLI
and tests. ``socket_paths``, ``single_instance``, ``peercred`` and ``systemd`` find, bind, guard
and activate the socket.
Uses only the standard library and anyio; knows nothing of builds.
"""
