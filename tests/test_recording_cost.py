"""The CLI's recording costs the same per epoch however long the run (issue 17).

Counted, not timed: the history cells built while training (history.csv's new
rows, the console's lines), whole-history conversions (History.columns,
to_json) and conversions to the data's units, for runs of 10 and 40 epochs.
"""

import pytest

from linfit import history as history_module
from linfit.data import Standardizer
from linfit.rundir import RunDir
from linfit.train import main


def count_recording(monkeypatch, tmp_path, epochs: int) -> dict[str, int]:
    """What a standardised CLI run of `epochs` epochs built before writing its results."""
    counts = {"cells": 0, "columns": 0, "to_json": 0, "to_original": 0}
    training = {"on": True}

    def counted(name, function):
        def wrapper(*args, **kwargs):
            if training["on"]:
                counts[name] += 1
            return function(*args, **kwargs)
        return wrapper

    History = history_module.History
    monkeypatch.setattr(History, "_value", counted("cells", History._value))
    monkeypatch.setattr(History, "columns", counted("columns", History.columns))
    monkeypatch.setattr(History, "to_json", counted("to_json", History.to_json))
    monkeypatch.setattr(Standardizer, "to_original",
                        counted("to_original", Standardizer.to_original))
    write_results = RunDir.write_results

    def results_after_training(self, *args, **kwargs):
        training["on"] = False  # the final files are written once, whole
        return write_results(self, *args, **kwargs)

    monkeypatch.setattr(RunDir, "write_results", results_after_training)
    assert main(["--model", "module", "--loop", "both", "--set", f"train.epochs={epochs}",
                 "--set", "data.standardize=true", "--set", "data.validation_split=0.2",
                 "--set", "train.print_every=1", "--out", tmp_path / f"run{epochs}"]) == 0
    return counts


def test_the_cost_of_recording_an_epoch_does_not_grow_with_the_run(monkeypatch, tmp_path,
                                                                   capsys):
    short, long = (count_recording(monkeypatch, tmp_path, epochs) for epochs in (10, 40))
    capsys.readouterr()
    # Whole histories are built once per run (to compare it with the first), never
    # per epoch: as many for 40 epochs as for 10.
    assert short["columns"] == long["columns"] <= 4
    assert short["to_json"] == long["to_json"] == 0
    # Rows 0..E of two runs: each built once for history.csv and once for the console.
    for name in ("cells", "to_original"):
        assert short[name] > 0
        assert long[name] / (2 * 41) == pytest.approx(short[name] / (2 * 11), rel=0.02), name
