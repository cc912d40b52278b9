"""Sub-commands of the `robustrep` command line: one module per command, each with `register(subparsers)`."""
