"""service: the long-running part of the daemon.

Takes the captured workspaces (``workspaces``) and file-system events (``watcher``, over the
sources listed in rustc's dep-info, ``depinfo``). Gives protocol events: build started, patch
ready with its jump table, build failed. ``scheduler`` settles bursts of saves and restarts
builds; ``patcher`` strings ``build`` and ``binary`` together into one verified patch; ``engine``
owns the per-workspace state and publishes events.
Uses ``build``, ``binary`` and ``socket.protocol``'s request and event types.
"""
