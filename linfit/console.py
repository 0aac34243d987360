"""What the command line prints: each run as it trains, then a summary.

The first run prints the guide's lines live (a readable number of them for a
long run, see `PrintPlan`); each later run prints one line, how it compares
with the first. The summary answers the question the command asks: the
final state of each run next to the float64 optimum, whether the runs agree,
and what limits the learning rate.
"""

import sys
from dataclasses import dataclass

import numpy as np

from linfit.agreement import Agreement, compare_histories
from linfit.config import MODEL_CLASS_NAMES
from linfit.experiment import Comparison, RunResult
from linfit.fileio import write_out
from linfit.history import History

LOOP_NAMES = {"manual": "GradientTape loop", "keras": "Keras fit"}


def say(text: str = "", end: str = "\n", stream=None) -> None:
    """Print and flush; once the reader has gone (`| head`), print nothing more and let
    training finish: the run directory is what is kept (`linfit.fileio.write_out`)."""
    write_out(text + end, stream)


def run_title(label) -> str:
    """`module-manual (LinearModule, GradientTape loop)`."""
    return f"{label} ({MODEL_CLASS_NAMES[label.model]}, {LOOP_NAMES[label.loop]})"


def format_state(w, b, loss: float | None) -> str:
    """As the guide prints it: `W = 4.47, b = 0.39, loss=6.29030`.

    A vector w prints as `W = [0.52, -1.20, 1.98]`, a w of several outputs
    as rows, `W = [[0.52, 1.00], [-1.20, 0.25]]`, and their b as a vector.
    """
    state = f"W = {format_numbers(w)}, b = {format_numbers(b)}"
    return state if loss is None else f"{state}, loss={_loss(loss)}"


def format_numbers(values) -> str:
    """A number as `1.23`, an array as nested lists of such numbers."""
    values = np.asarray(values, dtype=float)
    if values.ndim == 0:
        if abs(float(values)) >= 1e6:  # a diverging run: powers of ten, not 20 digits
            return f"{float(values):.3g}"
        text = f"{float(values):1.2f}"
        return "0.00" if text == "-0.00" else text  # a rounding error is not a sign
    return "[" + ", ".join(format_numbers(value) for value in values) + "]"


def guide_row(history: History, row: int) -> list[str]:
    """Row `row` of the guide's printout: "Starting:" or "Epoch  3:", then W, b, loss.

    The loss is `full_loss`, the guide's number, after the epoch; a run that
    does not record it (train.record_full_loss = false) shows W and b only.
    """
    loss = history.full_loss[row] if history.full_loss else None
    title = "Starting:" if row == 0 else f"Epoch {row - 1:2d}:"
    if history.has_line:
        return [title, "    " + format_state(history.w[row], history.b[row], loss)]
    return [title, "    " + ("(no full_loss recorded)" if loss is None else f"loss={_loss(loss)}")]


@dataclass(frozen=True)
class PrintPlan:
    """Which epochs' guide lines a run of `epochs` epochs prints.

    `every` = 0 chooses: every epoch up to `ALL_UP_TO` epochs; beyond, the first
    and last `ENDS` epochs and every `stride`-th in between, a round stride
    that prints about `ROWS` lines of them.
    """

    epochs: int
    every: int = 0

    ALL_UP_TO = 20
    ENDS = 3
    ROWS = 10

    @property
    def stride(self) -> int:
        if self.every:
            return self.every
        if self.epochs <= self.ALL_UP_TO:
            return 1
        return next(stride for stride in _round_numbers() if self.epochs / stride <= self.ROWS)

    def shows(self, row: int) -> bool:
        """Whether row `row` (0: the start, k: after k epochs, "Epoch k-1") is printed."""
        if row == 0 or (row - 1) % self.stride == 0:  # Epoch 0, 50, 100, ...
            return True
        return not self.every and (row <= self.ENDS or row > self.epochs - self.ENDS)

    def note(self) -> str | None:
        """The line that says what is left out, or None when every epoch is printed."""
        if self.stride == 1:
            return None
        ends = f"the first and last {self.ENDS} epochs and " if not self.every else ""
        return (f"(printing {ends}one epoch in {self.stride} of {self.epochs}: "
                f"--set train.print_every=N to choose)")


def _round_numbers():
    """1, 2, 5, 10, 20, 50, 100, ..."""
    scale = 1
    while True:
        yield from (scale, 2 * scale, 5 * scale)
        scale *= 10


class LiveConsole:
    """Prints each run as it trains, through `RunHooks` (on_run_start,
    on_epoch_end, on_run_end).

    With `verbose` > 0 Keras prints its own progress, so the first run's
    guide lines are left out and each header labels Keras's lines.
    """

    def __init__(self, epochs: int, print_every: int = 0, verbose: int = 0, stream=None):
        self.plan = PrintPlan(epochs, print_every)
        self.verbose = verbose
        self.stream = stream or sys.stdout
        self.first: RunResult | None = None
        self.printed: dict[str, int] = {}  # label -> rows printed (or seen)
        self.resumed: dict[str, int] = {}  # label -> the epoch it resumed from
        self.line_open = False
        self.last_shown: dict[str, int] = {}  # label -> the last row printed
        self.current = None  # the run under way

    def print(self, text: str = "", end: str = "\n") -> None:
        say(text, end=end, stream=self.stream)
        self.line_open = end != "\n"

    def end_line(self) -> None:
        """End a line left open (a run's title, before its verdict), for another message."""
        if self.line_open:
            self.print()

    def run_start(self, label) -> None:
        self.current = label
        if self.first is None or self.verbose:
            self.print(run_title(label))
            if self.first is None and not self.verbose and self.plan.note():
                self.print(self.plan.note())
        else:  # its verdict follows on the same line when it ends
            self.print(run_title(label) + ":", end="")

    def epoch_end(self, label, history: History) -> None:
        if label not in self.printed:
            self.printed[label] = max(history.rows - 1, 0)
            if history.rows > 1:
                self.resumed[label] = history.rows - 1
                if self.first is None:
                    self.print(f"resumed {label} after {_epochs(history)}")
        if self.first is not None or self.verbose:
            return
        for row in range(self.printed[label], history.rows):
            if self.shows(label, row):
                self.print_row(label, history, row)
        self.printed[label] = history.rows

    def print_row(self, label, history: History, row: int) -> None:
        self.print("\n".join(guide_row(history, row)))
        self.last_shown[label] = row

    def run_stopped(self, history: History | None, why: str) -> None:
        """A run that ends without its verdict (diverged, interrupted, failed): its line
        is closed with `why`; for the first run, the last epoch it recorded is shown."""
        if self.line_open:
            self.print(f" {why}")
            return
        last = -1 if history is None else history.rows - 1
        if self.first is None and not self.verbose and last >= 0 and \
                self.last_shown.get(self.current) != last:
            self.print_row(self.current, history, last)
        self.print(f"({why})")

    def shows(self, label, row: int) -> bool:
        return self.plan.shows(row) or row == self.resumed.get(label)

    def run_end(self, run: RunResult) -> None:
        history = run.history
        if run.label not in self.printed and history.rows:  # resumed complete: not trained
            self.resumed[run.label] = history.rows - 1
            if self.first is None:
                self.print(f"resumed {run.label}: complete after {_epochs(history)}")
        if self.first is None:
            self.first = run
            last = history.rows - 1
            if not self.verbose and last >= 0 and self.last_shown.get(run.label) != last:
                self.print_row(run.label, history, last)
            stop = stop_line(history, self.plan.epochs)
            if stop:
                self.print(stop)
            return
        agreement = compare_histories([self.first.history, history],
                                      [self.first.label, run.label])
        text = f"{_resumed(self.resumed.get(run.label))}{_epochs(history)}, " \
               f"{pair_verdict(agreement)} ({run.seconds:.2f} s)" + \
               ("" if agreement.agree or self.verbose else "; its lines:")
        self.print(text if self.verbose else " " + text)
        if not agreement.agree and not self.verbose:
            self.print("\n".join(line for row in range(history.rows)
                                 if self.plan.shows(row) or row == history.rows - 1
                                 for line in guide_row(history, row)))


def _resumed(epochs: int | None) -> str:
    return "" if epochs is None else f"resumed after {epochs} epoch{'s' * (epochs != 1)}; "


def _epochs(history: History) -> str:
    return f"{history.epochs} epoch{'s' * (history.epochs != 1)}"


def pair_verdict(agreement: Agreement) -> str:
    """How a run compares with the first: bitwise, within tolerance, or where it parts."""
    first, other = agreement.labels
    if agreement.bitwise:
        return f"bitwise identical to {first}"
    if agreement.agree:
        name, (largest, epoch) = max(agreement.largest().items(),
                                     key=lambda item: agreement.max_rel[item[0]])
        return (f"agrees with {first} to {agreement.rtol:g} relative (not bitwise: "
                f"largest difference {agreement.max_rel[name]:.2g} relative, in {name} "
                f"at epoch {epoch})")
    epoch, name = agreement.first_difference
    if name == "epochs":
        return (f"stopped at another epoch than {first} ({' vs '.join(map(str, agreement.epochs))}"
                f" epochs; the first {min(agreement.epochs)} agree)")
    return (f"DIFFERS from {first}, first at epoch {epoch} in {name} (by "
            f"{agreement.max_rel[name]:.2g} relative at most)")


def stop_line(history: History, epochs: int) -> str | None:
    """How a run that did not train all `epochs` ended, and which weights it kept;
    None for a run that trained them all and kept the last."""
    if not history.stopped and history.final_row == history.rows - 1:
        return None
    stopping = history.early_stopping
    text = (f"stopped early after {history.epochs} of {epochs} epochs" if history.stopped
            else f"trained {history.epochs} epochs")
    if stopping is not None:
        text += f" (EarlyStopping on {stopping['monitor']}"
        if stopping["best_after"] is not None:
            text += f", best after {stopping['best_after']} epochs"
        text += ")"
    final = history.final()
    if final["epoch"] != history.rows - 1:
        text += f"; kept its best weights, from after {final['epoch']} epochs"
    if history.has_line:
        text += ": " + format_state(final["w"], final["b"], final.get("full_loss"))
    return text[0].upper() + text[1:]


def agreement_lines(agreement: Agreement) -> list[str]:
    """One line when the runs agree; the table of largest differences when not."""
    count = len(agreement.labels)
    if agreement.bitwise:
        names = list(agreement.values)
        return [f"All {count} runs agree bitwise: every epoch's {', '.join(names[:-1])} and "
                f"{names[-1]} are identical."]
    if agreement.agree:
        name = max(agreement.max_rel, key=agreement.max_rel.get)
        return [f"All {count} runs agree to {agreement.rtol:g} relative at every epoch "
                f"(not bitwise: largest difference {agreement.max_rel[name]:.2g} relative, "
                f"in {name})."]
    return agreement.summary_lines()


def summary_lines(comparison: Comparison, epochs: int, true_line=None,
                  devices: str | None = None, run_dir: str | None = None) -> list[str]:
    """The results: per run its final state, the optimum and the true line, the
    learning rate against its limit, the devices, and where everything is.

    Args:
      true_line: (w, b) of synthetic data, or None.
      devices: `runtime.describe_devices` of the devices used.
    """
    reference = comparison.reference
    rows = [["run", "W", "b", "full_loss", "gap", "epochs", "time"]]
    for run in comparison.runs:
        rows.append(_run_row(run, epochs, reference))
    if reference is not None:
        rows.append(["optimum", format_numbers(reference.w), format_numbers(reference.b),
                     _loss(reference.loss), "0", "", ""])
    if true_line is not None:
        rows.append(["true line", format_numbers(true_line[0]), format_numbers(true_line[1]),
                     "", "", "", ""])
    recorded = any(run.history.full_loss for run in comparison.runs)
    lines = ["", "Results (gap: full_loss minus the float64 least-squares optimum's loss)"
             if recorded else "Results (no full_loss recorded: train.record_full_loss = false)",
             *_table(rows)]
    if reference is not None:
        lines.append(rate_line(comparison))
    if devices:
        lines.append(f"Devices: {devices}")
    if run_dir:
        lines.append(f"Run directory: {run_dir}/ (report.md, figures, checkpoints, "
                     "history.csv, metrics.json)")
    return lines


def _run_row(run: RunResult, epochs: int, reference) -> list[str]:
    history = run.history
    final = history.final()
    loss = final.get("full_loss")
    gap = "" if reference is None or loss is None else f"{loss - reference.loss:.3g}"
    trained = str(history.epochs)
    if history.stopped:
        trained = f"{history.epochs} of {epochs}, stopped"
        if final["epoch"] != history.rows - 1:
            trained += f", best {final['epoch']} kept"
    return [str(run.label), format_numbers(final["w"]) if history.has_line else "",
            format_numbers(final["b"]) if history.has_line else "",
            "" if loss is None else _loss(loss), gap, trained, f"{run.seconds:.2f} s"]


def rate_line(comparison: Comparison) -> str:
    """The learning rate against its stability limit, and the contraction it gives
    (an MSE comparison: one with a reference)."""
    reference = comparison.reference
    text = (f"Learning rate {comparison.learning_rate:g}: the stability limit is "
            f"{reference.lr_limit:.4g}")
    rho = comparison.contraction
    if rho is not None:
        shown = f"{rho:.3g}" if f"{rho:.3g}" != "1" else \
            f"(1 {'−' if rho < 1 else '+'} {abs(1 - rho):.2g})"  # not ×1 when it isn't
        text += ("; |θ − θ*| does not shrink (×1 per epoch)" if rho == 1 else
                 f"; |θ − θ*| shrinks ×{shown} per epoch" if rho < 1 else
                 f"; |θ − θ*| grows ×{shown} per epoch: it diverges")
    return text


def _loss(value: float) -> str:
    """A loss as the guide prints it (5 decimals), or in powers of ten when huge."""
    return f"{value:.5f}" if abs(value) < 1e6 else f"{value:.4g}"


def _table(rows: list[list[str]]) -> list[str]:
    """Columns aligned: text to the left, numbers to the right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) if i == 0 else cell.rjust(width)
                 for i, (cell, width) in enumerate(zip(row, widths))]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines
