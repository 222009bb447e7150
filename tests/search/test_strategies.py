"""The strategy registries without Ray: names, validation, the grid, PBT's mutations."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch

from search.config.sampling import parameters
from search.config.settings import Settings
from search.config.spaces import SpaceFile, load_space
from search.strategies import check_names
from search.strategies.registry import Registry
from search.strategies.samplers import SAMPLERS, constant_liar, grid_points, grid_size
from search.strategies.schedulers import SCHEDULERS, ClipToSpace, pbt_mutations
from tests.conftest import REPO

SCRATCH = load_space(REPO / "spaces" / "scratch_cnn.py")
GRID = load_space(REPO / "spaces" / "grid.py")


def test_the_registries_hold_every_strategy_with_a_summary():
    assert list(SAMPLERS) == ["tpe", "random", "nsga2", "cmaes", "gp", "qmc", "grid"]
    assert list(SCHEDULERS) == ["asha", "fifo", "hyperband", "median", "pbt"]
    for entry in [*SAMPLERS.values(), *SCHEDULERS.values()]:
        assert entry.summary and entry.summary.endswith(".")
        assert set(entry.settings) <= {f.name for f in dataclasses.fields(Settings)}, entry.name
    assert SCHEDULERS["asha"].stops == "ASHA" and SCHEDULERS["fifo"].stops == ""
    assert not SCHEDULERS["pbt"].takes_searcher and SCHEDULERS["hyperband"].takes_searcher


def test_settings_are_checked_against_the_registries_keys():
    # The registries check the names (search.strategies.check_names); settings import no registry.
    check_names(Settings(sampler="gp", scheduler="median"))
    assert Settings(sampler="gp", scheduler="median").scheduler == "median"
    with pytest.raises(ValueError, match=r"`scheduler` is 'hyperbnd', but must be one of \[.*'pbt'\].*did you mean 'hyperband'"):
        check_names(Settings(scheduler="hyperbnd"))
    with pytest.raises(ValueError, match=r"`sampler` is 'cmaess'.*did you mean 'cmaes'"):
        check_names(Settings(sampler="cmaess"))
    with pytest.raises(ValueError, match="pbt_interval_epochs"):
        Settings(pbt_interval_epochs=0)


def test_a_registry_refuses_a_second_entry_of_a_name_and_one_without_a_docstring():
    registry = Registry("sampler")

    def build(settings, space):
        """When to use it."""

    registry.register("a")(build)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("a")(build)
    with pytest.raises(ValueError, match="docstring"):
        registry.register("b")(lambda settings, space: None)


def test_checking_a_strategy_name_imports_neither_ray_nor_optuna():
    code = (
        "import sys; from search.config.settings import Settings; Settings(sampler='grid', scheduler='pbt'); "
        "print('ray' in sys.modules, 'optuna' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]


def test_the_grid_holds_every_combination_once_in_a_seeded_order():
    points = grid_points(Settings(seed=0), GRID)
    assert len(points) == 12 and len({tuple(sorted(p.items())) for p in points}) == 12
    assert {p["conv_blocks"] for p in points} == {1, 2} and {p["lr"] for p in points} == {1e-3, 3e-3, 1e-2}
    assert grid_points(Settings(seed=0), GRID) == points != grid_points(Settings(seed=1), GRID)
    SAMPLERS["grid"].check(Settings(trials=12), GRID)
    with pytest.raises(ValueError, match=r"`trials` is 13, but the grid .* holds 12 points"):
        SAMPLERS["grid"].check(Settings(trials=13), GRID)


def test_the_grid_refuses_a_continuous_parameter_naming_it():
    with pytest.raises(ValueError, match=r"parameter 'dropout' of space file .*scratch_cnn.py' is continuous"):
        grid_points(Settings(), SCRATCH)


def test_the_grid_steps_through_a_stepped_float(tmp_path):
    path = tmp_path / "stepped.py"
    path.write_text("def space(trial):\n    trial.suggest_float('dropout', 0.0, 0.5, step=0.25)\n")
    points = grid_points(Settings(), load_space(path))
    assert sorted(p["dropout"] for p in points) == [0.0, 0.25, 0.5]


def test_tpe_drops_its_constant_liar_only_where_the_ledger_keeps_concurrent_trials_apart():
    assert grid_size(Settings(), GRID) == 12 and grid_size(Settings(), SCRATCH) is None

    assert constant_liar(Settings(), GRID) is False  # discrete, repeats avoided by the ledger
    assert constant_liar(Settings(repeats="allow"), GRID) is True  # nothing else keeps trials apart
    assert constant_liar(Settings(), SCRATCH) is True  # a continuous parameter: no exact repeats to avoid


def test_cmaes_optimises_one_objective():
    with pytest.raises(ValueError, match="optimises one objective"):
        SAMPLERS["cmaes"].check(Settings(sampler="cmaes", objectives="params"), SCRATCH)


def test_parameters_tell_conditional_ones_apart():
    found = parameters(SCRATCH, Settings())
    assert found.conditional == {"momentum"}
    assert {"conv_blocks", "lr", "optimizer", "dropout"} <= set(found.distributions)


def test_pbt_mutates_the_unconditional_parameters_the_trainable_can_change():
    assert set(pbt_mutations(Settings(scheduler="pbt"), SCRATCH)) == {"dropout", "lr", "weight_decay"}
    assert set(pbt_mutations(Settings(scheduler="pbt", pbt_mutate="lr"), SCRATCH)) == {"lr"}


@pytest.mark.parametrize(
    "name, message",
    [
        ("momentum", r"names 'momentum', but it is conditional in space file"),
        ("conv_blocks", r"names 'conv_blocks', but trainable 'classifier' cannot change it mid-training"),
        ("lrr", r"suggests no such parameter \(did you mean 'lr'\?\)"),
    ],
)
def test_pbt_refuses_a_parameter_it_cannot_mutate_naming_it(name, message):
    with pytest.raises(ValueError, match=message):
        SCHEDULERS["pbt"].check(Settings(scheduler="pbt", pbt_mutate=name), SCRATCH)


def test_pbt_needs_a_trainable_that_can_change_parameters_and_something_to_mutate():
    with pytest.raises(ValueError, match="trainable 'features' declares no parameters"):
        pbt_mutations(Settings(scheduler="pbt", trainable="features"), SCRATCH)
    only_structure = SpaceFile(SCRATCH.path, "", lambda trial: trial.suggest_int("conv_blocks", 1, 2) and None, {})
    with pytest.raises(ValueError, match="PBT would have nothing to mutate"):
        pbt_mutations(Settings(scheduler="pbt"), only_structure)


def test_pbt_refuses_multi_worker_trials():
    with pytest.raises(ValueError, match="`workers_per_trial` is 2"):
        SCHEDULERS["pbt"].check(Settings(scheduler="pbt", workers_per_trial=2), SCRATCH)


def test_pbt_mutations_stay_inside_the_space():
    mutations = pbt_mutations(Settings(scheduler="pbt"), SCRATCH)
    clip = ClipToSpace(mutations)
    assert clip({"lr": 0.5, "dropout": -0.1, "weight_decay": 1e-3}) == {"lr": 0.1, "dropout": 0.0, "weight_decay": 1e-3}
    stepped = ClipToSpace(parameters(GRID, Settings()).distributions)
    assert stepped({"conv_blocks": 3, "lr": 0.003}) == {"conv_blocks": 2, "lr": 0.003}


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler\\.step\\(\\)`")
def test_a_clone_takes_the_new_hyperparameters_and_keeps_its_place_in_the_schedule():
    from trainables.classifier import TrialConfig
    from trainables.classifier.optim import Schedule, build_optimizer, take_mutation
    from trainables.models import build_model

    parent = TrialConfig(optimizer="sgd", lr=0.1, momentum=0.5, weight_decay=1e-3, lr_schedule="cosine", max_epochs=4)
    net = build_model("scratch_resnet", 3, conv_blocks=1, base_width=8)
    optimizer = build_optimizer(parent, net)
    schedule = Schedule(parent, optimizer, steps=1)
    schedule.after_epoch(None)  # one epoch down the cosine
    saved_lr, state = optimizer.param_groups[0]["lr"], (optimizer.state_dict(), schedule.state_dict())

    child = dataclasses.replace(parent, lr=0.05, momentum=0.9, weight_decay=1e-4)
    optimizer = build_optimizer(child, net)
    schedule = Schedule(child, optimizer, steps=1)
    fresh = [dict(group) for group in optimizer.param_groups]
    optimizer.load_state_dict(state[0])
    schedule.load_state_dict(state[1])
    assert optimizer.param_groups[0]["momentum"] == 0.5  # torch restores the parent's
    take_mutation(optimizer, schedule, fresh, parent.lr, child.lr)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(saved_lr / 2)
    assert [g["momentum"] for g in optimizer.param_groups] == [0.9] * len(optimizer.param_groups)
    assert sorted({g["weight_decay"] for g in optimizer.param_groups}) == [0.0, 1e-4]
    schedule.after_epoch(None)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05 * (1 + torch.cos(torch.tensor(torch.pi * 2 / 4)).item()) / 2)


def test_retrain_starts_a_clone_from_its_lineage_and_replays_the_later_configs():
    from analysis.retrain import pbt_schedule

    recorded = {"config": {"seed": 0, "max_epochs": 3, "lr": 0.5, "conv_blocks": 2}, "params": {"lr": 0.5, "conv_blocks": 2}}
    assert pbt_schedule(recorded, {}) == (recorded["config"], [])
    lineage = {"schedule": [{"from_epoch": 1, "config": {"lr": 0.1, "conv_blocks": 1}}, {"from_epoch": 3, "config": {"lr": 0.2, "conv_blocks": 1}}]}
    first, later = pbt_schedule(recorded, lineage)
    assert first == {"seed": 0, "max_epochs": 3, "lr": 0.1, "conv_blocks": 1}
    assert later == [(3, {"seed": 0, "max_epochs": 3, "lr": 0.2, "conv_blocks": 1})]


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler\\.step\\(\\)`")
def test_fit_classifier_replays_a_pbt_schedule(digits_16):
    import numpy as np

    from trainables.classifier import fit_classifier

    images, split = digits_16
    train = np.asarray(split.train[:120])
    config = {"conv_blocks": 1, "base_width": 8, "lr": 0.01, "dropout": 0.1, "max_epochs": 3, "batch_size": 32}
    lrs: list[float] = []
    model = fit_classifier(
        config, images.images[train], images.labels[train], images.classes, epochs=3,
        report=lambda m: lrs.append(m["lr"]), pbt_schedule=[(3, config | {"lr": 0.005, "dropout": 0.3})],
    )  # fmt: skip
    assert lrs == pytest.approx([0.01, 0.01, 0.005])
    assert [m.p for m in model.net.modules() if isinstance(m, torch.nn.Dropout)] == [0.3]


@pytest.mark.parametrize("name", ["asha", "fifo", "median"])
def test_a_scheduler_picks_the_trial_to_run_as_rays_fifo_scan_does_without_rescanning_ended_trials(name):
    """Against Ray's own FIFOScheduler scan of the whole list, at every step of a seeded history:
    trials join at the end, run, pause, resume and end; then a restored run's new list."""
    import random

    from ray.tune.experiment import Trial
    from ray.tune.schedulers import FIFOScheduler

    class Controller:  # what a scheduler reads of Ray's TuneController: its list of trials
        def __init__(self):
            self.trials: list = []

        def get_trials(self):
            return self.trials

    ours, rays = SCHEDULERS[name].build(Settings(scheduler=name), SCRATCH), FIFOScheduler()
    assert type(ours).__name__ == type(ours).__mro__[1].__name__  # named as Ray's class it extends
    rng, controller, steps = random.Random(0), Controller(), 0
    for _ in range(400):
        live = [t for t in controller.trials if t.status != Trial.TERMINATED]
        move = rng.random()
        if move < 0.3 or not live:
            controller.trials.append(Trial("trainable", stub=True))
        else:
            trial = rng.choice(live)
            trial.set_status({Trial.PENDING: Trial.RUNNING, Trial.PAUSED: Trial.PENDING}.get(trial.status, rng.choice([Trial.TERMINATED, Trial.PAUSED])))
        assert ours.choose_trial_to_run(controller) is rays.choose_trial_to_run(controller)
        steps += ours._ended > 0
    assert steps > 100 and ours._ended > 10  # the skipped head was in use, and grew
    restored = Controller()
    restored.trials = [Trial("trainable", stub=True) for _ in range(3)]
    restored.trials[0].set_status(Trial.TERMINATED)
    assert ours.choose_trial_to_run(restored) is restored.trials[1]
