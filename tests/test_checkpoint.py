"""Checkpoints: Keras's .weights.h5 layout, both ways, all or nothing."""

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from linfit import CheckpointError, LinearModel, LinearModule, load_weights, save_weights

VARIANTS = [LinearModule, LinearModel]


def values(model):
    return model.w.numpy().tolist(), float(model.b.numpy())


@pytest.mark.parametrize("source", VARIANTS)
@pytest.mark.parametrize("target", VARIANTS)
@pytest.mark.parametrize("features", [None, 3])
def test_round_trip_across_variants(tmp_path, source, target, features):
    saved = source(features=features, init_w=[1.5, -2.0, 0.5] if features else 1.5, init_b=-0.7)
    path = save_weights(saved, tmp_path / "m.weights.h5")
    restored = target(features=features)
    load_weights(restored, path)
    assert values(restored) == values(saved)


class PlainKerasLine(keras.Model):
    """Not linfit's: any keras.Model with w then b made by add_weight."""

    def __init__(self):
        super().__init__()
        self.w = self.add_weight(shape=(), initializer="zeros", name="slope")
        self.b = self.add_weight(shape=(), initializer="zeros", name="intercept")

    def call(self, x):
        return x * self.w + self.b


def test_plain_keras_save_weights_loads_into_module_and_predicts_the_same(tmp_path):
    plain = PlainKerasLine()
    plain.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x = np.linspace(-2, 2, 50, dtype=np.float32)
    plain.fit(x, 3 * x + 2, epochs=3, batch_size=50, verbose=0)  # also writes optimizer state
    path = tmp_path / "plain.weights.h5"
    plain.save_weights(path)
    module = LinearModule()
    load_weights(module, path)
    np.testing.assert_array_equal(module(x).numpy(), plain(x).numpy())
    assert module.w.numpy() != 5.0


def test_linfit_file_loads_with_plain_keras_load_weights(tmp_path):
    path = save_weights(LinearModule(init_w=2.0, init_b=1.0), tmp_path / "m.weights.h5")
    plain = PlainKerasLine()
    plain(np.zeros(1, np.float32))  # plain Keras loads only into a built model
    plain.load_weights(path)
    assert (float(plain.w.numpy()), float(plain.b.numpy())) == (2.0, 1.0)


def test_file_layout_is_keras_layout(tmp_path):
    module_file = save_weights(LinearModule(features=2), tmp_path / "a.weights.h5")
    keras_file = tmp_path / "b.weights.h5"
    LinearModel(features=2).save_weights(keras_file)

    def layout(path):
        items = {}

        def record(name, obj):
            items[name] = getattr(obj, "shape", None)

        with h5py.File(path) as f:
            f.visititems(record)
        return items

    assert layout(module_file) == layout(keras_file) == {"vars": None, "vars/0": (2,),
                                                         "vars/1": ()}


def test_guides_empty_checkpoint_is_refused(tmp_path):
    class GuideKerasModel(keras.Model):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(5.0)
            self.b = tf.Variable(0.0)

        def call(self, x):
            return self.w * x + self.b

    path = tmp_path / "my_checkpoint.weights.h5"
    guide_model = GuideKerasModel()
    guide_model(np.zeros(1, np.float32))  # the guide trains it by hand first
    guide_model.save_weights(path)  # what the guide does: an empty vars group
    model = LinearModule(init_w=1.0)
    with pytest.raises(CheckpointError, match="holds no variables.*MyModelKeras"):
        load_weights(model, path)
    assert values(model) == (1.0, 0.0)


def write_vars(path, *arrays):
    with h5py.File(path, "w") as f:
        group = f.create_group("vars")
        for i, array in enumerate(arrays):
            group.create_dataset(str(i), data=array)
    return path


@pytest.mark.parametrize("arrays, message", [
    ((np.float32(1.0),), "holds 1 variables but LinearModel has 2"),
    ((np.float32(1.0), np.float32(2.0), np.float32(3.0)), "holds 3 variables"),
    ((np.ones(3, np.float32), np.float32(2.0)), r"shape \[3\] in the file but \[\]"),
    ((np.float64(1.0), np.float64(2.0)), "float64 in the file but float32"),
])
def test_mismatched_files_are_refused_and_model_unchanged(tmp_path, arrays, message):
    path = write_vars(tmp_path / "bad.weights.h5", *arrays)
    model = LinearModel(init_w=4.0, init_b=0.5)
    with pytest.raises(CheckpointError, match=message):
        load_weights(model, path)
    assert values(model) == (4.0, 0.5)


def test_unreadable_and_misnamed_files(tmp_path):
    model = LinearModule()
    with pytest.raises(CheckpointError, match="must end with '.weights.h5'"):
        save_weights(model, tmp_path / "model.h5")
    with pytest.raises(CheckpointError, match="must end with '.weights.h5'"):
        load_weights(model, tmp_path / "model.keras")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_weights(model, tmp_path / "missing.weights.h5")
    (tmp_path / "text.weights.h5").write_text("not hdf5")
    with pytest.raises(CheckpointError, match="not a readable HDF5 file"):
        load_weights(model, tmp_path / "text.weights.h5")
    with pytest.raises(CheckpointError, match="directory .* does not exist"):
        save_weights(model, tmp_path / "no" / "m.weights.h5")


def test_save_replaces_atomically_and_leaves_no_temporary(tmp_path):
    path = save_weights(LinearModule(init_w=1.0), tmp_path / "m.weights.h5")
    save_weights(LinearModule(init_w=2.0), path)
    assert [p.name for p in tmp_path.iterdir()] == ["m.weights.h5"]
    model = LinearModel()
    load_weights(model, path)
    assert values(model) == (2.0, 0.0)


def test_adapter_save_and_load_go_through_linfit(tmp_path):
    from linfit.models import KerasModuleAdapter

    adapter = KerasModuleAdapter(LinearModule(init_w=3.0))
    adapter.save_weights(tmp_path / "a.weights.h5")
    restored = LinearModule()
    KerasModuleAdapter(restored).load_weights(tmp_path / "a.weights.h5")
    assert values(restored) == (3.0, 0.0)
    with pytest.raises(CheckpointError, match="must end with"):
        adapter.save_weights(tmp_path / "a.h5")


# Hostile and broken files: each is refused before anything is read from it,
# and the model keeps its values.

def hostile(tmp_path, build):
    path = tmp_path / "hostile.weights.h5"
    with h5py.File(path, "w") as f:
        build(f, tmp_path)
    return path


def soft_link(f, _):
    group = f.create_group("vars")
    group.create_dataset("0", data=np.float32(1.0))
    group["1"] = h5py.SoftLink("/vars/0")


def external_link(f, tmp_path):
    with h5py.File(tmp_path / "elsewhere.h5", "w") as other:
        other.create_group("vars").create_dataset("0", data=np.float32(1.0))
    f["vars"] = h5py.ExternalLink(str(tmp_path / "elsewhere.h5"), "/vars")


def external_dataset(f, tmp_path):
    (tmp_path / "raw.bin").write_bytes(np.float32([7.0, 8.0, 9.0]).tobytes())
    group = f.create_group("vars")
    group.create_dataset("0", shape=(3,), dtype="<f4", external=[(str(tmp_path / "raw.bin"),
                                                                  0, 12)])
    group.create_dataset("1", data=np.float32(0.0))


def virtual_dataset(f, tmp_path):
    with h5py.File(tmp_path / "source.h5", "w") as other:
        other.create_dataset("data", data=np.float32([7.0, 8.0, 9.0]))
    layout = h5py.VirtualLayout(shape=(3,), dtype="<f4")
    layout[:] = h5py.VirtualSource(str(tmp_path / "source.h5"), "data", shape=(3,))
    group = f.create_group("vars")
    group.create_virtual_dataset("0", layout)
    group.create_dataset("1", data=np.float32(0.0))


def shape_bomb(f, _):
    group = f.create_group("vars")
    group.create_dataset("0", shape=(2**40,), dtype="<f4", chunks=(1024,))  # no data written
    group.create_dataset("1", data=np.float32(0.0))


def int_weights(f, _):
    group = f.create_group("vars")
    group.create_dataset("0", data=np.int32([1, 2, 3]))
    group.create_dataset("1", data=np.float32(0.0))


def missing_vars_group(f, _):
    f.create_group("other")


@pytest.mark.parametrize("build, message", [
    (soft_link, "'vars/1' is a SoftLink"),
    (external_link, "'vars' is a ExternalLink"),
    (external_dataset, "keeps its data outside the file"),
    (virtual_dataset, "keeps its data outside the file"),
    (shape_bomb, r"shape \[1099511627776\] in the file but \[3\]"),
    (int_weights, "int32 in the file but float32"),
    (missing_vars_group, "holds other besides 'vars'"),
], ids=["soft-link", "external-link", "external-dataset", "virtual-dataset", "shape-bomb",
        "wrong-dtype", "no-vars"])
def test_hostile_files_are_refused_and_the_model_is_unchanged(tmp_path, build, message):
    path = hostile(tmp_path, build)
    model = LinearModel(features=3, init_w=[1.0, 2.0, 3.0], init_b=4.0)
    with pytest.raises(CheckpointError, match=message):
        load_weights(model, path)
    assert values(model) == ([1.0, 2.0, 3.0], 4.0)


def test_shape_bomb_is_refused_without_a_model_too(tmp_path):
    from linfit.checkpoint import read_weights

    with pytest.raises(CheckpointError, match="not a weight linfit can load"):
        read_weights(hostile(tmp_path, shape_bomb))


def test_truncated_file_is_refused_and_the_model_is_unchanged(tmp_path):
    path = save_weights(LinearModel(features=1000, init_w=1.0), tmp_path / "big.weights.h5")
    data = path.read_bytes()
    for size in (len(data) // 2, len(data) - 100, 100):
        path.write_bytes(data[:size])
        model = LinearModel(features=1000, init_w=3.0)
        with pytest.raises(CheckpointError, match="not a readable HDF5 file|damaged or truncated"):
            load_weights(model, path)
        assert set(model.w.numpy()) == {3.0}


def test_extra_and_missing_variables_leave_both_variants_unchanged(tmp_path):
    for arrays in ((np.float32(1.0),), (np.float32(1.0), np.float32(2.0), np.float32(3.0))):
        path = write_vars(tmp_path / "bad.weights.h5", *arrays)
        for cls in VARIANTS:
            model = cls(init_w=4.0, init_b=0.5)
            with pytest.raises(CheckpointError, match=f"holds {len(arrays)} variables"):
                load_weights(model, path)
            assert values(model) == (4.0, 0.5)
