"""`data.path` as several files: a glob ("data/part-*.csv") or a list of paths, read
as one table, shard after shard in the order of the sorted glob or the list.

Before anything is read, every shard is checked (the pre-flight): it exists,
and it has the first shard's columns (the same header row, for CSV files); a
shard that does not is named. The rows are then held in memory, as those of
one file are.
"""

import glob
from pathlib import Path

import numpy as np

from linfit.data_files import (aligned_empty, checked_file, float64_chunks, is_npz, read_header,
                               read_table, read_target_names, shown)
from linfit.errors import DataError
from linfit import npz_files

GLOB_CHARACTERS = frozenset("*?[")


def is_sharded(spec: str | Path | tuple[str, ...]) -> bool:
    """Whether `data.path` names several files (a list, or a glob pattern); a Path is
    one file, whatever its name."""
    if isinstance(spec, Path):
        return False
    return not isinstance(spec, str) or _is_pattern(spec)


def _is_pattern(text: str) -> bool:
    """A glob pattern, unless a file has that very name ("sales[2024].csv")."""
    return bool(GLOB_CHARACTERS & set(text)) and not Path(text).is_file()


def shard_paths(spec: str | tuple[str, ...]) -> list[Path]:
    """The files a glob pattern or a list of paths (patterns allowed) names, in order.

    Raises:
      DataError: for a pattern that matches no file, or a file named twice.
    """
    paths = []
    for pattern in [spec] if isinstance(spec, str) else spec:
        if not _is_pattern(pattern):
            paths.append(Path(pattern))
            continue
        found = sorted(Path(p) for p in glob.glob(pattern, recursive=True)
                       if not Path(p).is_dir())
        if not found:
            raise DataError(f"data.path {pattern!r} matches no file (a pattern is relative to "
                            "the current directory)")
        paths += found
    if not paths:
        raise DataError("data.path is an empty list: give a file, a glob or a list of files")
    twice = sorted({str(p) for p in paths if paths.count(p) > 1})
    if twice:
        raise DataError(f"data.path names {shown(Path(twice[0]))} twice: each shard once")
    return paths


def check_same_names(paths: list[Path], names: list[tuple[str, ...]], array: str = "x"
                     ) -> None:
    """Every shard's names of `array`'s columns the first one's (NPZ shards' x_names
    or y_names: a CSV's columns are chosen by name)."""
    for path, own in zip(paths[1:], names[1:]):
        if own != names[0]:
            raise DataError(f"shard {shown(path)} names {array}'s columns {', '.join(own)} but "
                            f"{shown(paths[0])} names them {', '.join(names[0])}: give every "
                            f"shard the same {array}_names")


def check_shards(paths: list[Path]) -> None:
    """The pre-flight: every shard readable, all CSV or all NPZ, every CSV header the
    first one's, every NPZ file's arrays of the first one's shapes and names.

    Raises:
      DataError: naming the first shard that does not fit.
    """
    kinds = [is_npz(checked_file(path)) for path in paths]
    if len(set(kinds)) > 1:
        raise DataError(f"data.path mixes CSV and NPZ files ({shown(paths[0])}, "
                        f"{shown(paths[kinds.index(not kinds[0])])}): give shards of one kind")
    if kinds[0]:
        _check_npz_shards(paths)
        return
    first = read_header(paths[0])
    for path in paths[1:]:
        header = read_header(path)
        if header != first:
            raise DataError(f"shard {shown(path)} has the columns {', '.join(header)} but "
                            f"{shown(paths[0])} has {', '.join(first)}: every file of "
                            "data.path needs the same header row")


def _check_npz_shards(paths: list[Path]) -> None:
    """NPZ shards' arrays, from their headers: x of one width (x of [N] and of [N, 1]
    are one feature), y of one shape, and the same x_names and y_names."""
    shapes = [npz_files.array_shapes(path) for path in paths]
    widths = [(int(np.prod(x[1:], dtype=np.int64)), y[1:]) for x, y in shapes]
    for path, (x, y), width in zip(paths[1:], shapes[1:], widths[1:]):
        if width != widths[0]:
            first_x, first_y = (shown_shape(shape) for shape in shapes[0])
            raise DataError(f"shard {shown(path)} holds x {shown_shape(x)} and y "
                            f"{shown_shape(y)} but {shown(paths[0])} holds x {first_x} and y "
                            f"{first_y}: give every shard arrays of the same shapes")
    check_same_names(paths, [npz_files.feature_names(path, widths[0][0]) for path in paths])
    outputs = widths[0][1][0] if widths[0][1] else None
    check_same_names(paths, [npz_files.target_names(path, outputs) for path in paths], "y")


def shown_shape(shape: tuple[int, ...]) -> str:
    """An array's shape as linfit names it: [N, d]."""
    return f"[N{''.join(f', {n}' for n in shape[1:])}]"


def read_shards(paths: list[Path], target: str | tuple[str, ...] = "",
                feature_names: tuple[str, ...] = ()
                ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], tuple[int, ...],
                           tuple[str, ...]]:
    """The shards' features, target and feature names, as `read_table` gives one file's,
    the rows of each shard, and the target's names (`read_target_names`)."""
    check_shards(paths)  # so every shard's columns are the first one's
    parts = [read_table(path, target, feature_names) for path in paths]
    outputs = None if parts[0][1].ndim == 1 else parts[0][1].shape[1]
    return (_joined([x for x, _, _ in parts]), _joined([y for _, y, _ in parts]), parts[0][2],
            tuple(len(y) for _, y, _ in parts),
            read_target_names(paths[0], target, feature_names, outputs))


def shard_chunks(paths: list[Path], target: str | tuple[str, ...] = "",
                 feature_names: tuple[str, ...] = ()):
    """The shards' (x, y) as read, in float64, chunk by chunk (see `float64_chunks`)."""
    for path in paths:
        yield from float64_chunks(path, target, feature_names)


def describe(spec: str | tuple[str, ...], paths: list[Path]) -> str:
    """`data/part-*.csv (3 files)`, as reports name the data."""
    named = spec if isinstance(spec, str) else ", ".join(spec)
    return f"{named} ({len(paths)} file{'s' if len(paths) > 1 else ''})"


def _joined(arrays: list[np.ndarray]) -> np.ndarray:
    """One array of the shards' rows, in memory TensorFlow can share (see `aligned_empty`)."""
    joined = aligned_empty((sum(len(a) for a in arrays), *arrays[0].shape[1:]))
    np.concatenate(arrays, out=joined)
    return joined
