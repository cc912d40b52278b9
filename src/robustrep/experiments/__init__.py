"""The reproductions. One module per experiment; each defines

    NAME = "smooth-encoders"          # the name after `robustrep reproduce`
    HELP = "one line for --help"
    def add_arguments(parser): ...    # its own flags (--quick, --out, ... are added by the command)
    def run(args) -> dict: ...        # does the work, writes DIR/results.json, returns the results

`robustrep reproduce NAME` finds them by scanning this package; experiments are thin: they compose.
"""
