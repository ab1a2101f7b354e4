"""The one exception type users see.

Anything raised as :class:`MicroSymError` is a problem with the user's input or environment; the
CLI prints its message as a single line on stderr and exits with status 2. Any other exception is a
bug in micro_sym and keeps its traceback.
"""


class MicroSymError(Exception):
    """A user-facing error whose message is one line naming the file and the problem."""

    def __init__(self, message: str):
        # Keep the message on one line whatever the caller passed in.
        super().__init__(" ".join(str(message).split()))
