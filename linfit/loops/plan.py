"""How a fit runs: the compile mode, and how much work each compiled call does.

A pure function of the fit's shape and the callbacks' needs, so every
decision is in one place and tested as a table (tests/test_plan.py).
"""

import math
from dataclasses import dataclass

# With compile = "auto", runs of at most this many steps, each on at most EAGER_VALUES
# numbers, run eagerly: tracing (about 0.1-0.3 s) costs more than it saves. On more
# data an eager step costs more than a compiled one (unfused ops make more passes
# over it: 10 million rows took 492 ms an epoch eagerly, 215 ms compiled).
EAGER_STEPS = 32
EAGER_VALUES = 1_000_000
# With steps_per_call = 0, the manual loop fuses epochs up to about this many steps a
# call, and this many numbers read (about 0.5 s of work here): a stop asked for (Ctrl-C)
# is honoured between calls, so a call must not run for minutes on big data.
FUSED_STEPS = 1024
FUSED_VALUES = 1 << 27


@dataclass(frozen=True)
class ExecutionPlan:
    """What one fit does per compiled call.

    Attributes:
      mode: "eager", "function" (tf.function) or "xla" (also XLA-compiled).
      epochs_per_call: the manual loop runs up to this many whole epochs per
        call, recording each one in the graph; 0 runs it batch by batch.
      epochs_aligned_to: the calls of whole epochs also end at each multiple of
        this epoch (a periodic checkpoint's: it is written between calls); 0: none.
      steps_per_call: batches per call when the manual loop runs batch by batch.
      steps_per_execution: Keras's `steps_per_execution` for the Keras loop.
      full_batch: one batch per epoch, in the data's order: the fused
        manual loop reads the data directly, with no tf.data in between.
    """

    mode: str
    epochs_per_call: int
    steps_per_call: int
    steps_per_execution: int
    full_batch: bool
    epochs_aligned_to: int = 0

    def epoch_blocks(self, epochs: range):
        """`epochs` (from a resumed run's epoch, maybe) in the calls of whole epochs."""
        start = epochs.start
        while start < epochs.stop:
            stop = min(start + self.epochs_per_call, epochs.stop)
            if self.epochs_aligned_to:
                stop = min(stop, (start // self.epochs_aligned_to + 1) * self.epochs_aligned_to)
            yield range(start, stop)
            start = stop


@dataclass(frozen=True)
class Workload:
    """The shape of a fit's work: batches per epoch, the epoch it trains up to (from
    epoch 0), the numbers a step reads (a batch's x and y), and whether batches
    are reshuffled each epoch; `in_variables`: whether the data is held in
    variables a fused call can read (not for streamed data, nor for a full
    batch taken in chunks: those go batch by batch)."""

    steps_per_epoch: int
    epochs: int
    values_per_step: int = 0
    shuffled: bool = False
    in_variables: bool = True


def plan_execution(*, compile: str, steps_per_call: int, work: Workload, distributed: bool,
                   user_hooks: frozenset[str] = frozenset(),
                   checkpoint_every: int = 0, checkpoint_batches: int = 0,
                   first_batch: int = 0) -> ExecutionPlan:
    """The plan of a fit.

    Args:
      compile: "auto", "eager", "function" or "xla". "auto" is eager for runs
        of at most EAGER_STEPS steps (counted from epoch 0, so a resumed run
        runs as the whole run would have) of at most EAGER_VALUES numbers
        each, where tracing costs more than it saves.
      steps_per_call: the user's batches per call; 0 is automatic.
      work: the shape of the run (see `Workload`).
      distributed: under a tf.distribute strategy with several replicas
        (compiled, batch by batch: `strategy.run` wants a tf.function, and
        Keras's multi-step loop fails on distributed batches).
      user_hooks: the callback hooks the user's callbacks override. Any
        hook may act during training (stop it, read the model), so the
        loops then go batch by batch, as `fit` does.
      checkpoint_every: periodic checkpoints are written between calls, at
        their epochs (0: none): the calls of whole epochs end on them.
      checkpoint_batches: and after every that many batches of an epoch: calls
        of that many batches, epoch by epoch (0: none).
      first_batch: a run resumed in the middle of an epoch starts it here.
    """
    steps_per_epoch = work.steps_per_epoch
    if checkpoint_batches:  # calls that end on every checkpoint's batch
        steps_per_call = math.gcd(steps_per_call, checkpoint_batches) if steps_per_call \
            else min(checkpoint_batches, steps_per_epoch)
    if distributed:
        mode = "function"
    elif compile != "auto":
        mode = compile
    else:
        cheap = work.epochs * steps_per_epoch <= EAGER_STEPS and \
            work.values_per_step <= EAGER_VALUES
        mode = "eager" if cheap else "function"
    return ExecutionPlan(
        mode=mode,
        epochs_per_call=0 if not work.in_variables or checkpoint_batches else _epochs_per_call(
            mode, steps_per_call, work, distributed, bool(user_hooks)),
        # Data not in variables (a stream) goes batch by batch: many batches a call
        # unless a callback of the user's acts between them.
        steps_per_call=steps_per_call or (
            1 if work.in_variables or user_hooks or distributed
            else min(FUSED_STEPS, steps_per_epoch)),
        # Keras's executions divide the epoch (and what is left of one a resumed run
        # starts inside): Keras runs an execution past an epoch's end, into the next.
        steps_per_execution=1 if distributed else math.gcd(
            min(steps_per_call or (1 if user_hooks else steps_per_epoch), steps_per_epoch),
            steps_per_epoch, steps_per_epoch - first_batch),
        full_batch=steps_per_epoch == 1 and not work.shuffled and work.in_variables,
        epochs_aligned_to=checkpoint_every)


def _epochs_per_call(mode: str, steps_per_call: int, work: Workload, distributed: bool,
                     user_hooks: bool) -> int:
    steps_per_epoch = work.steps_per_epoch
    if mode == "eager" or distributed:
        return 0
    if steps_per_call:
        return steps_per_call // steps_per_epoch if steps_per_call >= steps_per_epoch else 0
    if user_hooks:
        return 0
    values_per_epoch = max(1, steps_per_epoch * work.values_per_step)
    return max(1, min(FUSED_STEPS // steps_per_epoch, FUSED_VALUES // values_per_epoch))
