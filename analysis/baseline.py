"""A classic baseline on the retrain's split, so that every report says whether the search beat it.

Logistic regression (scikit-learn, standardised inputs, C = 1) fitted on the train + validation
images and tested once on the test split, the same images the winner is retrained and tested on:

- on the **pixels** (flattened, scaled to [0, 1]) when the winner trains from scratch;
- on the **frozen features** of the winner's pretrained backbone (``trainables.features``: pooled
  pre-logits, cached on disk) when the run uses one, i.e. a linear probe.

Not tuned, on purpose: it is the reference a hand-written script would give in a minute. Written
to ``RUN_DIR/retrain/baseline.json`` and reused by a later ``retrain`` unless ``force``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from analysis.evaluate import classification_metrics
from analysis.records import read_json, write_json
from trainables.metrics import log_loss
from trainables.models import uses_pretrained_backbone

__all__ = ["BASELINE_FILE", "fit_baseline"]

BASELINE_FILE = "baseline.json"


def fit_baseline(root: Path, data, winner_config: dict[str, Any], threads: int = 1, force: bool = False) -> dict[str, Any]:
    """Fit and test the baseline for the winner ``winner_config``; its metrics (stored in ``root``)."""
    pretrained = uses_pretrained_backbone(winner_config)
    what = (
        f"logistic regression on frozen {winner_config['model']} features"
        if pretrained
        else "logistic regression on pixels"
    )
    key = {"baseline": what, "train_examples": len(data.train_labels), "test_examples": len(data.test_labels)}
    path = Path(root) / BASELINE_FILE
    if path.is_file() and not force:
        stored = read_json(path)
        if {k: stored.get(k) for k in key} == key:
            return stored
    began = time.perf_counter()
    if pretrained:
        from trainables.features import fit_feature_classifier  # imports torch and timm: only for a probe

        config = {
            "model": winner_config["model"],
            "weights": winner_config["weights"],
            "classifier": "logistic_regression",
            "C": 1.0,
            "standardize": True,
            "threads": threads,
        }
        model = fit_feature_classifier(config, data.train_images, data.train_labels, data.classes)
        probabilities = model.probabilities(data.test_images)
    else:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        def pixels(images: np.ndarray) -> np.ndarray:
            return np.asarray(images, dtype=np.float32).reshape(len(images), -1) / 255.0

        estimator = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
        estimator.fit(pixels(data.train_images), data.train_labels)
        # Columns for every class, in class order, even if one were missing from the training labels.
        probabilities = np.zeros((len(data.test_labels), len(data.classes)))
        probabilities[:, estimator.classes_] = estimator.predict_proba(pixels(data.test_images))
    summary, _ = classification_metrics(data.test_labels, probabilities.argmax(1), data.classes)
    result = key | {
        "baseline_test_acc": summary["test_acc"],
        "baseline_test_balanced_acc": summary["test_balanced_acc"],
        "baseline_test_loss": log_loss(probabilities, data.test_labels),
        "baseline_fit_s": round(time.perf_counter() - began, 2),
    }
    write_json(path, result)
    return result
