"""What a trainable and the engine agree on, without torch or Ray: the data a trial receives, where
it keeps its checkpoints, and the failures that a retry from the last checkpoint would only repeat."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # annotations only: the engine's --help path imports this module, numpy it need not
    import numpy as np

__all__ = [
    "INFEASIBLE",
    "NOT_RETRIED",
    "Checkpoints",
    "TrialData",
    "TrialDiverged",
    "TrialInfeasible",
    "out_of_memory_reason",
]

# How the message of a TrialInfeasible starts: the run's records show it as the trial's status.
INFEASIBLE = "infeasible: out of memory"


@dataclass(frozen=True)
class TrialData:
    """What a trial receives: train and validation images only. The test split never gets here.

    Images are arrays, or ``ImageView``s of the data cache (a path and indices: what travels to a
    trial; ``np.asarray`` reads them). ``loading`` "stream": the classifier streams batches from
    the memory-mapped shards (trainables/streaming.py) instead of copying the set to its device.
    """

    train_images: Any  # (N, 3, S, S) uint8: np.ndarray or ImageView
    train_labels: np.ndarray
    val_images: Any
    val_labels: np.ndarray
    classes: tuple[str, ...]
    loading: str = "memory"  # "memory" | "stream"


class Checkpoints(Protocol):
    """Where a trial keeps its per-epoch state: ``save`` before each report, ``load`` on resume."""

    def load(self) -> dict | None: ...

    def save(self, state: dict) -> None: ...


class TrialDiverged(FloatingPointError):
    """The training loss became NaN or infinite; retrying the same configuration will not help."""


class TrialInfeasible(RuntimeError):
    """Even the smallest micro-batch runs out of GPU memory: this configuration cannot train here.

    The message starts with INFEASIBLE ("infeasible: out of memory"), which the run's records show
    as the status.
    """


# Failures that a retry from the last checkpoint would only reproduce.
NOT_RETRIED = (TrialDiverged, TrialInfeasible)


def out_of_memory_reason(error: BaseException) -> str:
    """The first line of an out-of-memory error's message (CUDA's are long), for a status line."""
    return (str(error).strip().splitlines() or ["CUDA out of memory"])[0]
