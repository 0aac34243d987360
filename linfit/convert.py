"""`python -m linfit.convert`: CSV shards to NPZ files a stream reads without parsing.

    python -m linfit.convert --data 'data/part-*.csv' --out data/npz
    python -m linfit.train --data 'data/npz/part-*.npz' --set data.streaming=true ...

Parsing CSV text costs several times what training a linear model on it
does, every epoch. Each CSV shard becomes one NPZ file of the same name
(uncompressed: x float32 [N, d], y float32 [N] or [N, k], and x_names and
y_names, the columns' names), whose rows a stream reads in place. The values
are those linfit's readers give, so a run on the NPZ files equals one on the
CSV files bitwise. The names are kept, so the run's checkpoints predict on
CSV files like the originals, finding their features and target by name.

Each shard is parsed once, chunk by chunk (tf.data, as a stream parses
it), its arrays written to temporary files beside the output and then put
in the archive: memory holds a chunk. Nothing is written before every
shard's header has been checked and its rows counted; a file is complete
or absent, and an existing file is never replaced. A failure names the
files written before it, which are kept.
"""

import argparse
import io
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from linfit.arguments import ArgumentParser
from linfit.data_files import shown
from linfit.errors import DataError, LinfitError, RunDirError
from linfit.fileio import atomic_write, write_error
from linfit.interrupts import interrupted_status, sigterm_interrupts
from linfit.npz_files import MAX_NAME, NAMES, TARGET_NAMES
from linfit.runtime import import_tensorflow
from linfit.streams import DataFiles, open_data_files

# How a stream's errors end when the in-memory reader would read the file.
STREAM_ADVICE = "or set data.streaming = false"


def main(argv=None, prog: str = "python -m linfit.convert") -> int:
    args = parse_args(argv, prog)
    with sigterm_interrupts():
        return convert(args)


def convert(args: argparse.Namespace) -> int:
    """The command, its arguments parsed: its exit status."""
    out = Path(args.out)
    made = not out.exists()
    written, outputs = [], []
    try:
        if not args.out.strip():  # Path("") is the current directory
            raise RunDirError("--out is empty: give the directory for the NPZ files")
        target = tuple(args.target.split(",")) if "," in args.target else args.target
        features = tuple(args.features.split(",")) if args.features else ()
        files = open_data_files(args.data, target, features)
        if files.arrays is not None:
            raise DataError(f"{files.source} is NPZ already: give CSV files")
        check_names(files)
        outputs = output_paths(files, out)
        import_tensorflow()
        for shard, path in enumerate(outputs):
            write_npz(_one_shard(files, shard), path)
            written.append(path)
            print(f"Wrote {path} ({files.rows[shard]} rows)")
    except (LinfitError, KeyboardInterrupt) as error:
        if made and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # made for nothing
        kept = (f" ({len(written)} of {len(outputs)} files were written before it, complete; "
                "they are kept: remove them, or convert into another --out)") if written else ""
        if isinstance(error, KeyboardInterrupt):  # Ctrl-C or SIGTERM
            print(f"interrupted: the file being written was removed{kept}", file=sys.stderr)
            return interrupted_status(error)
        message = str(error).replace(STREAM_ADVICE, "or train on the CSV files themselves "
                                     "with data.streaming = false (convert reads them as a "
                                     "stream does)")
        print(f"error: {message}{kept}", file=sys.stderr)
        return 2
    print(f"Train on them with --data '{out / '*.npz'}' --set data.streaming=true")
    return 0


def check_names(files: DataFiles) -> None:
    """Refuse columns whose names an NPZ file's x_names or y_names cannot hold (as
    `linfit.npz_files` reads them), before anything is written."""
    long = [name for name in files.feature_names + files.target_names if len(name) > MAX_NAME]
    if long:
        raise DataError(f"{files.source}: column {long[0][:40]!r}... has {len(long[0])} "
                        f"characters, more than the {MAX_NAME} an NPZ file's names hold: "
                        "shorten it")


def output_paths(files: DataFiles, out: Path) -> list[Path]:
    """The NPZ file each shard becomes, in `out` (made if missing).

    Raises:
      RunDirError: for an output that exists, two shards of one name, or an
        `out` that is a file.
      WriteError: for an `out` that cannot be made.
    """
    outputs = [out / f"{path.stem}.npz" for path in files.paths]
    twice = sorted({p.name for p in outputs if outputs.count(p) > 1})
    if twice:
        raise RunDirError(f"two shards would both become {twice[0]}: convert them into "
                          "different --out directories")
    existing = [p for p in outputs if p.exists()]
    if existing:
        raise RunDirError(f"{shown(existing[0])} exists: remove it, or choose another --out "
                          "(no file is replaced)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise RunDirError(f"--out {out} is a file: give a directory") from None
    except OSError as error:
        raise write_error(out, error) from None
    return outputs


def write_npz(files: DataFiles, out: Path) -> None:
    """One shard's rows as x and y float32 arrays in an uncompressed NPZ file `out`.

    Raises:
      DataError: naming the file, line and column of a row that is not numbers.
      WriteError: when the file system refuses (the partial files removed).
    """
    def write(temporary: Path) -> None:
        arrays = {name: temporary.with_name(f"{temporary.name}.{name}.npy") for name in "xy"}
        try:
            _write_arrays(files, arrays)
            with zipfile.ZipFile(temporary, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
                for name, path in arrays.items():
                    archive.write(path, f"{name}.npy")
                archive.writestr(f"{NAMES}.npy", _npy(np.array(files.feature_names)))
                archive.writestr(f"{TARGET_NAMES}.npy", _npy(np.array(files.target_names)))
        finally:
            for path in arrays.values():
                path.unlink(missing_ok=True)

    atomic_write(out, write)


def _write_arrays(files: DataFiles, arrays: dict[str, Path]) -> None:
    """x and y, chunk by chunk, into `arrays`' two .npy files (the rows known)."""
    from linfit.streaming import value_chunks

    rows = files.num_examples
    x_shape = (rows, len(files.feature_columns))
    y_shape = (rows,) if files.outputs is None else (rows, files.outputs)
    with arrays["x"].open("wb") as x_file, arrays["y"].open("wb") as y_file:
        for f, shape in ((x_file, x_shape), (y_file, y_shape)):
            np.lib.format.write_array_header_2_0(
                f, {"descr": "<f4", "fortran_order": False, "shape": shape})
        # The headers above say `rows`: a stream stops at a shard whose rows are not
        # those counted (see linfit.stream_formats), so no file is written short.
        for x, y in value_chunks(files):
            x_file.write(x.reshape(len(x), -1).astype("<f4").tobytes())
            y_file.write(y.astype("<f4").tobytes())


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _one_shard(files: DataFiles, shard: int) -> DataFiles:
    return replace(files.select(slice(shard, shard + 1)), source=str(files.paths[shard]))


def parse_args(argv=None, prog: str = "python -m linfit.convert") -> argparse.Namespace:
    parser = ArgumentParser(
        prog=prog, description="Convert CSV shards to NPZ files (float32 x and y, "
        "uncompressed), which a stream reads without parsing text.")
    parser.add_argument("--data", required=True, metavar="CSV",
                        help="a CSV file, or a glob of several ('data/part-*.csv', quoted)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="the directory for the NPZ files (one per CSV file, same name)")
    parser.add_argument("--target", default="", metavar="COLUMN",
                        help="the target column (default: y, else the last); several, "
                             "comma-separated, for several outputs")
    parser.add_argument("--features", default="", metavar="COLUMNS",
                        help="the feature columns, comma-separated (default: all the others)")
    return parser.parse_args(None if argv is None else [str(arg) for arg in argv])


if __name__ == "__main__":
    sys.exit(main())
