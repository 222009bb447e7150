import pytest

from search.config.settings import METRIC_MODES, OBJECTIVE_MODES, Settings, settings_from_mapping


def test_mode_follows_the_metric():
    assert Settings(metric="val_acc").mode == "max" and Settings(metric="val_loss").mode == "min"
    assert Settings(metric="val_balanced_acc").mode == "max"
    assert set(METRIC_MODES) == {"val_acc", "val_loss", "val_balanced_acc"}


@pytest.mark.parametrize(
    "values, message",
    [
        ({"trials": 0}, r"`trials` is 0, but must be an integer >= 1"),
        ({"reduction_factor": 1}, r"`reduction_factor` is 1, but must be an integer >= 2"),
        ({"metric": "val_accuracy"}, r"did you mean 'val_acc'"),
        ({"name": "../../x"}, r"cannot leave the storage directory"),
        ({"gpus_per_trial": 1.5}, r"a fraction in \(0, 1\] or a whole number"),
        ({"val_fraction": 0.5, "test_fraction": 0.45}, r"at least 10% of the data trains"),
        ({"max_failures": -1}, r"`max_failures` is -1, but must be an integer >= 0"),
        ({"gpu_packing": "automatic"}, r"`gpu_packing` is 'automatic'.*did you mean 'auto'"),
        ({"gpu_packing": "auto"}, r"`gpus_per_trial` is 0.0, but must be > 0 when gpu_packing is 'auto'"),
    ],
)
def test_invalid_settings_say_value_rule_and_fix(values, message):
    with pytest.raises(ValueError, match=message):
        settings_from_mapping(values, "test")


def test_unknown_setting_names_the_closest():
    with pytest.raises(ValueError, match=r"test: unknown setting 'trails' \(did you mean 'trials'\?\)"):
        settings_from_mapping({"trails": 3}, "test")


def test_numbers_convert_but_strings_do_not():
    assert settings_from_mapping({"cpus_per_trial": 2, "trials": 4.0}, "t").cpus_per_trial == 2.0
    with pytest.raises(TypeError):
        settings_from_mapping({"trials": True}, "t")


def test_sampler_and_scheduler_choices_name_the_closest():
    # The strategy registries check the names (settings import no registry).
    from search.strategies import check_names

    check_names(Settings(sampler="random", scheduler="fifo"))
    assert Settings(sampler="random", scheduler="fifo").scheduler == "fifo"
    with pytest.raises(ValueError, match=r"`scheduler` is 'ahsa'.*did you mean 'asha'"):
        check_names(Settings(scheduler="ahsa"))
    with pytest.raises(ValueError, match=r"`sampler` is 'tpee'.*did you mean 'tpe'"):
        check_names(Settings(sampler="tpee"))


def test_trials_are_retried_after_failures_by_default():
    assert Settings().max_failures == 2 and Settings().gpu_packing == "fixed"
    assert Settings(gpu_packing="auto", gpus_per_trial=1).gpu_packing == "auto"


def test_objectives_are_comma_separated_names_with_their_modes():
    assert Settings().objective_names == () and Settings().objective_modes == ()
    settings = Settings(objectives=" params , latency_ms")
    assert settings.objective_names == ("params", "latency_ms") and settings.objective_modes == ("min", "min")
    assert set(OBJECTIVE_MODES) == {"params", "latency_ms"}
    assert Settings(sampler="nsga2", objectives="params").sampler == "nsga2"


@pytest.mark.parametrize(
    "objectives, message",
    [
        ("param", r"`objectives` is 'param', but 'param' is not an objective.*did you mean 'params'"),
        ("params,latency", r"'latency' is not an objective: names must be among \['latency_ms', 'params'\]"),
        ("val_acc", r"'val_acc' is not an objective"),
        ("params,params", r"it names \['params'\] more than once"),
        ("params,", r"'' is not an objective"),
    ],
)
def test_bad_objectives_name_the_value_and_the_closest(objectives, message):
    with pytest.raises(ValueError, match=message):
        settings_from_mapping({"objectives": objectives}, "test")
