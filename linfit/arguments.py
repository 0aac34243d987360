"""argparse for linfit's commands, whose mistakes are one `error:` line.

argparse answers a mistake in the arguments with its usage, then
`prog: error: ...`; every other mistake linfit reports is one line starting
`error:`, so a mistake in the arguments is too, with where to read more.
"""

import argparse
import os
import sys


class ArgumentParser(argparse.ArgumentParser):
    """An argparse.ArgumentParser whose errors are `error: <what> (see PROG --help)`,
    exit status 2. Every command makes one first: its standard streams are
    reopened if closed (`reopen_closed_streams`)."""

    def __init__(self, *args, **kwargs):
        reopen_closed_streams()
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def reopen_closed_streams() -> None:
    """A command started with its output closed (`>&-`, `2>&-`) writes to /dev/null.

    Python leaves sys.stdout None then (printing to it raised AttributeError),
    and the next file opened would take descriptor 1 or 2, where C++ libraries
    write their log lines: into a checkpoint being written.
    """
    for descriptor, name in ((1, "stdout"), (2, "stderr")):
        if getattr(sys, name) is None:
            devnull = os.open(os.devnull, os.O_WRONLY)
            if devnull != descriptor:  # descriptor 1 may still be open, for C++
                os.dup2(devnull, descriptor)
                os.close(devnull)
            setattr(sys, name, open(descriptor, "w", closefd=False))
