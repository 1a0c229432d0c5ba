"""The one exception type that reaches the user as a one-line message and exit code 2."""


class UsageError(Exception):
    """Bad input: the message names the problem and the fix. Printed without a traceback, exit code 2."""

    exit_code = 2
