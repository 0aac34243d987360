"""`python -m linfit.compare RUN_A RUN_B`: do two finished runs agree?

Compares the runs the two directories have in common (`module-manual` with
`module-manual`, ...), epoch by epoch, and prints the largest differences.
Exit status: 0 when they agree, 1 when they differ, 2 on bad input. No
TensorFlow is imported.

The comparison itself is `linfit.agreement`; the exact answer runs are
compared against is `linfit.reference`.
"""

import sys
from pathlib import Path

from linfit.agreement import DEFAULT_RTOL, Agreement, compare_columns
from linfit.arguments import ArgumentParser
from linfit.config import load_config, toml_value
from linfit.config_help import config_items
from linfit.console import say
from linfit.errors import LinfitError, RunDirError
from linfit.run_records import run_status
from linfit.rundir import RunDir


def compare_run_dirs(path_a: str | Path, path_b: str | Path, rtol: float = DEFAULT_RTOL
                     ) -> tuple[dict[str, Agreement], dict[str, str]]:
    """Agreement of the runs two directories have in common, by label, over the
    quantities both recorded; and, by label, what only one of them recorded (such
    runs differ).

    Two directories of a single run each are compared whatever their labels.
    """
    runs_a, runs_b = RunDir(path_a).read_runs(), RunDir(path_b).read_runs()
    pairs = [(label, label) for label in runs_a if label in runs_b]
    if not pairs and len(runs_a) == len(runs_b) == 1:
        pairs = [(*runs_a, *runs_b)]
    if not pairs:
        raise RunDirError(f"{path_a} ({', '.join(runs_a)}) and {path_b} ({', '.join(runs_b)}) "
                          "have no model-loop run in common to compare")
    agreements, unshared = {}, {}
    for label_a, label_b in pairs:
        label = label_a if label_a == label_b else f"{label_a} vs {label_b}"
        a, b = runs_a[label_a].columns(), runs_b[label_b].columns()
        shared = [name for name in a if name in b]
        agreements[label] = compare_columns([{n: a[n] for n in shared}, {n: b[n] for n in shared}],
                                            [f"A:{label_a}", f"B:{label_b}"], rtol)
        if len(shared) != len(a) or len(shared) != len(b):
            unshared[label] = _unshared(a, b)
    return agreements, unshared


def _unshared(a: dict, b: dict) -> str:
    """What only one of two runs recorded, in words."""
    parts = [f"only {side} records {', '.join(n for n in mine if n not in other)}"
             for side, mine, other in (("A", a, b), ("B", b, a)) if set(mine) - set(other)]
    return "; ".join(parts) + " (other data, features, validation or settings)"


def main(argv=None, prog: str = "python -m linfit.compare") -> int:
    parser = ArgumentParser(
        prog=prog,
        description="Compare two linfit run directories (finished ones, or stopped: over the "
                    "epochs they recorded), run by run. Exit status: "
                    "0 when they agree, 1 when they differ, 2 on bad input.")
    parser.add_argument("run_a", metavar="RUN_A")
    parser.add_argument("run_b", metavar="RUN_B")
    parser.add_argument("--rtol", type=float, default=DEFAULT_RTOL,
                        help=f"relative tolerance, a finite number >= 0 (default "
                        f"{DEFAULT_RTOL:g})")
    args = parser.parse_args(None if argv is None else [str(arg) for arg in argv])
    try:
        agreements, unshared = compare_run_dirs(args.run_a, args.run_b, rtol=args.rtol)
        return print_comparison(args, agreements, unshared)
    except LinfitError as error:  # bad input, or a standard output that cannot be written
        print(f"error: {error}", file=sys.stderr)
        return 2


def print_comparison(args, agreements: dict, unshared: dict) -> int:
    """Print the comparison; its exit status: 0 when the runs agree, else 1."""
    say(f"A = {args.run_a}\nB = {args.run_b}\n")
    for name, path in (("A", args.run_a), ("B", args.run_b)):
        if (status := run_status(path)) != "complete":
            say(f"{name} did not finish ({status}): its runs are compared over the epochs "
                "they recorded.\n")
    for label, agreement in agreements.items():
        say(f"{label}:")
        if label in unshared:
            say(f"They DIFFER: {unshared[label]}. The quantities both record:")
        say("\n".join(agreement.summary_lines()))
        say()
    differing = [label for label, agreement in agreements.items()
                 if not agreement.agree or label in unshared]
    say("They differ in " + ", ".join(differing) + "." if differing else
        f"All {len(agreements)} compared runs agree.")
    try:
        changed = config_differences(args.run_a, args.run_b)
    except LinfitError as error:  # the runs are compared all the same
        say(f"Their configs cannot be compared: {error}")
    else:
        say("Config keys that differ: " + "; ".join(
            f"{key} = {a} in A, {b} in B" for key, a, b in changed) if changed else
            "Their configs are the same.")
    return 1 if differing else 0


def config_differences(path_a, path_b) -> list[tuple[str, str, str]]:
    """(key, value in A, value in B) for each config key the two runs set differently."""
    a, b = (config_items(load_config(Path(path) / RunDir.CONFIG)) for path in (path_a, path_b))
    return [(key, toml_value(value_a), toml_value(value_b))
            for (key, value_a, _), (_, value_b, _) in zip(a, b) if value_a != value_b]


if __name__ == "__main__":
    sys.exit(main())
