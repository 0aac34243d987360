"""Config: defaults, TOML files, --set overrides and their errors."""

import dataclasses
from pathlib import Path

import pytest

from linfit.config import OPTIMIZERS, Config, load_config, parse_override, to_toml
from linfit.errors import ConfigError
from linfit.toml_text import toml_value

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_tutorial_toml_equals_the_defaults():
    assert load_config(CONFIGS / "tutorial.toml") == Config()


def test_every_shipped_config_loads():
    for path in CONFIGS.glob("*.toml"):
        assert isinstance(load_config(path), Config), path


def test_defaults_are_the_guides_setup():
    config = Config()
    assert (config.data.num_examples, config.data.true_w, config.data.true_b) == (201, 3.0, 2.0)
    assert (config.model.init_w, config.model.init_b) == (5.0, 0.0)
    assert (config.train.epochs, config.train.learning_rate, config.data.batch_size) == (10, 0.1, 0)
    assert config.model_kinds == ("module", "keras") and config.loops == ("manual", "keras")


def test_overrides_are_typed_toml_values():
    config = load_config(CONFIGS / "tutorial.toml", [
        "train.epochs=20", "train.learning_rate=1", "model.kind=keras",
        'train.optimizer="adam"', "model.init_w=[1, 2.5]", "data.true_w = [0.5, 1, 2]"])
    assert config.train.epochs == 20
    assert config.train.learning_rate == 1.0 and isinstance(config.train.learning_rate, float)
    assert config.model.kind == "keras" and config.model_kinds == ("keras",)
    assert config.train.optimizer == "adam"
    assert config.model.init_w == (1.0, 2.5) and config.data.true_w == (0.5, 1.0, 2.0)


def test_later_overrides_win(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[train]\nepochs = 3\n")
    assert load_config(path).train.epochs == 3
    assert load_config(path, ["train.epochs=4", "train.epochs=5"]).train.epochs == 5


@pytest.mark.parametrize("override, message", [
    ("train.epoch=3", "unknown key 'train.epoch': did you mean 'train.epochs'"),
    ("trian.epochs=3", r"unknown section \[trian\]: did you mean 'train'"),
    ("train.epochs=2.5", "train.epochs must be an integer, got 2.5"),
    ("train.epochs=true", "train.epochs must be an integer, got True"),
    ("train.learning_rate=fast", "train.learning_rate must be a number, got 'fast'"),
    ("model.init_w=[1, \"a\"]", "model.init_w must be a number or a list of numbers"),
    ("train.epochs=0", "train.epochs = 0 is impossible: it must be at least 1"),
    ("train.learning_rate=-0.1", "train.learning_rate = -0.1 is impossible"),
    ("train.optimizer=sgdd", "train.optimizer = 'sgdd' is impossible: it must be one of"),
    ("model.kind=linear", "model.kind = 'linear' is impossible"),
    ("train.loop=tape", "train.loop = 'tape' is impossible"),
    ("data.batch_size=-1", "data.batch_size = -1 is impossible"),
    ("data.num_examples=1", "data.num_examples = 1 is impossible"),
    ("model.init_w=[]", r"model.init_w = \[\] is impossible"),
    ("train.learning_rate=inf", "train.learning_rate = inf is impossible"),
    # Each was accepted, then failed in training with a traceback (or, for 1e-320,
    # float32's 0, trained nothing).
    ("train.early_stopping.min_delta=inf",
     "min_delta = inf is impossible: it must be a finite number >= 0"),
    ("train.epochs=9223372036854775808", "train.epochs = 9223372036854775808 is impossible: "
     r"it must be at least 1 \(and below 2\*\*31\)"),
    ("train.learning_rate=1e-320", "train.learning_rate = 1e-320 is impossible: it must be a "
     "number > 0 that float32 holds"),
    ("model.init_w=1e39", r"model.init_w = 1e\+39 is impossible: it must be finite in float32"),
    # Refused after TensorFlow had started, leaving a failed run directory; twice: a
    # second column, mae_1.
    ('train.metrics=["loss"]', "'loss' is a log linfit keeps itself"),
    ('train.metrics=["val_mae"]', "'val_mae' is a log linfit keeps itself"),
    ('train.metrics=["mae", "mae"]', "'mae' twice"),
    ("epochs=3", "expected SECTION.KEY=VALUE"),
    ("train.epochs", "expected SECTION.KEY=VALUE"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


@pytest.mark.parametrize("text, message", [
    ("[train\nepochs = 3", "not valid TOML"),
    ("train = 3", "'train' must be a table"),
    ("[train]\nepochs = 3\nlr = 0.1\n", "unknown key 'train.lr'"),
])
def test_bad_files_name_the_file(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as error:
        load_config(path)
    assert "bad.toml" in str(error.value)


def test_a_config_saved_with_a_byte_order_mark_reads(tmp_path):
    """Notepad's UTF-8 starts with a BOM, which tomllib takes for a statement."""
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf[train]\r\nepochs = 2\r\n")
    assert load_config(path).train.epochs == 2


@pytest.mark.parametrize("name", ["nl\nname.csv", "tab\t.csv", "bell\x07.csv", "ünï ☃.csv",
                                  'quote" back\\slash.csv', "tag\U000e0001.csv"])
def test_any_string_value_is_written_as_toml_that_reads_back(tmp_path, name):
    """config.toml held a control character raw: invalid TOML, so the run could not
    be resumed."""
    config = load_config(None, [f"data.path={toml_value(name)}"])
    (tmp_path / "c.toml").write_text(to_toml(config))
    assert load_config(tmp_path / "c.toml").data.path == name


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_bare_words_are_strings_and_toml_is_parsed():
    assert parse_override("model.kind=keras") == ("model", "kind", "keras")
    assert parse_override("data.path=data/my file.csv") == ("data", "path", "data/my file.csv")
    assert parse_override("train.epochs=007")[2] == "007"  # not TOML: then a type error
    assert parse_override('data.path="a=b.csv"') == ("data", "path", "a=b.csv")


def test_to_toml_round_trips(tmp_path):
    config = load_config(None, ["model.init_w=[1.5, -2]", "data.path=my \"data\".csv",
                                "train.learning_rate=1e-5"])
    path = tmp_path / "resolved.toml"
    path.write_text(to_toml(config))
    assert load_config(path) == config
    assert dataclasses.asdict(load_config(path)) == dataclasses.asdict(config)


def test_every_listed_optimizer_is_a_keras_optimizer():
    import keras

    for name in OPTIMIZERS:
        optimizer = keras.optimizers.get({"class_name": name, "config": {"learning_rate": 0.1}})
        assert isinstance(optimizer, keras.optimizers.Optimizer), name
