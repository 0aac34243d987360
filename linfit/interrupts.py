"""A request to stop training at the next safe point, made by a signal.

Signals belong to the process, so the request does too (`STOP`). The command
line's handlers for SIGINT and SIGTERM make it; the Trainer's `StopAtSafePoint`
callback ends training after the epoch under way, whose checkpoint can then
be written whole. Nothing makes a request in a program that installs no
handler: there Ctrl-C stays Python's KeyboardInterrupt.
"""

import signal


class StopRequest:
    """Whether, and by which signal, the process was asked to stop."""

    def __init__(self):
        self.signal: int | None = None

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def request(self, signum: int) -> None:
        self.signal = signum

    def clear(self) -> None:
        self.signal = None

    @property
    def exit_status(self) -> int:
        """What a shell reports for a process ended by this signal: 128 + its number."""
        return 128 + (self.signal or signal.SIGINT)


STOP = StopRequest()
