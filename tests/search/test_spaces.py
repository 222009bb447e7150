import re
import textwrap

import pytest

from search.config.sampling import dry_run, random_sampler, sample_space
from search.config.settings import Settings
from search.config.spaces import SpaceFunction, SpaceParameterError, load_space, resolve_settings
from tests.conftest import REPO


def _space(tmp_path, body: str, name: str = "space.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


@pytest.mark.parametrize("name", ["resnet.py", "scratch_cnn.py"])
def test_shipped_space_files_load_and_sample(name):
    space = load_space(REPO / "spaces" / name)
    settings = resolve_settings(space, {})
    if settings.model == "auto":
        settings = resolve_settings(space, {"model": "tf_efficientnet_lite0", "weights": "offline"})
    configs = dry_run(space, settings, samples=20)
    assert len(configs) == 20
    assert len({c["optimizer"] for c in configs}) >= 3


def test_settings_come_from_defaults_then_file_then_command_line(tmp_path):
    space = load_space(_space(tmp_path, "TRIALS = 5\nMAX_EPOCHS = 7\ndef space(trial):\n    return {}\n"))
    settings = resolve_settings(space, {"max_epochs": 9})
    assert (settings.trials, settings.max_epochs, settings.seed) == (5, 9, Settings().seed)


def test_missing_file_lists_what_is_there():
    with pytest.raises(ValueError, match=r"does not exist.*resnet.py.*did you mean 'resnet.py'"):
        load_space(REPO / "spaces" / "resnt.py")


def test_syntax_error_names_the_line(tmp_path):
    with pytest.raises(ValueError, match=r"space.py', line 2: syntax error"):
        load_space(_space(tmp_path, "TRIALS = 3\ndef space(trial)\n    return {}\n"))


def test_no_space_function(tmp_path):
    with pytest.raises(ValueError, match=r"defines no function `space\(trial\)`"):
        load_space(_space(tmp_path, "TRIALS = 3\n"))


def test_unknown_setting_names_the_closest(tmp_path):
    with pytest.raises(ValueError, match=r"MAX_EPOCH is not a setting \(did you mean 'MAX_EPOCHS'\?\)"):
        load_space(_space(tmp_path, "MAX_EPOCH = 3\ndef space(trial):\n    return {}\n"))


def test_underscore_constants_are_helpers(tmp_path):
    space = load_space(_space(tmp_path, "_SIZES = [32, 64]\ndef space(trial):\n    trial.suggest_categorical('batch_size', _SIZES)\n"))
    assert dry_run(space, Settings(), samples=3)[0]["batch_size"] in (32, 64)


def test_bad_setting_value_names_file_and_rule(tmp_path):
    space = load_space(_space(tmp_path, "MAX_EPOCHS = 2\nGRACE_PERIOD_EPOCHS = 3\ndef space(trial):\n    return {}\n"))
    with pytest.raises(ValueError, match=r"grace_period_epochs.* is 3, but must be 1 <= grace_period_epochs <= max_epochs \(= 2\)"):
        resolve_settings(space, {})
    assert resolve_settings(space, {"grace_period_epochs": 1}).grace_period_epochs == 1
    with pytest.raises(TypeError, match=r"command line: setting 'trials' is 'many', but must be int"):
        resolve_settings(space, {"trials": "many"})


@pytest.mark.parametrize(
    "body, message",
    [
        ("    trial.suggest_float('lr', 1.0, 0.1)\n", r"space file .*, line 2: parameter 'lr': .*low <= high"),
        ("    trial.suggest_float('lr', 0.0, 0.1, log=True)\n", r"line 2: parameter 'lr': .*`low > 0` must hold"),
        ("    trial.suggest_categorical('optimizer', ['adam', 'sgdd'])\n", r"`optimizer` is 'sgdd'.*did you mean 'sgd'"),
        ("    trial.suggest_float('learning_rate', 1e-3, 1e-1)\n", r"unknown trial parameter 'learning_rate'"),
        ("    return [1]\n", r"must return a dict of constants or None, got list"),
        ("    return {'model': 'resnet81'}\n", r"unknown model 'resnet81'.*did you mean 'resnet18'"),
    ],
)
def test_dry_run_catches_bad_spaces_before_any_trial(tmp_path, body, message):
    space = load_space(_space(tmp_path, "def space(trial):\n" + body))
    with pytest.raises(ValueError, match=message):
        dry_run(space, Settings(), samples=8)


def test_space_function_pickles_by_its_text(tmp_path):
    import pickle

    import optuna

    path = _space(tmp_path, "def space(trial):\n    trial.suggest_int('conv_blocks', 1, 5)\n    return {'dropout': 0.1}\n")
    function = pickle.loads(pickle.dumps(SpaceFunction(path, path.read_text())))
    path.unlink()  # the pickle does not need the file any more
    trial = optuna.create_study().ask()
    assert function(trial) == {"dropout": 0.1} and 1 <= trial.params["conv_blocks"] <= 5


@pytest.mark.parametrize(
    "call, parameter, rule",
    [
        ('trial.suggest_float("lr", 1.0, 0.1)', "lr", r"`low <= high` must hold, but got \(low=1.0, high=0.1\)"),
        ('trial.suggest_float("lr", 0.0, 0.1, log=True)', "lr", r"`low > 0` must hold for `log=True`"),
        ('trial.suggest_int("conv_blocks", 1, 5, step=0)', "conv_blocks", r"`step > 0` must hold, but got step=0"),
        ('trial.suggest_categorical("optimizer", [])', "optimizer", r"`choices` must contain one or more elements"),
    ],
)
def test_suggest_errors_name_the_parameter_the_values_the_rule_and_the_line(tmp_path, call, parameter, rule):
    path = _space(tmp_path, f'MODEL = "scratch_resnet"\n\n\ndef space(trial):\n    trial.suggest_int("base_width", 8, 16)\n    {call}\n    return {{}}\n')
    space = load_space(path)
    with pytest.raises(SpaceParameterError) as caught:
        dry_run(space, resolve_settings(space, {}))
    message = str(caught.value)
    assert message.startswith(f"space file {str(path)!r}, line 6: parameter {parameter!r}: ")
    assert call.replace('"', "'").replace("trial.", "") in message.replace("trial.", ""), message
    assert re.search(rule, message), message


def test_a_parameter_whose_kind_changes_between_trials_is_named(tmp_path):
    body = """
        TRAINABLE = "tests.trivial:constant"
        def space(trial):
            if trial.number == 0:
                trial.suggest_float("depth", 1, 4)
            else:
                trial.suggest_int("depth", 1, 4)
            return {"model": "scratch_resnet"}
        """
    space = load_space(_space(tmp_path, body))
    with pytest.raises(ValueError, match=r"line 7: parameter 'depth': trial.suggest_int\('depth', 1, 4\) is refused: Cannot set"):
        dry_run(space, resolve_settings(space, {}))


_TWO = """
def space(trial):
    trial.suggest_int("conv_blocks", 1, 4)
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    if trial.suggest_categorical("optimizer", ["sgd", "adam"]) == "sgd":
        trial.suggest_float("momentum", 0.0, 0.9, step=0.1)
"""


def test_start_with_points_come_first_and_the_sampler_fills_what_they_leave_out(tmp_path):
    (tmp_path / "s.py").write_text("START_WITH = [{'lr': 0.003, 'optimizer': 'sgd', 'momentum': 0.5}, {'conv_blocks': 4}]\n" + _TWO)
    space = load_space(tmp_path / "s.py")
    settings = resolve_settings(space, {})
    assert settings.start_points == [{"lr": 0.003, "optimizer": "sgd", "momentum": 0.5}, {"conv_blocks": 4}]
    first, second, *_ = dry_run(space, settings, samples=2)
    assert (first["lr"], first["optimizer"], first["momentum"]) == (0.003, "sgd", 0.5) and 1 <= first["conv_blocks"] <= 4
    assert second["conv_blocks"] == 4
    # The command line's JSON replaces the file's list; PBT's population is sampled the same way.
    settings = resolve_settings(space, {"start_with": '[{"conv_blocks": 2, "optimizer": "adam"}]'})
    (sample, *_) = sample_space(space, random_sampler(settings), 3, tell=False, start_with=settings.start_points)
    assert sample.params["conv_blocks"] == 2 and sample.params["optimizer"] == "adam" and "momentum" not in sample.params


@pytest.mark.parametrize(
    "points, message",
    [
        ('[{"lrr": 0.003}]', r"`start_with` point 0: 'lrr' is not a parameter the space suggests for this point; it suggests \['conv_blocks', 'lr', (.*)\(did you mean 'lr'\?\)"),
        ('[{"lr": 0.003}, {"lr": 5.0}]', r"`start_with` point 1: 'lr' is 5.0, but the space suggests a number in \[0.0001, 0.1\]"),
        ('[{"conv_blocks": 2.5}]', r"'conv_blocks' is 2.5, but the space suggests an integer in \[1, 4\]"),
        ('[{"optimizer": "sgd", "momentum": 0.55}]', r"'momentum' is 0.55, but the space suggests a number in \[0.0, 0.9\] on steps of 0.1"),
        ('[{"optimizer": "adam", "momentum": 0.5}]', r"'momentum' is not a parameter the space suggests for this point"),
        ('[{"optimizer": "nadam"}]', r"`start_with` point 0 \(\{'optimizer': 'nadam'\}\) is refused by the space file .*, line 5: parameter 'optimizer'"),
        ('[{"lr": "fast"}]', r"`start_with` point 0 \(\{'lr': 'fast'\}\) is refused by the space file .*: parameter 'lr'"),
        ('{"lr": ', r"`start_with` is .*, which is not JSON"),
        ('[[1, 2]]', r"must be a list of non-empty objects"),
        ('[{"lr": [0.1]}]', r"`start_with` point 0: 'lr' is \[0.1\], but a parameter's value is a number, a string"),
    ],
)
def test_a_bad_start_point_is_refused_before_any_trial_naming_the_point_and_the_rule(tmp_path, points, message):
    (tmp_path / "s.py").write_text(_TWO)
    space = load_space(tmp_path / "s.py")
    with pytest.raises(ValueError, match=message):
        dry_run(space, resolve_settings(space, {"start_with": points}), samples=1)
