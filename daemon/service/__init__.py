"""service: the long-running part of the daemon.

Takes the captured workspaces (``workspaces``) and file-system events (``watcher``, over the
sources listed in rustc's dep-info, ``depinfo``). Gives protocol events: build started, patch
ready with its jump table, build failed. ``scheduler`` settles bursts of saves and restarts
builds; ``patcher`` strings ``build`` and ``binary`` together into one verified patch; ``session``
serves one workspace (its programs, ``sources``, watcher, scheduler and builds) and publishes
its events; ``engine`` finds the workspaces, runs a session for each and answers the server.
Uses ``build``, ``binary`` and ``socket.protocol``'s request and event types.
"""
