"""Ensembles of retrained models against the single best, from the models' stored test
probabilities (``retrain --ensemble``): ensemble.csv and its text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.evaluate import probability_metrics

__all__ = ["ensemble_table", "format_ensemble"]


def ensemble_table(members: list[list[Path]], labels: np.ndarray, tta: bool = False) -> pd.DataFrame:
    """Single best model against averaged ensembles, from the models' stored test probabilities.

    ``members[i]`` are the directories of the i-th ranked trial's models, its first seed first.
    Rows: the best trial's first model; the top-k trials' first models averaged (one per trial);
    with several seeds, the best trial's models averaged and every model averaged.
    """
    labels = np.asarray(labels)
    candidates = [("single best", members[0][:1]), (f"ensemble of top {len(members)} (first seed each)", [m[0] for m in members])]
    if max(len(m) for m in members) > 1:
        candidates.insert(1, (f"best trial, {len(members[0])} seeds averaged", members[0]))
        every = [d for m in members for d in m]
        candidates.append((f"ensemble of top {len(members)} x all seeds ({len(every)} models)", every))
    rows = []
    for name, directories in candidates:
        row = {"model": name, "n_models": len(directories)}
        for suffix in ("", "_tta") if tta else ("",):
            probabilities = np.mean([np.load(d / f"test_probabilities{suffix}.npy", allow_pickle=False) for d in directories], axis=0)
            summary, _, _ = probability_metrics(probabilities, labels, tuple(str(c) for c in range(probabilities.shape[1])))
            row |= {f"test_acc{suffix}": summary["test_acc"], f"test_balanced_acc{suffix}": summary["test_balanced_acc"], f"test_loss{suffix}": summary["test_loss"]}
        row["members"] = " + ".join(d.name for d in directories)
        rows.append(row)
    return pd.DataFrame(rows)



def format_ensemble(table: pd.DataFrame) -> str:
    """The ensemble comparison as aligned text; the member lists are in ensemble.csv."""
    shown = table.drop(columns=["members"])
    return "ensemble vs. single best, same test split:\n" + shown.to_string(index=False, float_format=lambda x: f"{x:.4f}")

