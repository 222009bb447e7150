"""Any reported metric as the objective: `metric` and `mode` in the settings, and the first report
checked for the metric. Pure functions here; the searches are in tests/test_metric_end_to_end.py."""

import pytest

from search.config.settings import Settings, metric_mode, settings_from_mapping
from search.config.spaces import load_space, resolve_settings


def test_mode_is_inferred_for_a_known_metric_and_given_for_any_other():
    assert metric_mode("val_acc", "") == "max" and metric_mode("val_loss", "") == "min"
    assert metric_mode("val_f1", "max") == "max" and metric_mode("val_top5_error", "min") == "min"
    assert metric_mode("val_loss", "min") == "min"  # agreeing with the known direction is fine
    assert Settings(metric="val_auc", mode="max").to_dict()["mode"] == "max"
    assert Settings(metric="val_loss").to_dict()["mode"] == "min"  # stored resolved: settings.json says it


@pytest.mark.parametrize(
    "values, message",
    [
        ({"metric": "val_f1"}, r"`metric` is 'val_f1', whose direction is not known .* --mode max .* MODE = 'max'"),
        ({"metric": "val_accc"}, r"did you mean 'val_acc'\?"),
        ({"metric": "val_loss", "mode": "max"}, r"`mode` is 'max', but `metric` 'val_loss' is better when smaller"),
        ({"metric": "val_acc", "mode": "min"}, r"better when larger \(mode 'max'\)"),
        ({"metric": "val_f1", "mode": "maximize"}, r"`mode` is 'maximize', but must be 'max' or 'min'.*did you mean 'max'"),
        ({"metric": ""}, r"`metric` is '', but must be the name of a key the trainable reports"),
        ({"metric": "params", "mode": "min", "objectives": "params"}, r"names the metric 'params'"),
    ],
)
def test_a_metric_without_a_direction_or_against_its_direction_is_refused(values, message):
    with pytest.raises(ValueError, match=message):
        settings_from_mapping(values, "test")


def test_a_space_files_mode_is_a_setting_and_its_errors_name_the_file(tmp_path):
    path = tmp_path / "f1.py"
    path.write_text('METRIC = "val_f1"\nMODE = "min"\n\ndef space(trial):\n    trial.suggest_float("x", 0.0, 1.0)\n')
    space = load_space(path)
    assert resolve_settings(space, {}).mode == "min"
    assert resolve_settings(space, {"mode": "max"}).mode == "max"  # the command line wins
    with pytest.raises(ValueError, match=rf"space file '{path}' with the command line's options: `mode` is 'min', but `metric` 'val_acc'"):
        resolve_settings(space, {"metric": "val_acc"})  # MODE left over from the space file
    path.write_text('METRIC = "val_f1"\n\ndef space(trial):\n    trial.suggest_float("x", 0.0, 1.0)\n')
    with pytest.raises(ValueError, match=rf"space file '{path}': `metric` is 'val_f1', whose direction is not known"):
        resolve_settings(load_space(path), {})


def test_the_first_report_must_hold_the_metric():
    from search.trial import METRIC_NOT_REPORTED, MetricNotReported, check_first_report

    check_first_report({"epoch": 1, "val_f1": 0.5}, "val_f1", "tests.trivial:f1_score")  # no error
    with pytest.raises(MetricNotReported) as raised:
        check_first_report({"epoch": 1, "val_acc": 0.5, "val_loss": 0.4}, "val_f1", "tests.trivial:constant")
    message = str(raised.value)
    assert message.startswith(METRIC_NOT_REPORTED)
    assert "'val_f1'" in message and "['epoch', 'val_acc', 'val_loss']" in message and "'tests.trivial:constant'" in message
    with pytest.raises(MetricNotReported, match=r"did you mean 'val_acc'\?"):
        check_first_report({"epoch": 1, "val_acc": 0.5}, "val_ac", "classifier")
