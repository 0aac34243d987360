"""Writing files so that no reader ever sees half of one.

Every file linfit writes whole (checkpoints, metrics.json, report.md,
config.toml, ...) goes through `atomic_write`: a temporary file in the same
directory, fsync'd, renamed over the target, and the directory fsync'd so
that the rename itself survives a power cut. A kill at any moment leaves the
old file or the new one, never a mixture. Temporary names start with "."
and contain ".tmp", so `TEMPORARY_FILES` finds what a kill left behind.
"""

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

# A glob for the temporary files `atomic_write` makes.
TEMPORARY_FILES = ".*.tmp*"


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None],
                 suffix: str = ".tmp") -> Path:
    """Have `write(temporary)` fill a temporary file beside `path`, then make it `path`.

    Args:
      path: the file to (re)place.
      write: writes the whole content to the temporary path it is given.
      suffix: the temporary file's ending (Keras's saver insists on
        ".weights.h5"); it always contains ".tmp".

    Returns:
      `path`. On any failure the temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    descriptor, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix,
                                        dir=path.parent)
    os.close(descriptor)
    temporary = Path(name)
    try:
        os.chmod(temporary, 0o644)  # mkstemp makes it private; these files are not
        write(temporary)
        with temporary.open("rb+") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Replace a UTF-8 text file atomically (lines end in "\\n" on every platform)."""
    return atomic_write(path, lambda temporary: temporary.write_text(
        text, encoding="utf-8", newline="\n"))


def fsync_directory(directory: Path) -> None:
    # A rename is durable only once the directory entry is on disk.
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
