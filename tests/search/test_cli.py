import subprocess
import sys

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


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "spaces/resnet.py", "--trials", "0"], "`trials` is 0, but must be an integer >= 1"),
        (["run", "spaces/resnet.py", "--model", "resnet81"], "did you mean 'resnet18'"),
        (["run", "spaces/scratch_cnn.py", "--dataset", "/nowhere/images"], "dataset directory '/nowhere/images' does not exist"),
        (["run", "spaces/scratch_cnn.py", "--name", "../../etc"], "cannot leave the storage directory"),
        (["run", "spaces/nothing.py"], "space file 'spaces/nothing.py' does not exist"),
        (["leaderboard", "/nowhere"], "is not a run directory"),
        (["report", "/nowhere"], "'/nowhere' is not a run directory"),
        (["retrain", "/nowhere", "--top-k", "2"], "'/nowhere' is not a run directory"),
        (["predict", "/nowhere", "a.png"], "'/nowhere' is not a run directory"),
    ],
)
def test_bad_input_fails_before_anything_runs(args, message, tmp_path, capsys):
    code = main(args + (["--storage", str(tmp_path)] if args[0] == "run" else []))
    assert code == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no run directory was written


def test_an_existing_run_directory_is_not_overwritten(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    assert main(["run", "spaces/scratch_cnn.py", "--storage", str(tmp_path), "--name", "taken"]) == 2
    assert "already exists" in capsys.readouterr().err
