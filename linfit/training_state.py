"""What a training checkpoint holds besides the weights, and the checks it passes
before a run resumes from it.

The state is a JSON object: the settings that decide the run's numbers, the
epochs completed, the History so far, the stateful callbacks' progress, and
the model's weights in training units where the file's own are not those:
`resume_weights`, which training continues from (EarlyStopping may have
given the model an earlier epoch's weights at the end), and `final_weights`
(a standardised run saves its weights in the data's units). `resume_point`
checks all of it against the run about to resume before anything is
changed. NumPy only.
"""

from dataclasses import dataclass

import numpy as np

from linfit.errors import CheckpointError, ConfigError
from linfit.history import History


@dataclass(frozen=True)
class ResumePoint:
    """Where a checkpoint says a run stood, checked."""

    history: History
    epoch: int
    resume_weights: list[np.ndarray] | None = None
    final_weights: list[np.ndarray] | None = None
    callback_progress: list = ()
    batch: int = 0  # batches of epoch `epoch` trained (a checkpoint in its middle)
    epoch_progress: list | None = None  # then: the epoch's metric variables, as saved

    def done(self, epochs: int) -> bool:
        """Whether the run has nothing left to train for a fit up to `epochs`: it has
        trained them, or a callback stopped it early (EarlyStopping decided)."""
        return self.epoch >= epochs or self.history.stopped

    def model_weights(self, epochs: int) -> list[np.ndarray] | None:
        """The model as the run left it, in training units: where training goes on
        from, or, when it is `done`, its final weights."""
        return self.final_weights if self.done(epochs) else self.resume_weights


def training_state(history: History, epoch: int | None = None, resume_weights=None,
                   final_weights=None, middle: tuple[int, list] | None = None) -> dict:
    """The JSON state of a training checkpoint after `epoch` epochs (default: all),
    and `middle` = (batches, the epoch's metric variables) in the next epoch."""
    state = {**history.settings, "epoch": history.epochs if epoch is None else epoch,
             "history": history.to_json()}
    if middle is not None:
        state["batch"] = middle[0]
        state["epoch_progress"] = [np.asarray(value).tolist() for value in middle[1]]
    if history.callback_progress:
        state["callbacks"] = history.callback_progress
    for key, weights in (("resume_weights", resume_weights), ("final_weights", final_weights)):
        if weights is not None:
            state[key] = [np.asarray(value).tolist() for value in weights]
    return state


def changed_setting(saved: dict, settings: dict) -> tuple[str, object, object] | None:
    """(key, saved value, value now) of the first setting that differs, or None."""
    for key, value in settings.items():
        if _json(saved.get(key)) != _json(value):
            return key, saved.get(key), value
    return None


def resume_point(path, state: dict | None, settings: dict, shapes: list[tuple]) -> ResumePoint:
    """The checked position of a checkpoint, for a run with `settings` and
    variables of `shapes`.

    Raises:
      CheckpointError: for a weights-only file or a state that does not hold together.
      ConfigError: when the checkpoint was written with other settings (named).
    """
    if not state or "epoch" not in state or "history" not in state:
        raise CheckpointError(f"{path} is a weights-only checkpoint: it has no training "
                              "position to resume from")
    changed = changed_setting(state, settings)
    if changed:
        key, then, now = changed
        raise ConfigError(f"{path} was written by a run with {key}={then!r}, not {now!r}: "
                          "resume with the same data and settings, or start afresh")
    epoch = state["epoch"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise CheckpointError(f"{path}: its training state has epoch={epoch!r}, not a count "
                              "of epochs: the file is damaged")
    history = _history(path, state["history"], settings, epoch)
    weights = {key: None if state.get(key) is None else _weights(path, state[key], shapes)
               for key in ("resume_weights", "final_weights")}
    progress = state.get("callbacks", [])
    if not isinstance(progress, list) or not all(isinstance(p, dict) for p in progress):
        raise CheckpointError(f"{path}: its callbacks' progress is damaged")
    batch, epoch_progress = _middle(path, state)
    return ResumePoint(history, epoch, callback_progress=progress, batch=batch,
                       epoch_progress=epoch_progress, **weights)


def check_middle(path, point: ResumePoint, epochs: int, variables: int) -> None:
    """Refuse a checkpoint inside an epoch that a fit of `epochs` epochs, whose epoch
    logs are held in `variables` variables, cannot go on from.

    Raises:
      ConfigError: the checkpoint is inside an epoch the fit does not train.
      CheckpointError: it holds the logs of other metrics.
    """
    if not point.batch:
        return
    if point.epoch >= epochs:
        raise ConfigError(f"{path} is inside epoch {point.epoch + 1}: train at least "
                          f"{point.epoch + 1} epochs to go on from it")
    if len(point.epoch_progress) != variables:
        raise CheckpointError(f"{path} was saved inside an epoch with other metrics: "
                              "resume with the metrics it was trained with")


def _middle(path, state: dict) -> tuple[int, list | None]:
    """(batches into the next epoch, its metric variables) of a checkpoint."""
    batch = state.get("batch", 0)
    progress = state.get("epoch_progress")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 0 or (
            batch and not isinstance(progress, list)):
        raise CheckpointError(f"{path}: its position in the epoch (batch={batch!r}) is "
                              "damaged")
    try:
        values = None if not batch else [np.asarray(value, dtype=np.float64)
                                         for value in progress]
    except (TypeError, ValueError):
        raise CheckpointError(f"{path}: its epoch's metric values are damaged") from None
    return batch, values


def _history(path, data, settings: dict, epoch: int) -> History:
    try:
        history = History.from_json(data, settings)
        rows = {len(values) for values in history.trajectory.values()}
        consistent = history.epochs == epoch and rows <= {epoch + 1} and bool(rows)
    except (KeyError, TypeError, ValueError, AttributeError):
        consistent = False
    if not consistent:
        raise CheckpointError(f"{path}: its training history does not hold {epoch} epochs: "
                              "the file is damaged")
    return history


def _weights(path, values, shapes: list[tuple]) -> list[np.ndarray]:
    try:
        arrays = [np.asarray(value, dtype=np.float32) for value in values]
    except (TypeError, ValueError):
        arrays = None
    if arrays is None or [a.shape for a in arrays] != [tuple(s) for s in shapes]:
        raise CheckpointError(f"{path}: the weights it resumes from do not fit the model")
    return arrays


def _json(value):
    """A value as JSON has it (tuples are lists), to compare saved and current settings."""
    if isinstance(value, (list, tuple)):
        return [_json(item) for item in value]
    if isinstance(value, dict):
        return {key: _json(item) for key, item in value.items()}
    return value
