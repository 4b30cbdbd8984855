"""The one error type for bad input: the CLI prints it without a traceback and exits 2."""


class InputError(ValueError):
    """Bad input (a file, a flag, a track): the message names it and says what to run instead."""
