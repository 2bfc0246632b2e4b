"""The one exception type users see: its message is a sentence they can act on."""


class CrossMAEError(ValueError):
    """Bad input from the user (a setting, a path, a checkpoint); the CLI prints it and exits 2."""
