"""The classic baselines (analysis/baseline.py) on digits: real fits on tiny data, no Ray."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.baseline import (
    MAX_TRAIN,
    fit_baselines,
    format_baselines,
    pixel_matrix,
    stratified_subsample,
    strongest,
)
from analysis.final_data import FinalData
from trainables.models import OFFLINE_MODEL


@pytest.fixture(scope="module")
def digits_final(digits_16):
    """A stratified 400 train + validation and 200 test images of digits at 16 px."""
    images, split = digits_16
    train = np.union1d(split.train, split.val)
    train = train[stratified_subsample(images.labels[train], 400, seed=1)]
    test = split.test[stratified_subsample(images.labels[split.test], 200, seed=1)]
    return FinalData(images.images[train], images.labels[train], images.images[test], images.labels[test],
                     images.classes, train, test)  # fmt: skip


def test_stratified_subsample_keeps_every_class_in_proportion_and_is_seeded():
    labels = np.repeat([0, 1, 2], [600, 300, 3])
    picked = stratified_subsample(labels, 90, seed=0)
    assert len(picked) == 90 and np.all(np.diff(picked) > 0)
    counts = np.bincount(labels[picked], minlength=3)
    assert abs(counts[0] - 2 * counts[1]) <= 1 and counts[2] == 1  # 59.8, 29.9 and 0.3 of 90, rounded
    assert np.array_equal(picked, stratified_subsample(labels, 90, seed=0))
    assert not np.array_equal(picked, stratified_subsample(labels, 90, seed=1))
    assert np.array_equal(stratified_subsample(labels, 5000, seed=0), np.arange(len(labels)))


def test_pixel_matrix_area_averages_to_the_cap_in_batches():
    images = np.random.default_rng(0).integers(0, 256, size=(5, 3, 32, 32), dtype=np.uint8)
    x = pixel_matrix(images, side=16, batch=2)
    assert x.shape == (5, 3 * 16 * 16) and x.dtype == np.float32
    by_hand = images.reshape(5, 3, 16, 2, 16, 2).mean(axis=(3, 5)) / 255.0
    np.testing.assert_allclose(x, by_hand.reshape(5, -1), atol=1e-6)
    assert pixel_matrix(images[:, :, :8, :8], side=16).shape == (5, 3 * 8 * 8)  # never upsampled


def test_three_baselines_for_a_pretrained_winner_and_the_strongest_named(digits_final, tmp_path):
    winner = {"model": OFFLINE_MODEL, "weights": "offline"}
    rows = fit_baselines(tmp_path, digits_final, winner, threads=1, out=lambda line: None)
    assert [r["baseline"] for r in rows] == ["logreg_pixels", "svc_rbf_pixels", "linear_probe"]
    # Ten classes, chance 0.1. Measured once: 0.91, 0.965 and 0.425 (Lite0 sees 16 px images as 1 x 1 features).
    assert rows[0]["test_acc"] > 0.5 and rows[1]["test_acc"] > 0.5 and rows[2]["test_acc"] > 0.2
    svc = rows[1]
    assert "chosen by 3-fold CV over 6 settings" in svc["tuned"] and svc["train_examples"] == 400
    best = strongest(rows)
    assert best["test_acc"] == max(r["test_acc"] for r in rows)

    below = format_baselines(rows, best["test_acc"] - 0.01, 0.0032, 3)
    assert len(below) == 4
    assert below[-1] == (
        f"the search did not beat the strongest baseline ({best['name']}, {best['test_acc']:.4f}) on test accuracy: "
        f"winner {best['test_acc'] - 0.01:.4f} ± 0.0032 (mean ± std over 3 seed(s))"
    )
    above = format_baselines(rows, best["test_acc"] + 0.005, 0.001, 3)[-1]
    assert above.startswith(f"the search beat the strongest baseline ({best['name']}, ") and above.endswith("+0.0050")
    # A tie is not a win.
    assert "did not beat" in format_baselines(rows, best["test_acc"], 0.0, 3)[-1]

    # Stored and reused; --force fits again.
    def seen(rows: list[dict]) -> list[tuple]:
        return [(r["baseline"], r["test_acc"], r["fit_s"]) for r in rows]

    assert seen(fit_baselines(tmp_path, digits_final, winner, out=lambda line: None)) == seen(rows)
    (tmp_path / "baselines.json").write_text((tmp_path / "baselines.json").read_text().replace('"fit_s": ', '"fit_s": 1000'))
    assert fit_baselines(tmp_path, digits_final, winner, out=lambda line: None)[0]["fit_s"] >= 1000
    assert fit_baselines(tmp_path, digits_final, winner, force=True, out=lambda line: None)[0]["fit_s"] < 1000


def test_a_capped_baseline_says_it_was_fitted_on_a_subsample(digits_final, tmp_path, monkeypatch):
    monkeypatch.setitem(MAX_TRAIN, "svc_rbf_pixels", 120)
    lines: list[str] = []
    rows = fit_baselines(tmp_path, digits_final, {"model": "scratch_resnet", "weights": "none"}, out=lines.append)
    assert [r["baseline"] for r in rows] == ["logreg_pixels", "svc_rbf_pixels"]  # from scratch: no probe
    assert rows[1]["train_examples"] == 120 and rows[1]["of_train_examples"] == 400
    assert "a stratified subsample of 120 of 400 images (seed 0)" in lines[1]
    assert "all 400 images" in lines[0]
