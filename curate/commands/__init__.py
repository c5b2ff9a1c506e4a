"""Subcommands of the `curate` CLI, one module each (`configure(parser)`, `run(args)`)."""
