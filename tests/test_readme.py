"""The README and docs/*.md do what they say.

- Every Python block runs on its own: in a fresh interpreter, in an empty
  temporary working directory, leaving nothing there but `runs/`. Blocks that
  promise numbers are held to them by CHECKS, run after the block in the
  same interpreter.
- Every TOML block is a valid config, and so is every `python -m linfit.train`
  command's --config and --set.
- The guide's stuck loss quoted in docs/keras-parity.md is the script's.
- Every relative link reaches a file, and every #anchor a heading (GitHub's
  heading slugs); the README's table of contents is on its first screen and
  links to every section.
- The README's test command is CI's.
"""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from linfit.config import load_config

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README = (ROOT / "README.md").read_text()
FIRST_SCREEN = 40  # lines of the README in which its table of contents must be


def code_blocks(path: Path) -> list[tuple[str, int, str]]:
    """(language, line of the block's first code line, code) for each fenced block."""
    blocks, language, start, lines = [], None, 0, []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if language is None and line.startswith("```"):
            language, start, lines = line[3:].strip(), number + 1, []
        elif language is not None and line.startswith("```"):
            blocks.append((language, start, "\n".join(lines) + "\n"))
            language = None
        elif language is not None:
            lines.append(line)
    assert language is None, f"{path.name}: a code block is not closed"
    return blocks


def blocks_of(language: str) -> list[tuple[Path, int, str]]:
    return [(path, line, code) for path in DOCUMENTS
            for lang, line, code in code_blocks(path) if lang == language]


def label(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


PYTHON = blocks_of("python")

# What a block promises, checked after it in the same interpreter. The key is
# a line that only that block has.
CHECKS = {
    'linfit.save_weights(model, "runs/line.weights.h5")': """
import numpy as np
assert Path("runs/line.weights.h5").exists()
assert np.isclose(float(keras_model.w.numpy()), float(model.w.numpy()))
assert history.full_loss[-1] < history.full_loss[0] / 5
""",
    "model2 = linfit.LinearModule(features=3, outputs=2)": """
np.testing.assert_allclose(history.w[-1], [0.5, -1.2, 2.0], atol=0.05)
assert abs(history.b[-1] - 0.3) < 0.05
assert model2.w.shape == (3, 2) and model2.b.shape == (2,)
""",
    'linfit.save_weights(mlp, "runs/mlp.weights.h5")': """
assert Path("runs/mlp.weights.h5").exists()
assert history.full_loss[-1] < history.full_loss[0]
""",
    "comparison = linfit.run_comparison(": """
assert comparison.agreement.agree and comparison.agreement.first_difference is None
assert round(reference.lr_limit, 3) == 0.743  # the warning the README quotes
""",
    "strategy = tf.distribute.MirroredStrategy()": """
assert abs(float(line.w.numpy()) - 3.0) < abs(5.0 - 3.0)
""",
    "class MyModelKeras(keras.Model):": """
try:
    linfit.Trainer(MyModelKeras())
except linfit.ModelError as refused:
    assert "add_weight" in str(refused)
else:
    raise AssertionError("the guide's MyModelKeras was accepted")
""",
}

# TensorFlow's C++ log lines: "I0000 00:00:... port.cc:153] oneDNN ...", and absl's notice.
TF_START_UP = re.compile(r"[IWEF]\d{4} \d\d:\d\d:|WARNING: All log messages before absl")

RUNNER = """
import json, sys
block = json.load(open(sys.argv[1]))
namespace = {"__name__": "__main__"}
# Padded so that a traceback gives the block's line in its document.
exec(compile("\\n" * (block["line"] - 1) + block["code"], block["file"], "exec"), namespace)
exec(compile(block["check"], "the check in tests/test_readme.py", "exec"), namespace)
"""


def test_every_check_has_exactly_one_block():
    for key in CHECKS:
        assert len([code for _, _, code in PYTHON if key in code]) == 1, key


@pytest.mark.parametrize("path, line, code", PYTHON,
                         ids=[label(path, line) for path, line, _ in PYTHON])
def test_python_block_runs_on_its_own(path, line, code, tmp_path):
    check = "".join(check for key, check in CHECKS.items() if key in code)
    block = tmp_path / "block.json"
    block.write_text(json.dumps({"file": str(path.relative_to(ROOT)), "line": line,
                                 "code": code, "check": check}))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    # As a user runs it: TensorFlow's log level is linfit's choice, not the tests'.
    env = {name: value for name, value in os.environ.items() if name != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-c", RUNNER, str(block)], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, f"{label(path, line)} failed:\n{result.stderr[-4000:]}"
    start_up = [text for text in result.stderr.splitlines() if TF_START_UP.match(text)]
    assert not start_up, f"{label(path, line)} printed TensorFlow's start-up lines: {start_up}"
    left = sorted(entry.name for entry in cwd.iterdir())
    assert set(left) <= {"runs"}, f"{label(path, line)} wrote {left} into the current directory"


@pytest.mark.parametrize("path, line, code", blocks_of("toml"),
                         ids=[label(path, line) for path, line, _ in blocks_of("toml")])
def test_toml_block_is_a_valid_config(path, line, code, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(code)
    load_config(config)


def train_commands() -> list[tuple[Path, int, list[str], list[list[str]]]]:
    """Each `python -m linfit.train` command of an sh block, as its arguments, with the
    commands before it in its block."""
    commands = []
    for path, line, code in blocks_of("sh"):
        earlier = []
        for command in code.replace("\\\n", " ").splitlines():
            words = shlex.split(command, comments=True)
            if "linfit.train" in words:
                args = words[words.index("linfit.train") + 1:]
                commands.append((path, line, args, list(earlier)))
                earlier.append(args)
    return commands


@pytest.mark.parametrize("path, line, args, earlier", train_commands(),
                         ids=[label(path, line) for path, line, _, _ in train_commands()])
def test_train_commands_make_valid_configs(path, line, args, earlier, tmp_path):
    written = {}
    for before in earlier:  # `--print-config ... > my.toml`: make the file it writes
        if "--print-config" in before and ">" in before:
            target = before[before.index(">") + 1]
            result = subprocess.run([sys.executable, "-m", "linfit.train",
                                     *before[:before.index(">")]], capture_output=True,
                                    text=True, timeout=60, check=True)
            written[target] = tmp_path / target
            written[target].write_text(result.stdout)
    if ">" in args:
        args = args[:args.index(">")]
    config = next((written.get(args[i + 1], ROOT / args[i + 1])
                   for i, arg in enumerate(args) if arg == "--config"), None)
    overrides = [args[i + 1] for i, arg in enumerate(args) if arg == "--set"]
    loaded = load_config(config, overrides)
    if config in written.values():  # the printed config is the run it printed
        (before,) = [b for b in earlier if "--print-config" in b]
        before = before[:before.index(">")]
        assert loaded == load_config(None, [before[i + 1] for i, arg in enumerate(before)
                                            if arg == "--set"])


def test_the_guides_stuck_loss_is_the_scripts():
    """docs/keras-parity.md quotes `python scripts/guide_keras_half.py`'s output."""
    text = (ROOT / "docs" / "keras-parity.md").read_text()
    quoted = next(code for lang, _, code in code_blocks(ROOT / "docs" / "keras-parity.md")
                  if lang == "" and "MyModelKeras with fit" in code)
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "guide_keras_half.py")],
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.splitlines() == quoted.splitlines()
    stuck = re.search(r"loss per epoch \[([\d.]+),", quoted).group(1)
    assert f"loss stays at {stuck}" in text


def without_blocks(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)


def without_code(text: str) -> str:
    return re.sub(r"`[^`\n]*`", "", without_blocks(text))


def headings(text: str) -> list[tuple[int, str]]:
    return [(len(hashes), title.strip()) for hashes, title in
            re.findall(r"^(#{1,6}) (.+)$", without_blocks(text), flags=re.MULTILINE)]


def slug(title: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title).replace("`", "")
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for _, title in headings(path.read_text()):
        base = slug(title)
        found.add(f"{base}-{seen[base]}" if base in seen else base)
        seen[base] = seen.get(base, 0) + 1
    return found


def links(text: str) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", without_code(text))


@pytest.mark.parametrize("path", DOCUMENTS, ids=[p.name for p in DOCUMENTS])
def test_links_reach_files_and_headings(path):
    for link in links(path.read_text()):
        if re.match(r"[a-z]+:", link):
            continue
        target, _, anchor = link.partition("#")
        target_path = (path.parent / target).resolve() if target else path
        assert target_path.exists(), f"{path.name}: {link}: no such file"
        if anchor:
            assert anchor in anchors(target_path), f"{path.name}: {link}: no such heading"


def test_the_table_of_contents_is_on_the_first_screen_and_complete():
    first_screen = "\n".join(README.splitlines()[:FIRST_SCREEN])
    linked = {link.partition("#")[2] for link in links(first_screen) if link.startswith("#")}
    sections = {slug(title) for level, title in headings(README) if level == 2}
    assert sections <= linked, f"not in the table of contents: {sorted(sections - linked)}"
    for wanted in ("config-keys", "the-run-directory"):
        assert wanted in linked


def test_ci_runs_the_readmes_test_command():
    commands = re.findall(r"```sh\n(.*?)\n```", README, flags=re.DOTALL)
    test_command = next(c for c in commands if "pytest" in c)
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()
