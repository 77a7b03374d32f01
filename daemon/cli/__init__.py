"""cli: the ``thinpatch`` command and everything a person starts by hand.

``main`` parses the command line and dispatches to ``commands/<name>.py``. ``capture_run``
runs cargo with the shims; ``serve_loop`` joins the service's engine to the socket server;
``demo`` and ``demo_script`` run the bundled example; ``service_files`` writes systemd and
launchd units; ``logging_setup`` configures structlog for a terminal or a journal.
Top of the pipeline: may use every other room.
"""
