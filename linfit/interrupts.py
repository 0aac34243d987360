"""A request to stop training at the next safe point, made by a signal.

Signals belong to the process, so the request does too (`STOP`). The command
line's handlers for SIGINT and SIGTERM make it; the Trainer's `StopAtSafePoint`
callback ends training after the epoch under way, whose checkpoint can then
be written whole. Nothing makes a request in a program that installs no
handler: there Ctrl-C stays Python's KeyboardInterrupt.

Commands that do not train (predict, convert) stop at once instead, undoing
their partial output: `sigterm_interrupts` makes SIGTERM do what Ctrl-C does.
"""

import contextlib
import signal
import threading


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


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt (see `sigterm_interrupts`)."""


@contextlib.contextmanager
def sigterm_interrupts():
    """While the context lasts, SIGTERM (`kill`, `timeout`, a job scheduler) interrupts
    the program as Ctrl-C does, so what a command undoes on KeyboardInterrupt (a
    temporary file) is undone for it too. A SIGTERM ignored (nohup) stays ignored."""
    def terminate(signum, frame):
        raise Terminated()

    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        yield
        return
    before = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def interrupted_status(interrupt: KeyboardInterrupt) -> int:
    """The exit status of a command stopped by `interrupt`: 143 for SIGTERM, 130 for Ctrl-C."""
    return 128 + (signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT)
