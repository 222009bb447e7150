"""The replayed benchmarks are honest: the engine's replay runs the registries' own sampler and
scheduler, and benchmarks/search_quality.py runs end to end and measures what it claims."""

from __future__ import annotations

import json

import optuna
import pytest

from analysis.records import read_trials
from benchmarks import search_quality
from search.config.spaces import load_space, resolve_settings, trial_defaults
from search.engine import execute_run
from search.prepare import prepare_run
from search.strategies.samplers import SAMPLERS
from tests.conftest import REPO
from trainables.replay import open_table, replay

pytestmark = pytest.mark.slow

CURVES = REPO / "benchmarks/tables/scratch_digits.npz"


def _engine_run(tmp_path, space_file, **overrides):
    space = load_space(REPO / space_file)
    settings = resolve_settings(space, {"storage": str(tmp_path), "concurrency": 1, "progress_every_s": 3600.0} | overrides)
    return space, settings, execute_run(prepare_run(space, settings, out=lambda line: None), out=lambda line: None)


def test_the_engine_replay_proposes_what_the_registry_sampler_proposes(ray_session, tmp_path):
    # The engine on a replay space, one trial at a time; then the registry's own TPE, driven by
    # hand with the same table values. Equal proposals mean the engine adds no sampling logic.
    space, settings, run_dir = _engine_run(tmp_path, "spaces/replay_nb201_cifar10.py", trials=8, seed=3, name="engine")
    engine = [{k: v for k, v in r.config.items() if k.startswith("Op")} for r in read_trials(run_dir)]

    study = optuna.create_study(sampler=SAMPLERS[settings.sampler].build(settings, space), direction="maximize")
    by_hand = []
    for _ in range(settings.trials):
        trial = study.ask()
        constants = space.space(trial)
        reports = []
        replay(trial_defaults(settings, threads=1) | trial.params | constants, None, reports.append)
        study.tell(trial, reports[-1]["val_acc"])
        by_hand.append(dict(trial.params))
    assert settings.sampler == "tpe" and len(engine) == 8
    assert engine == by_hand
    # The replayed values are the table's: each trial's recorded val_acc is its row's, seed drawn.
    table = open_table("nb201:cifar10")
    for record in read_trials(run_dir):
        row = table.row(record.config)
        assert record.metrics[-1]["val_acc"] == pytest.approx(float(table.val_acc[row, table.seed_column(row, 3), 0]))


@pytest.mark.skipif(not CURVES.is_file(), reason="the learning-curve table is not built (benchmarks/build_curve_table.py)")
def test_the_harness_runs_end_to_end_and_measures_what_it_reports(ray_session, tmp_path, capsys):
    results_file, plots = tmp_path / "results.jsonl", tmp_path / "plots"
    common = ["--seeds", "2", "--trials", "8", "--workers", "1", "--results", str(results_file), "--plots", str(plots)]
    nb201 = ["--benchmarks", "nb201_cifar10", "--methods", "engine:tpe+fifo,optuna:tpe,random", *common]
    curves = ["--benchmarks", "curves", "--methods", "engine:tpe+asha,optuna:tpe,optuna:tpe+sha,raytune:random+asha,synetune:asha,synetune:bohb,random", *common]
    results = search_quality.main(nb201) + search_quality.main(curves)
    out = capsys.readouterr().out
    cells = {(r["method"], r["benchmark"], r["seed"]) for r in results}
    assert cells == {(m, "nb201_cifar10", s) for m in ("engine:tpe+fifo", "optuna:tpe", "random") for s in (0, 1)} | {
        (m, "curves", s) for m in ("engine:tpe+asha", "optuna:tpe", "optuna:tpe+sha", "raytune:random+asha", "synetune:asha",
                                   "synetune:bohb", "random")
        for s in (0, 1)
    }
    epochs = open_table(str(CURVES)).epochs
    for r in results:
        assert r["trials"] == 8 and r["budget"] == 8
        assert min(r["regret"]) >= 0 and r["unique_rows"] <= 8
        assert sum(r["ended"]) == 8  # every trial's last report is marked
        if r["benchmark"] == "nb201_cifar10":
            assert len(r["regret"]) == 8  # one result per cell
        elif r["method"] in ("optuna:tpe", "random"):
            assert len(r["regret"]) == 8 * epochs  # nothing stops a trial: every epoch of every trial
    # Something stopped early: ASHA (the engine's, from the registry, Ray Tune's and Syne Tune's),
    # Syne Tune's BOHB and Optuna's pruner.
    for method in ("engine:tpe+asha", "raytune:random+asha", "synetune:asha", "synetune:bohb", "optuna:tpe+sha"):
        assert any(len(r["regret"]) < 8 * epochs for r in results if r["method"] == method)
    # Syne Tune's schedulers stop trials at their own rungs only (grace 1, reduction factor 3): at one
    # worker a trial's reports are those up to its ended mark.
    rungs = {3**k for k in range(8) if 3**k < epochs} | {epochs}
    for r in results:
        if r["method"].startswith("synetune:"):
            ends = [k + 1 for k, ended in enumerate(r["ended"]) if ended]
            assert {b - a for a, b in zip([0, *ends], ends)} <= rungs
    assert out.count("budget to reach random's median regret at 8 trials") == 2
    assert (plots / "search_quality_curves.png").is_file() and (plots / "search_quality_nb201_cifar10.png").is_file()
    # Resumable: every cell is in the results file, and a second run runs none again.
    assert len([json.loads(line) for line in results_file.read_text().splitlines()]) == len(results)
    again = search_quality.main(curves)
    assert "0 cell(s) to run" in capsys.readouterr().out
    assert len(again) == 14


def test_the_engine_asha_on_the_curves_stops_trials_at_its_rungs_only(ray_session, tmp_path):
    if not CURVES.is_file():
        pytest.skip("the learning-curve table is not built")
    _, settings, run_dir = _engine_run(tmp_path, "spaces/replay_curves.py", trials=10, seed=1, name="asha", scheduler="asha")
    rungs = {settings.grace_period_epochs * settings.reduction_factor**k for k in range(8)}
    epochs = [len(r.metrics) for r in read_trials(run_dir)]
    assert len(epochs) == 10
    assert all(e in rungs or e == settings.max_epochs for e in epochs)
    assert any(e < settings.max_epochs for e in epochs)
