"""One module per `thinpatch` subcommand. Each defines ``HELP``, ``DESCRIPTION``,
``add_arguments(parser)`` and ``run(args) -> int``. Keep module-level imports light:
every command module is imported to build ``--help``."""
