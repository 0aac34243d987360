"""Run a command the way a person does: its stdout on a terminal (a pseudo-terminal),
each line timed as it arrives."""

import os
import pty
import select
import subprocess
import time
from dataclasses import dataclass


@dataclass
class TerminalRun:
    returncode: int
    # (seconds from start until the line's first character showed, the line)
    lines: list[tuple[float, str]]
    ended: float  # seconds from start to exit
    stderr: str

    @property
    def stdout(self) -> str:
        return "".join(line + "\n" for _, line in self.lines)

    def arrival(self, predicate) -> float:
        """When the first line for which `predicate` holds arrived."""
        return next(at for at, line in self.lines if predicate(line))


def run_in_terminal(command: list[str], cwd=None, timeout: float = 300) -> TerminalRun:
    """Run `command` with stdout on a pseudo-terminal and stderr on a pipe."""
    controller, terminal = pty.openpty()
    start = time.monotonic()
    process = subprocess.Popen(command, cwd=cwd, stdout=terminal, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL)
    os.close(terminal)
    lines, pending, pending_since = [], b"", 0.0
    while True:
        ready, _, _ = select.select([controller], [], [], timeout)
        if not ready:
            process.kill()
            raise TimeoutError(f"{command} printed nothing for {timeout} s")
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closed: the process has exited
            chunk = b""
        if not chunk:
            break
        now = time.monotonic() - start
        if not pending:
            pending_since = now
        *complete, rest = (pending + chunk).split(b"\n")
        for i, line in enumerate(complete):
            lines.append((pending_since if i == 0 else now, line.decode().rstrip("\r")))
        if complete:
            pending_since = now
        pending = rest
    if pending:
        lines.append((pending_since, pending.decode().rstrip("\r")))
    stderr = process.stderr.read().decode()
    returncode = process.wait(timeout)
    os.close(controller)
    return TerminalRun(returncode, lines, time.monotonic() - start, stderr)
