"""What the command line prints: the guide's lines for each run, and how the runs agree."""

import numpy as np

from linfit.config import MODEL_CLASS_NAMES
from linfit.experiment import Comparison
from linfit.history import History


def format_state(w, b, loss: float) -> str:
    """As the guide prints it: `W = 4.47, b = 0.39, loss=6.29030`.

    A vector w prints as `W = [0.52, -1.20, 1.98]`, a w of several outputs
    as rows, `W = [[0.52, 1.00], [-1.20, 0.25]]`, and their b as a vector.
    """
    return f"W = {format_numbers(w)}, b = {format_numbers(b)}, loss={loss:2.5f}"


def format_numbers(values) -> str:
    """A number as `1.23`, an array as nested lists of such numbers."""
    values = np.asarray(values, dtype=float)
    if values.ndim == 0:
        text = f"{float(values):1.2f}"
        return "0.00" if text == "-0.00" else text  # a rounding error is not a sign
    return "[" + ", ".join(format_numbers(value) for value in values) + "]"


def guide_lines(history: History) -> list[str]:
    """The guide's printout: "Starting:", then "Epoch  0:" ... with W, b and loss."""
    lines = []
    for row, full_loss in enumerate(history.full_loss):
        lines.append("Starting:" if row == 0 else f"Epoch {row - 1:2d}:")
        if history.has_line:
            lines.append("    " + format_state(history.w[row], history.b[row], full_loss))
        else:
            lines.append(f"    loss={full_loss:2.5f}")
    return lines


def stop_line(history: History, epochs: int) -> str | None:
    """How a run that did not train all `epochs` ended, and which weights it kept;
    None for a run that trained them all and kept the last."""
    if not history.stopped and history.final_row == len(history.full_loss) - 1:
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
    if final["epoch"] != len(history.full_loss) - 1:
        text += f"; kept its best weights, from after {final['epoch']} epochs"
    if history.has_line:
        text += ": " + format_state(final["w"], final["b"], final["full_loss"])
    return text[0].upper() + text[1:]


def results_lines(comparison: Comparison, epochs: int) -> list[str]:
    """Each run's guide lines (and how it stopped), then the largest differences
    between the runs."""
    lines = []
    for run in comparison.runs:
        stop = stop_line(run.history, epochs)
        lines += [f"{MODEL_CLASS_NAMES[run.model_kind]} trained by the "
                  f"{run.loop} loop:", *guide_lines(run.history), *([stop] if stop else []), ""]
    if len(comparison.runs) > 1:
        lines += comparison.agreement.summary_lines()
    return lines
