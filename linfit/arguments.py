"""argparse for linfit's commands, whose mistakes are one `error:` line.

argparse answers a mistake in the arguments with its usage, then
`prog: error: ...`; every other mistake linfit reports is one line starting
`error:`, so a mistake in the arguments is too, with where to read more.
"""

import argparse


class ArgumentParser(argparse.ArgumentParser):
    """An argparse.ArgumentParser whose errors are `error: <what> (see PROG --help)`,
    exit status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")
