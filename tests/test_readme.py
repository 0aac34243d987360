"""The README's Python example runs as written, and its commands are CI's."""

import re
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_python_examples_run_in_order(tmp_path, monkeypatch):
    example = "\n".join(re.findall(r"```python\n(.*?)```", README, flags=re.S))
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(example, "README.md", "exec"), namespace)
    assert (tmp_path / "line.weights.h5").exists()
    assert np.isclose(float(namespace["keras_model"].w.numpy()),
                      float(namespace["model"].w.numpy()))
    assert namespace["history"].full_loss[-1] < namespace["history"].full_loss[0] / 5
    assert namespace["comparison"].agreement.agree


def test_ci_runs_the_readmes_test_command():
    commands = re.findall(r"```sh\n(.*?)\n```", README, flags=re.S)
    test_command = next(c for c in commands if "pytest" in c)
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()
