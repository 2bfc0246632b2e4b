"""The one exception type users see: its message is a sentence they can act on."""


class CrossMAEError(ValueError):
    """Bad input from the user (a setting, a path, a checkpoint); the CLI prints it and exits 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler ending the job) raised like Ctrl-C, so that what a run says when
    it is interrupted is said for it too; the CLI exits 143."""
