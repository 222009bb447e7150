"""GPU and multi-worker settings: refusals before anything runs, and the space's corners that
--gpu-packing auto measures. Plain functions, no Ray session."""

import pytest

from search.config.settings import Settings
from tests.conftest import REPO


def test_a_whole_gpu_count_above_one_names_the_flags_that_train_on_several():
    with pytest.raises(ValueError, match=r"`gpus_per_trial` is 2.0, but must be <= 1: .* pass --workers-per-trial 2 --gpus-per-trial 1"):
        Settings(gpus_per_trial=2.0)
    with pytest.raises(ValueError, match=r"--workers-per-trial 6 --gpus-per-trial 1"):
        Settings(gpus_per_trial=3.0, workers_per_trial=2)
    with pytest.raises(ValueError, match=r"`workers_per_trial` is 0, but must be an integer >= 1"):
        Settings(workers_per_trial=0)
    assert Settings(gpus_per_trial=1.0, workers_per_trial=4).workers_per_trial == 4


def test_gpus_on_a_cluster_without_any_are_refused_unless_it_may_still_add_them():
    from search.ray_session import check_cluster_fits

    cpus_only = {"CPU": 8.0}
    with pytest.raises(ValueError, match=r"the local Ray session has no GPU \(Ray sees 8 CPUs and 0 GPUs\)"):
        check_cluster_fits(Settings(gpus_per_trial=0.25), cpus_only, started_here=True)
    with pytest.raises(ValueError, match=r"the Ray cluster at 'auto' has no GPU .* also pass --concurrency N"):
        check_cluster_fits(Settings(gpus_per_trial=0.25, address="auto"), cpus_only, started_here=False)
    # A joined cluster with --concurrency: an autoscaler may add GPU nodes for pending trials.
    check_cluster_fits(Settings(gpus_per_trial=0.25, address="auto", concurrency=8), cpus_only, started_here=False)
    check_cluster_fits(Settings(), cpus_only, started_here=True)


def test_one_trial_s_workers_must_fit_the_cluster():
    from search.ray_session import check_cluster_fits

    with pytest.raises(ValueError, match=r"one trial needs 4 CPUs \(4 worker\(s\) x 1\), but the Ray cluster has 2"):
        check_cluster_fits(Settings(workers_per_trial=4), {"CPU": 2.0}, started_here=True)
    with pytest.raises(ValueError, match=r"one trial needs 4 GPUs"):
        check_cluster_fits(Settings(workers_per_trial=4, gpus_per_trial=1.0, cpus_per_trial=0.5), {"CPU": 8.0, "GPU": 2.0}, started_here=True)
    check_cluster_fits(Settings(workers_per_trial=2), {"CPU": 2.0}, started_here=True)


def test_the_space_corners_are_its_largest_and_smallest_configurations():
    import optuna.distributions as d

    from search.config.spaces import load_space
    from search.gpu_packing import corner_configs, corner_value

    assert corner_value(d.IntDistribution(1, 5), high=True) == 5
    assert corner_value(d.CategoricalDistribution([64, 16, 32]), high=True) == 64
    assert corner_value(d.CategoricalDistribution([64, 16, 32]), high=False) == 16
    assert corner_value(d.CategoricalDistribution(["sgd", "adam"]), high=True) == "adam"
    high, low = corner_configs(load_space(REPO / "spaces" / "scratch_cnn.py"), Settings(image_size=16, max_epochs=8))
    assert (high["batch_size"], high["base_width"], high["conv_blocks"]) == (128, 64, 5)
    assert (low["batch_size"], low["base_width"], low["conv_blocks"]) == (32, 16, 1)
