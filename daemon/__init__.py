"""thinpatch daemon side: thin rebuilds, jump tables, the watcher, the socket server and the CLI."""

__version__ = "0.1.0"
