"""Writing files so that no reader ever sees half of one.

Every file linfit writes whole (checkpoints, metrics.json, report.md,
config.toml, ...) goes through `atomic_write`: a temporary file in the same
directory, fsync'd, renamed over the target, and the directory fsync'd so
that the rename itself survives a power cut. A kill at any moment leaves the
old file or the new one, never a mixture. Temporary names start with "."
and contain ".tmp", so `TEMPORARY_FILES` finds what a kill left behind.

What the commands print goes through `write_out`: a reader that goes away
(`| head`) ends the printing, not the command; a full disk is a WriteError.
"""

import errno
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from linfit.errors import WriteError

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

    Raises:
      WriteError: when the file system refuses (full, a size limit, permissions).
    """
    path = Path(path)
    temporary = None
    try:
        descriptor, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix,
                                            dir=path.parent)
        os.close(descriptor)
        temporary = Path(name)
        os.chmod(temporary, 0o644)  # mkstemp makes it private; these files are not
        write(temporary)
        with temporary.open("rb+") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
        fsync_directory(path.parent)
    except OSError as error:
        raise write_error(path, error) from None
    finally:
        if temporary is not None and temporary.exists():
            temporary.unlink()
    return path


def append_text(path: str | os.PathLike, text: str) -> None:
    """Append whole lines to a text file: on a failure the file is cut back to what
    it was, so it never ends in half a line.

    Raises:
      WriteError: when the file system refuses.
    """
    path = Path(path)
    data = text.encode("utf-8")
    try:
        with path.open("ab") as f:
            size = f.tell()
            try:
                f.write(data)
                f.flush()
            except OSError:
                f.truncate(size)
                raise
    except OSError as error:
        raise write_error(path, error) from None


# Why a write failed, in words a person can act on.
REASONS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
           errno.EFBIG: "the file would pass the file-size limit (ulimit -f)",
           errno.EACCES: "no permission", errno.EPERM: "no permission",
           errno.EROFS: "the file system is read-only"}


def write_error(path: Path, error: OSError) -> WriteError:
    if error.errno is None:  # not the file system's refusal (an HDF5 error, say)
        return WriteError(f"cannot write {path}: {error}")
    reason = REASONS.get(error.errno, error.strerror or str(error))
    return WriteError(f"cannot write {path}: {reason}: make room (or fix the permission) and "
                      "try again; what was written completely is intact")


def file_error(error: OSError) -> str:
    """What an OSError of a file linfit reads or changes says (no permission, a full
    disk), and what to do."""
    reason = REASONS.get(error.errno, error.strerror or str(error))
    return f"{error.filename or 'a file'}: {reason}: fix that (or give another run directory)"


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Replace a UTF-8 text file atomically (lines end in "\\n" on every platform)."""
    return atomic_write(path, lambda temporary: temporary.write_text(
        text, encoding="utf-8", newline="\n"))


def write_json(path: str | os.PathLike, value) -> Path:
    """Replace a JSON file atomically, indented; a float that is not finite (a user's
    metric can be NaN) is written as null: JSON has no NaN, and strict readers
    (jq, JavaScript) refuse Python's."""
    try:
        text = json.dumps(value, indent=2, allow_nan=False)
    except ValueError:
        text = json.dumps(_finite_or_null(value), indent=2)
    return write_text(path, text + "\n")


def _finite_or_null(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite_or_null(item) for item in value]
    return value


def fsync_directory(directory: Path) -> None:
    # A rename is durable only once the directory entry is on disk.
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def remove_matching(directory: Path, patterns: list[str]) -> None:
    """Remove the files matching `patterns` below `directory`, then the directories
    left empty; anything else stays."""
    if not directory.is_dir():
        return
    for pattern in patterns:
        for file in directory.rglob(pattern):
            file.unlink(missing_ok=True)
    for sub in sorted((d for d in directory.rglob("*") if d.is_dir()), reverse=True):
        if not any(sub.iterdir()):
            sub.rmdir()
    if not any(directory.iterdir()):
        directory.rmdir()


def write_out(text: str, stream=None) -> None:
    """Write `text` to `stream` (the standard output) and flush it. Once the reader has
    gone (`| head`), nothing more is written, and the command goes on.

    Raises:
      WriteError: when the output cannot be written (a full disk under `> log`).
    """
    stream = stream or sys.stdout
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        silence(stream)
    except OSError as error:
        silence(stream)
        raise write_error("the standard output", error) from None


def silence(stream) -> None:
    """Send what is left for `stream` to /dev/null, so the flush at exit does not fail
    again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, stream.fileno())
    os.close(devnull)
