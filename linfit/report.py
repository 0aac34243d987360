"""report.md: a run directory's comparison, as a page a person reads in any viewer."""

from pathlib import Path

import numpy as np

from linfit.config import Config
from linfit.console import agreement_lines, rate_line, stop_line
from linfit.data import Data
from linfit.experiment import Comparison
from linfit.fileio import write_text
from linfit.runtime import describe_devices

KERAS_OFFSET = (
    "`loss` is Keras's number: the mean over an epoch's batches of the loss computed "
    "*before* each update, so with one full batch the `loss` of epoch k is the `full_loss` "
    "of the row before it; `full_loss` is computed on the whole training set *after* the "
    "epoch, and is the number the guide prints. That is the one-epoch offset between "
    "Keras's log and the guide's printout: Keras's epoch k shows the loss the guide printed "
    "for the epoch before.")


def write_report(path: Path, config: Config, data: Data, comparison: Comparison,
                 figures: list[str], devices: dict | None = None) -> Path:
    """Write report.md for a run directory and return its path.

    It leads with what the console's summary says: whether the runs agree,
    each run's final state next to the optimum, the learning rate against its
    limit, and the devices.
    """
    sections = [
        ["# linfit run report", "", *_summary_lines(comparison), "",
         *_setup_lines(config, data, devices)],
        _final_state_section(data, comparison),
        *_stopping_section(config, comparison),
        _agreement_section(comparison),
        _stability_section(config, comparison),
        _time_section(comparison),
        ["## Figures", "", *(f"![{Path(name).stem}]({name})" for name in figures),
         "", "Every epoch of every run is in `history.csv` and `metrics.json`."],
    ]
    write_text(path, "\n".join(line for section in sections for line in section) + "\n")
    return path


def _summary_lines(comparison: Comparison) -> list[str]:
    """The verdict, and the learning rate against its limit, in two sentences."""
    lines = []
    if len(comparison.runs) > 1:
        lines.append("**" + agreement_lines(comparison.agreement)[0].rstrip(":") + "**")
    if comparison.reference is not None:
        lines.append(rate_line(comparison) + ".")  # as the console's summary says it
    return [" ".join(lines)] if lines else []


def _setup_lines(config: Config, data: Data, devices: dict | None) -> list[str]:
    if data.true_w is not None:
        source = (f"synthetic line y = {_number(data.true_w)}·x + {data.true_b:g} + noise "
                  f"(σ = {config.data.noise_stddev:g}, seed {config.data.seed})")
    else:
        source = f"`{data.source}`"
    batches = ("one full batch" if not config.data.batch_size
               else f"batches of {config.data.batch_size}")
    if config.data.shuffle:
        batches += f", reshuffled each epoch (seed {config.data.seed})"
    if config.data.standardize:
        batches += ", on standardised features (W and b reported in the original units)"
    if data.files is not None:
        source += " (streamed" + (f", windows of {config.data.shuffle_buffer} rows shuffled"
                                  if config.data.shuffle else "") + ")"
    return [f"- **Data**: {source}; {data.num_examples} examples, "
            f"{len(data.feature_names)} feature(s) ({', '.join(data.feature_names)})",
            f"- **Model**: f(x) = x·W + b from W = {_number(config.model.init_w)}, "
            f"b = {_number(config.model.init_b)}"
            + (f", {data.y.shape[1]} outputs ({', '.join(data.target_names)})"
               if data.y.ndim == 2 else ""),
            f"- **Training**: {config.train.optimizer}, learning rate "
            f"{config.train.learning_rate:g}, {config.train.epochs} epochs, {batches}, "
            f"seed {config.train.seed}",
            *([f"- **Devices**: {describe_devices(devices)}"] if devices else []), ""]


def _final_state_section(data: Data, comparison: Comparison) -> list[str]:
    reference = comparison.reference
    validation = data.validation_examples > 0
    lines = ["## Final state", "",
             "The weights each run saved (its checkpoint), after the epochs shown.", "",
             "| run | epochs | W | b | full_loss | full_loss − optimum | ‖θ − θ*‖ |"
             + (" val_loss |" if validation else "") + " time |",
             "|---|---|---|---|---|---|---|" + ("---|" if validation else "") + "---|"]
    for run in comparison.runs:
        history = run.history
        final = history.final()
        w, b, gap, distance = "", "", "", ""
        if history.has_line:
            w, b = _number(final["w"], ".4f"), _number(final["b"], ".4f")
            if reference is not None:
                gaps = reference.gaps(history.columns())
                gap = _finite(gaps['loss_gap'][final['epoch']])
                distance = f"{gaps['distance'][final['epoch']]:.3g}"
        val = f" {final['val_loss']:.6g} |" if validation else ""
        loss = final.get("full_loss")
        lines.append(f"| {run.label} | {final['epoch']} | {w} | {b} | "
                     f"{'' if loss is None else format(loss, '.6g')} | "
                     f"{gap} | {distance} |{val} {run.seconds:.2f} s |")
    blank = " |" * (2 if validation else 1)
    if reference is not None:
        lines.append(f"| **optimum** (float64 least squares) | | {_number(reference.w, '.4f')} "
                     f"| {_number(reference.b, '.4f')} | {reference.loss:.6g} | 0 | 0 |{blank}")
    if data.true_w is not None:
        lines.append(f"| true line | | {_number(data.true_w, '.4f')} | {data.true_b:.4f} | | | |"
                     f"{blank}")
    if validation:
        lines += ["", f"`val_loss` is the loss on {data.validation_examples} held-out examples, "
                      "after each epoch."]
    return [*lines, ""]


def _stopping_section(config: Config, comparison: Comparison) -> list[list[str]]:
    """How runs that stopped early (or kept an earlier epoch's weights) ended."""
    lines = [f"- **{run.label}**: {line}" for run in comparison.runs
             if (line := stop_line(run.history, config.train.epochs))]
    return [["## Early stopping", "", *lines, ""]] if lines else []


def _agreement_section(comparison: Comparison) -> list[str]:
    agreement = comparison.agreement
    count = len(comparison.runs)
    if count < 2:
        return ["## Agreement", "", "One run only: nothing to compare.", ""]
    if agreement.agree:
        verdict = (f"**Yes: the {count} runs agree to {agreement.rtol:g} relative at every "
                   f"epoch.**")
        if max(agreement.max_abs.values()) == 0:
            verdict += " They are bitwise identical."
    else:
        epoch, name = agreement.first_difference
        verdict = (f"**No: the runs differ by more than {agreement.rtol:g} relative, first "
                   f"at epoch {epoch} in `{name}`.**")
    lines = ["## Do the manual loop and `fit` agree?", "", verdict, "",
             "| quantity | largest abs. difference | largest rel. difference | at epoch |",
             "|---|---|---|---|"]
    for name, (largest, epoch) in agreement.largest().items():
        lines.append(f"| `{name}` | {largest:.3g} | {agreement.max_rel[name]:.3g} | "
                     f"{'—' if epoch is None else epoch} |")
    return [*lines, "", KERAS_OFFSET, ""]


def _stability_section(config: Config, comparison: Comparison) -> list[str]:
    reference = comparison.reference
    if reference is None:
        return []
    rate = config.train.learning_rate
    lines = ["## Learning rate and convergence", "",
             f"For full-batch gradient descent on this data the learning rate must stay below "
             f"2 / λmax(H) = **{reference.lr_limit:.4g}** (H = (2/N)·AᵀA, A = [X 1]"
             f"{'' if comparison.runs[0].history.w[0].ndim < 2 else ', divided by the outputs'}); "
             f"this run used {rate:g}."]
    warning = reference.stability_warning(rate)
    if warning:
        lines.append(f"**Warning: {warning}.**")
    if comparison.contraction is not None:
        rho = comparison.contraction
        lines.append(f"Theory predicts ‖θ − θ*‖ {'shrinks' if rho < 1 else 'grows'} by "
                     f"×{rho:.4g} per epoch (the loss gap "
                     f"by ×{rho * rho:.4g}).")
        observed = _observed_contraction(comparison)
        if observed is not None:
            lines.append(f"Observed over the last epoch: ×{observed:.4g}.")
    else:
        lines.append("The predicted contraction holds for full-batch plain SGD only.")
    return [*lines, ""]


def _observed_contraction(comparison: Comparison) -> float | None:
    history = comparison.runs[0].history
    if "w" not in history.trajectory or history.epochs < 1:
        return None
    distance = comparison.reference.gaps(history.columns())["distance"]
    return float(distance[-1] / distance[-2]) if distance[-2] > 0 else None


def _time_section(comparison: Comparison) -> list[str]:
    lines = ["## Wall time", "", "| run | seconds | per epoch |", "|---|---|---|"]
    for run in comparison.runs:
        trained = run.history.epochs_trained  # since it resumed; none: it was complete
        per_epoch = f"{run.seconds / trained * 1000:.2f} ms" if trained else "–"
        lines.append(f"| {run.label} | {run.seconds:.3f} | {per_epoch} |")
    modes = {run.trainer.execution_mode for run in comparison.runs} - {None}
    if modes - {"eager"}:
        lines += ["", "Times include tracing the `tf.function`s on the first epoch."]
    elif modes:
        lines += ["", "The steps ran eagerly: nothing was traced (`train.compile` chooses)."]
    return [*lines, ""]


def _finite(value: float) -> str:
    """A number to 3 digits; "" where there is none (NaN: not recorded)."""
    return "" if np.isnan(value) else f"{value:.3g}"


def _number(value, spec: str = "g") -> str:
    """A number or a list of numbers, each formatted with `spec`."""
    array = np.asarray(value, dtype=float)
    if array.ndim == 0:
        return format(float(array), spec)
    return "[" + ", ".join(_number(v, spec) for v in array) + "]"
