"""The reproductions. One module per experiment; each defines

    NAME = "smooth-encoders"          # the name after `robustrep reproduce`
    HELP = "one line for --help"
    def add_arguments(parser): ...    # its own flags (--quick, --out, --seed, --device, --no-progress
                                      # are added by the command)
    def settings_from(args) -> dict:  # plain settings from the flags, every value checked (UserError)
    def run(settings, out, device="auto", progress=True) -> dict:
                                      # does the work, writes out/results.json, returns the results

`robustrep reproduce NAME` finds them by scanning this package. `run` takes a plain settings dict, not
an argparse Namespace, so a sweep or a test can call it directly. Experiments are thin: they compose.
"""
