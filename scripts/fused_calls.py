"""What bounding the manual loop's fused calls costs on big data.

    python scripts/fused_calls.py               # 50 full-batch epochs of 2**20 x 10, 6 pairs
    python scripts/fused_calls.py --features 1  # one feature: the bound does not bind

The compiled manual loop runs whole epochs in one call, at most
`linfit.loops.plan.FUSED_VALUES` numbers read, so that a stop (Ctrl-C) is
heeded within about a call: on 2**20 rows of ten features, 11 epochs a call.
(A full batch of more than 2**20 rows is summed in chunks, batch by batch, and
never fused: the bound is measured below that.) The baseline is the same
`Trainer.fit` with the bound lifted (every epoch in one call), measured in the
same process, alternating the two (A B, B A, ...: the second fit of a pair is
at times much slower, whichever it is); prints the epochs a call of each, each
pair's times and the ratio bounded / unbounded, then the median and the range.
It refuses data where the two plans are the same (nothing would be measured).
"""

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2**20)
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--pairs", type=int, default=6)
    args = parser.parse_args()

    import linfit.loops.plan as plan
    import linfit.trainer
    from linfit import LinearModule, Trainer

    rng = np.random.default_rng(0)
    shape = (args.rows,) if args.features == 1 else (args.rows, args.features)
    x = rng.normal(size=shape).astype(np.float32)
    y = (x.reshape(args.rows, -1).sum(axis=1) + 2 + rng.normal(0, 0.1, args.rows)).astype(
        np.float32)
    bounded, planned, plan_execution = plan.FUSED_VALUES, {}, linfit.trainer.plan_execution

    def spied(*args, **kwargs):  # the plan each fit runs by
        made = plan_execution(*args, **kwargs)
        planned[plan.FUSED_VALUES] = made.epochs_per_call
        return made

    linfit.trainer.plan_execution = spied

    def seconds(bound: int) -> float:
        plan.FUSED_VALUES = bound
        model = LinearModule() if args.features == 1 else LinearModule(features=args.features)
        trainer = Trainer(model, learning_rate=0.1)
        start = time.perf_counter()
        trainer.fit(x, y, epochs=args.epochs, loop="manual")
        return time.perf_counter() - start

    seconds(bounded)  # warm-up: the first fit pays for TensorFlow's start
    seconds(1 << 62)
    print(f"epochs a call: bounded {planned[bounded]}, unbounded {planned[1 << 62]}")
    if planned[bounded] == planned[1 << 62]:
        raise SystemExit("the bound does not bind on this data: nothing to measure (give "
                         "more features, or rows up to 2**20)")
    ratios = []
    for pair in range(args.pairs):  # A B, then B A: neither always runs second
        if pair % 2:
            bound, unbounded = seconds(bounded), seconds(1 << 62)
        else:
            unbounded, bound = seconds(1 << 62), seconds(bounded)
        ratios.append(bound / unbounded)
        print(f"unbounded {unbounded:.2f} s, bounded {bound:.2f} s: {ratios[-1]:.3f}",
              flush=True)
    print(f"bounded / unbounded: median {np.median(ratios):.3f}, "
          f"range {min(ratios):.3f}-{max(ratios):.3f} over {args.pairs} pairs")


if __name__ == "__main__":
    main()
