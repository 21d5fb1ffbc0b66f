"""The one exception type for errors a user causes (bad names, values, files).

The CLI turns a ``ToybenchError`` into one line on stderr and a non-zero exit, never a traceback.
It subclasses ``ValueError`` so library callers can catch it the usual way.
"""


class ToybenchError(ValueError):
    """A user-facing error whose message is one clear line."""
