import subprocess
import sys
import time

import pytest

from search.cli import main
from tests.conftest import REPO


def _cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "search", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_help_lists_commands_and_imports_nothing_heavy():
    done = _cli("--help")
    assert done.returncode == 0 and "run" in done.stdout and "leaderboard" in done.stdout
    assert all(command in done.stdout for command in ("report", "retrain", "predict"))
    probe = "import sys, search.cli; sys.argv=['x']; print(sorted({'torch', 'ray', 'timm', 'optuna'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True).stdout.strip() == "[]"


def test_every_setting_is_an_option():
    done = _cli("run", "--help")
    for option in ("--trials", "--max-epochs", "--concurrency", "--cpus-per-trial", "--gpus-per-trial", "--dataset",
                   "--name", "--storage", "--address", "--seed", "--grace-period-epochs", "--reduction-factor",
                   "--no-retrain"):
        assert option in done.stdout


def test_every_setting_has_a_help_line_from_its_comment():
    import dataclasses

    from search.config.settings import Settings
    from search.config.settings_help import field_comments, setting_help

    lines, comments = setting_help(), field_comments(Settings)
    for field in dataclasses.fields(Settings):
        assert lines[field.name], f"{field.name} has no comment above it in search/config/settings.py"
        assert lines[field.name].endswith(".") and len(lines[field.name]) <= 160, lines[field.name]
        assert comments[field.name].startswith(lines[field.name])  # the first sentence of the whole comment


def _sections(help_text: str) -> dict[str, list[str]]:
    """``{section title: the options it lists}`` of an argparse help text."""
    import re

    sections: dict[str, list[str]] = {}
    for line in help_text.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):  # "data:", "options:", ...
            sections[line[:-1]] = []
        elif line.startswith("  -") and sections:  # "  --image-size INT   Side of ...", "  -h, --help ..."
            sections[list(sections)[-1]] += re.findall(r"--?[a-z][a-z0-9-]*", line[2:].split("  ")[0])
    return sections


def test_run_help_groups_each_option_once_and_explains_it():
    done = _cli("run", "--help")
    assert done.returncode == 0
    sections = _sections(done.stdout)
    assert list(sections)[-6:] == ["data", "model", "search", "resources", "storage", "tracking"]
    listed = [option for options in sections.values() for option in options if option.startswith("--")]
    from search.config.settings import field_types

    expected = {"--" + name.replace("_", "-") for name in field_types()} | {"--help", "--overwrite", "--no-retrain"}
    assert sorted(listed) == sorted(expected)  # every option, each in exactly one section
    assert "--reduction-factor" in sections["search"] and "--data-loading" in sections["data"]
    assert "--cpus-per-trial" in sections["resources"] and "--mlflow" in sections["tracking"]
    text = " ".join(done.stdout.split())  # argparse wraps the help lines
    for explained in (
        "--image-size INT Side of the square images the model sees, in pixels. (default 32; space file: IMAGE_SIZE)",
        "--reduction-factor INT ASHA and HyperBand keep the best 1/reduction_factor of trials at each rung",
        "--progress-every-s FLOAT Seconds between plain progress lines",
        "--mode STR Whether a larger metric is better (\"max\") or a smaller one (\"min\"); empty: inferred. (default empty",
        "--data-loading STR How trials read images: \"memory\" (copied to the device), \"stream\"",
    ):
        assert explained in text, explained


def test_run_help_imports_no_ray_and_answers_at_once():
    probe = (
        "import sys, time; started = time.monotonic(); from search.cli import main\n"
        "try:\n    main(['run', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted({'torch', 'ray', 'timm', 'optuna'} & set(sys.modules)), time.monotonic() - started < 5, file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert done.stderr.strip().splitlines()[-1] == "[] True"


def test_unknown_option_names_the_closest(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "spaces/resnet.py", "--max-epoch", "3"])
    assert exit_info.value.code == 2
    assert "unknown option '--max-epoch' (did you mean '--max-epochs'?)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "spaces/resnet.py", "--mdoe", "max"])
    assert "unknown option '--mdoe' (did you mean '--mode'?)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["retrain", "runs/x", "--top_k", "3"])  # the other commands' options too
    assert "unknown option '--top_k' (did you mean '--top-k'?)" in capsys.readouterr().err


_SPACE_OK = "def space(trial):\n    trial.suggest_float('lr', 1e-4, 1e-1, log=True)\n"


def _tree(root, layout):
    for relative, content in layout.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is not None:
            path.write_bytes(content)
    return root


@pytest.mark.parametrize(
    "space_text, args, message",
    [
        (None, ["spaces/nothing.py"], "space file 'spaces/nothing.py' does not exist"),
        ("def space(trial)\n    pass\n", [], "line 1: syntax error"),
        ("TRIALS = 3\n", [], "defines no function `space(trial)`"),
        ("def space(trial):\n    trial.suggest_float('lr', 0.1, 0.001)\n", [], "line 2: parameter 'lr': trial.suggest_float('lr', 0.1, 0.001) is refused: `low <= high` must hold"),
        ("def space(trial):\n    trial.suggest_float('lr', 0.0, 0.1, log=True)\n", [], "line 2: parameter 'lr': trial.suggest_float('lr', 0.0, 0.1, log=True) is refused: `low > 0` must hold"),
        (_SPACE_OK, ["--mlflow", "http://127.0.0.1:1"], "`mlflow` is 'http://127.0.0.1:1', but nothing answers there"),
        ("def space(trial):\n    trial.suggest_categorical('optimizer', ['adamw', 'rmsporp'])\n", [],
         "`optimizer` is 'rmsporp', but must be one of ['sgd', 'adam', 'adamw', 'rmsprop'] (did you mean 'rmsprop'?)"),
        ("MODEL = 'resnet81'\n" + _SPACE_OK, [], "unknown model 'resnet81'"),
        ("MAX_EPOCH = 3\n" + _SPACE_OK, [], "MAX_EPOCH is not a setting (did you mean 'MAX_EPOCHS'?)"),
        (_SPACE_OK, ["--dataset", "cifar01"], "unknown dataset 'cifar01'"),
        (_SPACE_OK, ["--dataset", "/nowhere/images"], "dataset directory '/nowhere/images' does not exist"),
        (_SPACE_OK, ["--dataset", "{empty}"], "has no class sub-folders"),
        (_SPACE_OK, ["--dataset", "{no_images}"], "holds no images"),
        (_SPACE_OK, ["--trials", "0"], "`trials` is 0, but must be an integer >= 1"),
        (_SPACE_OK, ["--trials", "-3"], "`trials` is -3, but must be an integer >= 1"),
        (_SPACE_OK, ["--max-epochs", "2", "--grace-period-epochs", "3"], "must be 1 <= grace_period_epochs <= max_epochs (= 2)"),
        (_SPACE_OK, ["--name", "../../etc"], "cannot leave the storage directory"),
        (_SPACE_OK, ["--address", "127.0.0.1:1"], "`address` '127.0.0.1:1': nothing answers there"),
        (_SPACE_OK, ["--address", "somewhere"], "must be 'auto' or HOST:PORT"),
    ],
)
def test_bad_input_fails_before_anything_runs(space_text, args, message, tmp_path, capsys):
    data = _tree(tmp_path / "data", {"empty/.keep": None, "no_images/cats/notes.txt": b"x"})
    space = args.pop(0) if space_text is None else str(_tree(tmp_path, {"space.py": space_text.encode()}) / "space.py")
    args = [a.format(empty=data / "empty", no_images=data / "no_images") for a in args]
    runs = tmp_path / "runs"
    started = time.monotonic()
    code = main(["run", space, "--storage", str(runs), *args])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not runs.exists()  # nothing was written
    assert time.monotonic() - started < 30  # an unreachable address fails within seconds, not a hang


@pytest.mark.parametrize(
    "args, message",
    [
        (["leaderboard", "/nowhere"], "is not a run directory"),
        (["resume", "/nowhere"], "is not a run directory"),
        (["report", "/nowhere"], "'/nowhere' is not a run directory"),
        (["retrain", "/nowhere", "--top-k", "2"], "'/nowhere' is not a run directory"),
        (["predict", "/nowhere", "a.png"], "'/nowhere' is not a run directory"),
    ],
)
def test_other_commands_reject_a_non_run_directory(args, message, capsys):
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_an_existing_run_directory_is_not_overwritten(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    assert main(["run", "spaces/scratch_cnn.py", "--storage", str(tmp_path), "--name", "taken"]) == 2
    assert "already exists" in capsys.readouterr().err
