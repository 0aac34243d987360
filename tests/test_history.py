"""History: every form it takes (columns, JSON, metrics rows, CSV rows) says the same."""

import csv
import io

import numpy as np
import pytest

from linfit.history import History, bias_names, weight_names


def line_history(features=None, validation=False, epochs=3):
    history = History(settings={"batch_size": None})
    rng = np.random.default_rng(features or 1)
    for epoch in range(epochs + 1):
        row = {"full_loss": float(np.float32(rng.uniform(1, 9)))}
        if validation:
            row["val_loss"] = float(np.float32(rng.uniform(1, 9)))
        shape = () if features is None else (features,)
        row.update(w=rng.normal(size=shape).astype(np.float32),
                   b=float(np.float32(rng.normal())))
        history.append_row(row)
        if epoch:
            history.append_logs({"loss": float(np.float32(rng.uniform(1, 9))),
                                 "full_loss": row["full_loss"]})
    return history


def test_weight_names():
    assert weight_names(()) == weight_names((1,)) == ["w"]
    assert weight_names((3,)) == ["w_0", "w_1", "w_2"]
    # Several outputs: (feature, output), row by row, as np.ravel orders w's values.
    assert weight_names((2, 2)) == ["w_0_0", "w_0_1", "w_1_0", "w_1_1"]
    assert bias_names(()) == ["b"] and bias_names((2,)) == ["b_0", "b_1"]


def test_json_round_trip_is_exact():
    for history in (line_history(), line_history(3, validation=True)):
        again = History.from_json(history.to_json(), history.settings)
        assert again.to_json() == history.to_json() and again.settings == history.settings
        for a, b in zip(again.w, history.w):
            assert a.dtype == np.float32 and np.array_equal(a, b)


def test_metrics_rows_round_trip_to_the_same_columns():
    for history in (line_history(), line_history(3, validation=True)):
        run = {"loss": history.loss, "trajectory": history.metrics_rows()}
        again = History.from_metrics(run).columns()
        columns = history.columns()
        assert list(again) == list(columns)
        for name in columns:
            np.testing.assert_array_equal(again[name], columns[name])


def test_csv_rows_are_the_columns_exactly():
    history = line_history(3, validation=True)
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(history.csv_header())
    for epoch in range(history.epochs + 1):
        writer.writerow(history.csv_row(epoch))
    rows = list(csv.DictReader(io.StringIO(text.getvalue())))
    columns = history.columns()
    assert list(rows[0]) == list(columns) == ["loss", "full_loss", "val_loss", "w_0", "w_1",
                                               "w_2", "b"]
    assert rows[0]["loss"] == ""  # nothing was trained before epoch 0
    for name, values in columns.items():
        read = [float(row[name]) if row[name] else np.nan for row in rows]
        np.testing.assert_array_equal(read, values)


def test_a_model_without_w_and_b_records_losses_only():
    history = History()
    for loss in (4.0, 2.0):
        history.append_row({"full_loss": loss})
    history.append_logs({"loss": 3.0})
    assert not history.has_line and history.csv_header() == ["loss", "full_loss"]
    assert list(history.columns()) == ["loss", "full_loss"] and history.epochs == 1
    with pytest.raises(AttributeError, match="has no 'w': only a model with variables w and b"):
        history.w
    without_losses = History(trajectory={"val_loss": [1.0]})
    with pytest.raises(AttributeError, match="has no 'b'"):
        without_losses.b


def test_w_and_b_are_float32_arrays_in_every_path():
    """Issue 16: History.w held 0-d arrays where b held Python floats."""
    import linfit

    x = np.linspace(-1, 1, 16, dtype=np.float32)
    for model, y in ((linfit.LinearModule(), 3 * x + 1),
                     (linfit.LinearModel(features=2, outputs=2), np.stack([x, -x], axis=1))):
        inputs = x if y.ndim == 1 else np.stack([x, x * x], axis=1)
        history = linfit.Trainer(model).fit(inputs, y, epochs=2)
        loaded = History.from_json(history.to_json())
        for found in (history, loaded):
            for w, b in zip(found.w, found.b):
                assert type(w) is np.ndarray and type(b) is np.ndarray
                assert w.dtype == b.dtype == np.float32
                assert w.shape == model.w.shape and b.shape == model.b.shape
        row = history.metrics_rows()[-1]  # JSON: a float for one b, lists otherwise
        assert row["b"] == (float(history.b[-1]) if y.ndim == 1 else history.b[-1].tolist())


def test_a_resumed_runs_history_csv_is_replaced_whole_by_its_first_write(tmp_path):
    """A resume killed before its first epoch ended deleted history.csv: the file
    stays as the earlier process left it until the first write replaces it."""
    from linfit.experiment import RunLabel
    from linfit.run_records import HistoryCSV

    path = tmp_path / "history.csv"
    path.write_text("model,loop,epoch,loss\nmodule,manual,0,\n")  # the earlier process's
    before = path.read_bytes()
    records = HistoryCSV(path)
    assert path.read_bytes() == before
    history = History(logs={"loss": [2.0, 1.0]}, trajectory={"full_loss": [3.0, 2.0, 1.5]})
    records.write(RunLabel("module", "manual"), history)
    records.write(RunLabel("module", "keras"), history)
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["model", "loop", "epoch", *history.csv_header()]
    assert [row[:3] for row in rows[1:]] == [["module", loop, str(epoch)]
                                             for loop in ("manual", "keras")
                                             for epoch in range(3)]
