"""The one exception type users see: a message that names the file, line or field at fault.

The CLI prints these as a single line and exits with status 2, without a traceback."""


class GptkitError(Exception):
    """A problem with the user's input (file, config, arguments), described in one line."""
