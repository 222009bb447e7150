import textwrap

import numpy as np
import pytest

from trainables import get_config_class, get_trainable
from trainables.features import (
    FeatureConfig,
    backbone_features,
    extract_features,
    feature_cache_key,
    fit_feature_classifier,
    train_features,
)

LITE0 = {"model": "tf_efficientnet_lite0", "weights": "offline"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("features_cache"))


def test_registered_with_its_config_class():
    assert get_trainable("features") is train_features
    assert get_config_class("features") is FeatureConfig
    assert get_config_class("package.module:custom") is None


@pytest.mark.parametrize(
    "values, error, message",
    [
        ({"classifier": "svn"}, ValueError, r"`classifier` is 'svn'.*did you mean 'svm'"),
        ({"kernel": "rfb"}, ValueError, r"`kernel` is 'rfb'.*did you mean 'rbf'"),
        ({"C": 0.0}, ValueError, r"`C` is 0.0, but must be a finite number > 0"),
        ({"gamma": -1}, ValueError, r"`gamma` is -1.0"),
        ({"n_estimators": 0}, ValueError, r"`n_estimators` is 0"),
        ({"max_depth": -2}, ValueError, r"`max_depth` is -2, but must be an integer >= 0 \(0: unlimited\)"),
        ({"max_epochs": 4}, ValueError, r"`max_epochs` is 4, but must be 1: a features trial fits once"),
        ({"model": "scratch_resnet"}, ValueError, r"needs a timm backbone"),
        ({"n_estimator": 10}, ValueError, r"unknown features trial parameter 'n_estimator'.*did you mean 'n_estimators'"),
        ({"standardize": "yes"}, TypeError, r"'standardize' is 'yes', but must be bool"),
        ({"n_estimators": 2.5}, TypeError, r"'n_estimators' is 2.5, but must be int"),
    ],
)
def test_config_names_the_field_value_and_rule(values, error, message):
    with pytest.raises(error, match=message):
        FeatureConfig.from_mapping(values)


def test_config_converts_numbers_as_optuna_returns_them():
    cfg = FeatureConfig.from_mapping({"C": 1, "n_estimators": 100.0, "standardize": 1, "max_depth": np.int64(8)})
    assert (cfg.C, cfg.n_estimators, cfg.standardize, cfg.max_depth) == (1.0, 100, True, 8)


def test_features_are_pooled_pre_logits(small_trial_data):
    images = small_trial_data.val_images[:5]
    features = backbone_features("tf_efficientnet_lite0", "offline", images)
    assert features.shape == (5, 1280) and features.dtype == np.float32
    assert np.isfinite(features).all() and features.std() > 0
    # batching does not change them
    np.testing.assert_allclose(backbone_features("tf_efficientnet_lite0", "offline", images, batch=2), features, atol=1e-5)


def test_the_second_extraction_hits_the_cache(small_trial_data, tmp_path):
    cfg = FeatureConfig(**LITE0, feature_cache=str(tmp_path))
    images = small_trial_data.val_images[:16]
    first, _ = extract_features(cfg, images)
    files = sorted(tmp_path.glob("*.npy"))
    assert [f.stem for f in files] == [feature_cache_key(cfg.model, cfg.weights, images)]
    stamp = files[0].stat().st_mtime_ns
    second, _ = extract_features(cfg, images)
    np.testing.assert_array_equal(first, second)
    assert files[0].stat().st_mtime_ns == stamp  # read, not written again
    # other images, other weights: other keys
    assert feature_cache_key(cfg.model, cfg.weights, images[:15]) != files[0].stem
    assert feature_cache_key(cfg.model, "none", images) != files[0].stem
    # what is in the cache is what is returned, even if it is not what the backbone computes now
    np.save(files[0], np.zeros_like(first), allow_pickle=False)
    assert not extract_features(cfg, images)[0].any()


@pytest.mark.parametrize(
    "params",
    [
        {"classifier": "logistic_regression", "C": 1.0},
        {"classifier": "random_forest", "n_estimators": 30, "max_depth": 8},
        {"classifier": "svm", "C": 3.0, "kernel": "rbf", "gamma": 1.0},
        {"classifier": "svm", "C": 0.1, "kernel": "linear", "standardize": False},
    ],
)
def test_each_classifier_fits_and_reports_once(small_trial_data, cache, params):
    reports = []
    train_features(LITE0 | {"feature_cache": cache} | params, small_trial_data, reports.append)
    assert len(reports) == 1
    (report,) = reports
    assert report["epoch"] == 1 and report["feature_dim"] == 1280
    for key in ("val_acc", "val_loss", "val_balanced_acc", "train_acc", "train_time_s", "feature_time_s", "fit_time_s"):
        assert np.isfinite(report[key]), key
    # Digits upscaled from 8 to 16 px are far from ImageNet, yet the features beat chance (0.1)
    # clearly; at 32 px these classifiers reach 0.7-0.85.
    assert report["val_acc"] > 0.25
    assert 0.25 < report["train_acc"] <= 1.0


def test_random_forest_depends_on_the_seed_and_logistic_regression_does_not(small_trial_data, cache):
    data = small_trial_data
    forest = LITE0 | {"feature_cache": cache, "classifier": "random_forest", "n_estimators": 10}
    logistic = LITE0 | {"feature_cache": cache, "classifier": "logistic_regression"}
    probabilities = {
        (name, seed): fit_feature_classifier(config | {"seed": seed}, data.train_images, data.train_labels, data.classes).probabilities(data.val_images)
        for name, config in (("forest", forest), ("logistic", logistic))
        for seed in (0, 1)
    }
    assert not np.allclose(probabilities["forest", 0], probabilities["forest", 1])
    np.testing.assert_allclose(probabilities["logistic", 0], probabilities["logistic", 1])
    again = fit_feature_classifier(forest | {"seed": 0}, data.train_images, data.train_labels, data.classes)
    np.testing.assert_array_equal(again.probabilities(data.val_images), probabilities["forest", 0])


def test_a_class_missing_from_training_gets_probability_zero(small_trial_data, cache):
    data = small_trial_data
    keep = data.train_labels != 3
    model = fit_feature_classifier(LITE0 | {"feature_cache": cache}, data.train_images[keep], data.train_labels[keep], data.classes)
    probabilities = model.probabilities(data.val_images[:8])
    assert probabilities.shape == (8, 10) and (probabilities[:, 3] == 0).all()
    np.testing.assert_allclose(probabilities.sum(1), 1.0)


def test_dry_run_validates_features_configs(tmp_path):
    from search.config.sampling import dry_run
    from search.config.spaces import load_space, resolve_settings
    from tests.conftest import REPO

    space = load_space(REPO / "spaces" / "features.py")
    settings = resolve_settings(space, LITE0)
    configs = dry_run(space, settings, samples=24)
    assert {c["classifier"] for c in configs} == {"logistic_regression", "random_forest", "svm"}
    assert all(("n_estimators" in c) == (c["classifier"] == "random_forest") for c in configs)
    bad = tmp_path / "bad.py"
    bad.write_text(textwrap.dedent("""
        TRAINABLE = "features"
        MAX_EPOCHS = 1
        SCHEDULER = "fifo"
        def space(trial):
            trial.suggest_categorical("classifier", ["svm", "knn"])
    """))
    with pytest.raises(ValueError, match=r"bad.py'.*`classifier` is 'knn', but must be one of"):
        dry_run(load_space(bad), resolve_settings(load_space(bad), LITE0), samples=16)
    with pytest.raises(ValueError, match=r"`max_epochs` is 4"):
        dry_run(space, resolve_settings(space, LITE0 | {"max_epochs": 4}), samples=2)
    with pytest.raises(ValueError, match=r"weights 'offline' exist only for model"):
        dry_run(space, resolve_settings(space, {"model": "resnet18", "weights": "offline"}), samples=2)
