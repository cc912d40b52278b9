"""Errors a user can cause. The command line turns them into one plain line and exit code 2."""


class UserError(ValueError):
    """Bad input from the user: a wrong path, name, shape or value. The message says what to do."""
