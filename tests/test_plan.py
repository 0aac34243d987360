"""plan_execution: every decision about how a fit runs, as a table."""

import pytest

from linfit.loops.plan import (EAGER_STEPS, EAGER_VALUES, FUSED_STEPS, FUSED_VALUES,
                               ExecutionPlan, Workload, plan_execution)

BASE = dict(compile="auto", steps_per_call=0, steps_per_epoch=1, epochs=10, shuffled=False,
            distributed=False, user_hooks=frozenset(), checkpoint_every=0)


@pytest.mark.parametrize("changes, expected", [
    # The guide: 10 full-batch epochs are 10 steps, cheaper eager than traced.
    ({}, ("eager", 0, 1, 1, True)),
    ({"epochs": EAGER_STEPS}, ("eager", 0, 1, 1, True)),
    ({"epochs": EAGER_STEPS + 1}, ("function", FUSED_STEPS, 1, 1, True)),
    # A few steps on big data (5 epochs of 10 million rows): compiled, which is cheaper,
    # a few epochs a call (1024 of them would not heed Ctrl-C for minutes), or one.
    ({"epochs": 5, "values_per_step": 2 * 10**7}, ("function", 6, 1, 1, True)),
    ({"epochs": 5, "values_per_step": 2 * 10**8}, ("function", 1, 1, 1, True)),
    ({"epochs": 100, "values_per_step": 10**6}, ("function", FUSED_VALUES // 10**6, 1, 1, True)),
    ({"epochs": 5, "values_per_step": EAGER_VALUES}, ("eager", 0, 1, 1, True)),
    # Batches: 4 a epoch; 7 epochs are 28 steps (eager), 100 are 400 (fused, 256 a call).
    ({"steps_per_epoch": 4, "epochs": 7}, ("eager", 0, 1, 4, False)),
    ({"steps_per_epoch": 4, "epochs": 100}, ("function", FUSED_STEPS // 4, 1, 4, False)),
    # More batches a epoch than FUSED_STEPS: still one epoch a call.
    ({"steps_per_epoch": 5000, "epochs": 3}, ("function", 1, 1, 5000, False)),
    # Forced modes.
    ({"compile": "eager", "epochs": 1000}, ("eager", 0, 1, 1, True)),
    ({"compile": "function"}, ("function", FUSED_STEPS, 1, 1, True)),
    ({"compile": "xla"}, ("xla", FUSED_STEPS, 1, 1, True)),
    # Callbacks that override a hook may act during training: batch by batch,
    # and the Keras loop one step per execution.
    ({"compile": "function", "steps_per_epoch": 4, "user_hooks": frozenset({"on_epoch_end"})},
     ("function", 0, 1, 1, False)),
    # steps_per_call: fewer than an epoch's batches, whole epochs, several epochs. Keras's
    # executions divide the epoch (3 of 4 batches ran on into the next epoch's).
    ({"compile": "function", "steps_per_epoch": 4, "steps_per_call": 3},
     ("function", 0, 3, 1, False)),
    ({"compile": "function", "steps_per_epoch": 6, "steps_per_call": 4},
     ("function", 0, 4, 2, False)),
    ({"compile": "function", "steps_per_epoch": 4, "steps_per_call": 4},
     ("function", 1, 4, 4, False)),
    ({"compile": "function", "steps_per_epoch": 4, "steps_per_call": 12},
     ("function", 3, 12, 4, False)),
    # Periodic checkpoints are written between calls, at their epochs.
    ({"compile": "function", "checkpoint_every": 5}, ("function", FUSED_STEPS, 1, 1, True, 5)),
    # Shuffled single batches still go through tf.data (the order changes).
    ({"compile": "function", "shuffled": True}, ("function", FUSED_STEPS, 1, 1, False)),
    # Under a strategy: compiled, batch by batch, whatever was asked.
    ({"compile": "eager", "distributed": True, "steps_per_epoch": 4, "steps_per_call": 8},
     ("function", 0, 8, 1, False)),
])
def test_plan(changes, expected):
    plan = planned(**{**BASE, **changes})
    assert plan == ExecutionPlan(*expected)


def test_a_resumed_run_is_planned_as_the_whole_run():
    # The plan takes the epoch to train up to, not the epochs left: a run of 40
    # epochs resumed at 30 is compiled as the straight run was, so the two give
    # the same bits.
    whole = planned(**{**BASE, "epochs": 40})
    assert whole.mode == "function"


@pytest.mark.parametrize("per_call, aligned_to, epochs, blocks", [
    (4, 0, range(0, 10), [(0, 4), (4, 8), (8, 10)]),
    # Calls end on the checkpoints' epochs (3, 6, 9), also from a resumed run's epoch.
    (4, 3, range(0, 10), [(0, 3), (3, 6), (6, 9), (9, 10)]),
    (4, 3, range(4, 10), [(4, 6), (6, 9), (9, 10)]),
    (1024, 100, range(0, 250), [(0, 100), (100, 200), (200, 250)]),
])
def test_calls_of_whole_epochs_end_on_the_checkpoints(per_call, aligned_to, epochs, blocks):
    plan = ExecutionPlan("function", per_call, 1, 1, True, epochs_aligned_to=aligned_to)
    assert [(block.start, block.stop) for block in plan.epoch_blocks(epochs)] == blocks


def test_a_checkpoint_inside_a_call_of_several_epochs_resumes_as_the_straight_run(tmp_path):
    """steps_per_call of 10 epochs' batches with checkpoints every 3 epochs: the
    checkpoint of epoch 3 held epoch 10's weights, and the run resumed from it
    trained 7 epochs too many."""
    import numpy as np

    from linfit import LinearModule, Trainer

    x = np.linspace(-2, 2, 100, dtype=np.float32)

    def fit(**options):
        trainer = Trainer(LinearModule(), learning_rate=0.01, steps_per_call=100)
        return trainer.fit(x, 3 * x + 2, epochs=10, batch_size=10, loop="manual", **options)

    straight = fit(checkpoint_dir=tmp_path, checkpoint_every=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"epoch-000{e}.weights.h5" for e in (3, 6, 9)]
    resumed = fit(resume_from=tmp_path / "epoch-0003.weights.h5")
    assert resumed.loss == straight.loss and resumed.w == straight.w


def planned(*, steps_per_epoch, epochs, shuffled, values_per_step=0, **others) -> ExecutionPlan:
    return plan_execution(work=Workload(steps_per_epoch, epochs, values_per_step, shuffled),
                          **others)


def test_checkpoints_inside_an_epoch_make_calls_that_end_on_them():
    """Calls end on every checkpoint's batch; Keras's executions divide the epoch (and
    the rest of an epoch a resumed run starts inside), or Keras runs past its end."""
    work = Workload(steps_per_epoch=63, epochs=3)

    def plan(**options):
        return plan_execution(compile="function", work=work, distributed=False, **options)

    checkpointed = plan(steps_per_call=0, checkpoint_batches=15)
    assert (checkpointed.epochs_per_call, checkpointed.steps_per_call,
            checkpointed.steps_per_execution) == (0, 15, 3)
    assert plan(steps_per_call=2, checkpoint_batches=3).steps_per_call == 1
    assert plan(steps_per_call=0, first_batch=30).steps_per_execution == 3


def test_checkpoints_every_more_batches_than_an_epoch_has_are_a_warning(tmp_path):
    import numpy as np

    from linfit import LinearModule, Trainer

    x = np.linspace(-1, 1, 40, dtype=np.float32)
    with pytest.warns(UserWarning, match="an epoch has 5: none is written inside an epoch"):
        Trainer(LinearModule()).fit(x, 2 * x, epochs=1, batch_size=8, checkpoint_dir=tmp_path,
                                    checkpoint_every_batches=5)
