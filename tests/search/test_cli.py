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


def test_unknown_option_names_the_closest(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "spaces/resnet.py", "--max-epoch", "3"])
    assert exit_info.value.code == 2
    assert "unknown option '--max-epoch' (did you mean '--max-epochs'?)" in capsys.readouterr().err


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
