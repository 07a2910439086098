"""The one exception type users see: the CLI prints it as one line and exits with status 2."""


class HusaiError(Exception):
    """A problem with the user's input (config, files, data) worth one clear line."""
