"""Issue 21, items 1 and 3 and its bad input, end to end on the shared Ray session: a streamed
ImageFolder run is retrained, predicted from and resumed with its images read from the data cache
in batches (the streamed path recorded, the models equal to the in-memory path's), its report
compares the winner with the strongest classic baseline, and a cache gone or damaged since the
search is exit 2 naming the shard and the command that rebuilds it, with nothing written lost."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.records import read_json, read_trials
from search.api import open_run
from search.cli import main
from tests.conftest import REPO, write_png_folder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def streamed_run(ray_session, tmp_path_factory, digits_16):
    """A finished streamed search (2 trials, 1 epoch) on a 3-class ImageFolder, not retrained yet."""
    tmp = tmp_path_factory.mktemp("streamed")
    images, _ = digits_16
    pick = np.concatenate([np.flatnonzero(images.labels == k)[:30] for k in range(3)])
    folder = write_png_folder(tmp / "data", images.images[pick], images.labels[pick], ["a", "b", "c"])
    code = main(["run", str(REPO / "spaces" / "scratch_cnn.py"), "--dataset", str(folder), "--data-loading", "stream",
                 "--data-cache", str(tmp / "cache"), "--storage", str(tmp / "runs"), "--trials", "2", "--max-epochs", "1",
                 "--grace-period-epochs", "1", "--no-retrain", "--name", "streamed"])  # fmt: skip
    assert code == 0
    return tmp / "runs" / "streamed", folder, tmp / "cache"


def test_retrain_streams_and_matches_the_in_memory_path(streamed_run, capsys):
    from analysis.final_data import load_final_data
    from trainables.cache import ImageView
    from trainables.classifier import fit_classifier

    run_dir, _, _ = streamed_run
    assert read_json(run_dir / "split.json")["loading"] == "stream"
    assert main(["retrain", str(run_dir), "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    assert "streamed from the data cache in batches" in out
    models = pd.read_csv(run_dir / "retrain" / "models.csv", dtype={"trial_id": str})
    assert list(models["data_loading"]) == ["stream", "stream"]

    data = load_final_data(run_dir)
    assert data.loading == "stream" and isinstance(data.train_images, ImageView) and isinstance(data.test_images, ImageView)
    # The same refit in memory (arrays, stream=False) gives the same model: the same test probabilities.
    first = run_dir / "retrain" / f"{models['trial_id'][0]}-seed{models['seed'][0]}"
    built = read_json(first / "model.json")
    assert built["data_loading"] == "stream"
    record = next(r for r in read_trials(run_dir) if r.trial_id == built["trial_id"])
    in_memory = fit_classifier(built["config"], np.asarray(data.train_images), data.train_labels, data.classes,
                               epochs=built["epochs"], lr_per_epoch=[m["lr"] for m in record.metrics if "lr" in m])  # fmt: skip
    expected = in_memory.probabilities(np.asarray(data.test_images))
    np.testing.assert_allclose(np.load(first / "test_probabilities.npy"), expected, rtol=0, atol=1e-5)

    # Item 3: every pixel baseline beside the winner, the headline against the strongest.
    results = pd.read_csv(run_dir / "test_results.csv", dtype={"trial_id": str})
    row = results.iloc[0]
    assert {"logreg_pixels_test_acc", "svc_rbf_pixels_test_acc"} <= set(results.columns)
    assert row["strongest_baseline_test_acc"] == max(row["logreg_pixels_test_acc"], row["svc_rbf_pixels_test_acc"])
    beaten = row["test_acc_mean"] > row["strongest_baseline_test_acc"]
    assert bool(row["beats_strongest_baseline"]) == beaten
    wording = "the search beat the strongest baseline" if beaten else "the search did not beat the strongest baseline"
    assert f"{wording} ({row['strongest_baseline']}, {row['strongest_baseline_test_acc']:.4f})" in out
    assert wording[1:] in (run_dir / "report.md").read_text()


def test_predict_from_a_streamed_run_agrees_with_the_models(streamed_run, capsys):
    from analysis.store import load_retrained, retrained_models
    from trainables.images import load_image

    run_dir, folder, _ = streamed_run
    if not (run_dir / "test_results.csv").is_file():
        assert main(["retrain", str(run_dir), "--seeds", "2"]) == 0
    image = folder / "b" / sorted(p.name for p in (folder / "b").iterdir())[0]
    capsys.readouterr()
    assert main(["predict", str(run_dir), str(image), "--top", "1"]) == 0
    printed = capsys.readouterr().out.strip()
    models = [load_retrained(run_dir, d) for d in retrained_models(run_dir)]
    pixels = load_image(image, 16).numpy()[None]
    mean = np.mean([m.probabilities(pixels) for m in models], axis=0)[0]
    assert printed == f"{image}: {models[0].classes[int(mean.argmax())]} {mean.max():.4f}"


def test_a_damaged_or_missing_cache_is_exit_2_and_loses_nothing(streamed_run, capsys):
    run_dir, _, cache = streamed_run
    if not (run_dir / "test_results.csv").is_file():
        assert main(["retrain", str(run_dir), "--seeds", "2"]) == 0
    written = {p: p.read_bytes() for p in [run_dir / "test_results.csv", *sorted((run_dir / "retrain").rglob("*")), ] if p.is_file()}
    shards = sorted(cache.glob("*/shard-*.npy"))  # 90 images: shards of MIN_CHUNK_IMAGES (trainables/data.py)
    assert len(shards) >= 1
    shard = shards[0]
    good = shard.read_bytes()
    shard.write_bytes(good[: len(good) // 2])  # truncated between the search and this retrain
    capsys.readouterr()
    assert main(["retrain", str(run_dir), "--force"]) == 2
    error = capsys.readouterr().err
    assert f"{shard.name} (truncated or corrupted)" in error and str(shard.parent) in error
    assert f"python -m search retrain {run_dir} --rebuild-cache" in error
    assert {p: p.read_bytes() for p in written} == written  # --force retrained nothing, rewrote nothing

    shard.unlink()  # gone
    assert main(["retrain", str(run_dir), "--force", "--seeds", "2"]) == 2
    assert f"{shard.name} (missing)" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in written} == written

    # The classifier winner predicts without the cache; --rebuild-cache decodes it again.
    image = next((run_dir.parent.parent / "data" / "a").iterdir())
    assert main(["predict", str(run_dir), str(image)]) == 0
    assert main(["retrain", str(run_dir), "--rebuild-cache", "--seeds", "2"]) == 0
    assert shard.read_bytes() == good

    shard.unlink()  # the Python API rebuilds it the same way
    open_run(run_dir).retrain(seeds=2, force=True, rebuild_cache=True)
    assert shard.read_bytes() == good


def test_resume_of_a_streamed_run_streams_its_retrain(streamed_run, capsys):
    run_dir, _, _ = streamed_run
    capsys.readouterr()
    assert main(["resume", str(run_dir), "--trials", "3"]) == 0
    out = capsys.readouterr().out
    assert len(read_trials(run_dir)) == 3
    assert "streamed from the data cache in batches" in out or "reused from an earlier retrain" in out
    models = pd.read_csv(run_dir / "retrain" / "models.csv", dtype={"trial_id": str})
    assert set(models["data_loading"]) == {"stream"}
    assert (run_dir / "report.md").is_file() and "strongest baseline" in (run_dir / "report.md").read_text()
