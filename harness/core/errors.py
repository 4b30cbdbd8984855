"""Bad input and exit codes, one definition for every verb.

Exit codes: 0 ok (a record, a pass), 1 a check failed (not a record, a verification failure, a broken
ledger), 2 bad usage or input (the message names the file, line or flag), 130 interrupted.
"""

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class InputError(ValueError):
    """Bad input (a file, a flag, a track): the message names it and says what to run instead."""
