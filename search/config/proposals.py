"""What the searcher does with a proposal and with an ended trial, beside the sampler itself.

Repeats (setting ``repeats``). A sampler may propose a configuration already finished or running:
TPE does so often on a categorical space (13.5% of one search's trials re-ran a cell). With
``"avoid"`` (the default) the searcher never trains one twice: the proposal is told to the
sampler with the known outcome (one more observation for TPE to learn from) and the sampler is
asked again; after ``MAX_ASKS`` proposals in a row of known configurations, an untried point of
a discrete space is enqueued instead; when every configuration of a discrete space is finished
or running, the search stops. ``"allow"`` trains every proposal (a noisy objective, where a
second run is a second observation).

Stopped trials (setting ``stopped_trials``). A trial the scheduler stopped early is told to the
sampler as ``"complete"`` (its last value, as a finished trial: the default) or ``"pruned"``
(Optuna's PRUNED, its per-epoch values reported, as Optuna's own pruners do; TPE then ranks it
by its last intermediate value among the pruned, and optuna-dashboard's "Include PRUNED trials"
applies).

No Ray and no Optuna here: search/strategies.py's searcher calls these; tests call them directly.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

__all__ = ["MAX_ASKS", "REPEATS", "STOPPED_TRIALS", "Ledger", "Outcome", "configuration_key", "outcome"]

REPEATS = ("avoid", "allow")
STOPPED_TRIALS = ("complete", "pruned")

# Proposals in a row of known configurations before the searcher picks an untried point itself.
MAX_ASKS = 20


def configuration_key(params: dict[str, Any]) -> str:
    """The identity of a configuration: its searched parameters and their values, in name order."""
    return json.dumps(params, sort_keys=True, default=repr)


@dataclass
class Outcome:
    """What the sampler was (or will be) told about one configuration: an Optuna state name
    ("COMPLETE", "PRUNED", "FAIL"; "RUNNING" until it ends), its value(s), its per-epoch values."""

    trial_id: str
    state: str = "RUNNING"
    values: Any = None
    intermediate: dict[int, float] = field(default_factory=dict)


def outcome(
    result: dict | None,
    error: bool,
    metric: str | list[str],
    stopped_trials: str,
    max_epochs: int,
) -> tuple[str, Any]:
    """(Optuna state name, value or values) to tell the sampler about an ended trial.

    One objective, as Ray's OptunaSearch tells it: no value is FAIL after an error, else PRUNED;
    a non-finite value is FAIL; otherwise COMPLETE with the last value (after an error too), except
    that a trial stopped before ``max_epochs`` (not diverged, no error) is PRUNED when
    ``stopped_trials`` is "pruned".

    Several objectives: FAIL without every value (Ray's class would tell a list holding None,
    which Optuna rejects), and FAIL for a diverged trial (its accuracy of 0 beside the smallest
    model would sit on the Pareto front, and NSGA-II breeds from the front); otherwise COMPLETE
    (Optuna prunes no multi-objective trial).
    """
    result = result or {}
    if isinstance(metric, list):
        values = [result.get(name) for name in metric]
        if result.get("diverged") or not all(_finite(v) for v in values):
            return "FAIL", None
        return "COMPLETE", values
    value = result.get(metric)
    if value is None:
        return ("FAIL" if error else "PRUNED"), None
    if not _finite(value):
        return "FAIL", None
    stopped = not error and not result.get("diverged") and result.get("epoch", max_epochs) < max_epochs
    if stopped and stopped_trials == "pruned":
        return "PRUNED", None
    return "COMPLETE", value


class Ledger:
    """The configurations a search has proposed for training, with their outcomes.

    ``grid`` (a discrete space's points, in the order to try them; None for a space with a
    continuous parameter) lets the searcher pick untried points and know when none is left.
    """

    def __init__(self, grid: list[dict[str, Any]] | None = None):
        self.outcomes: dict[str, Outcome] = {}
        self.avoided = 0  # proposals of known configurations, asked again instead of trained
        self.grid_size = len({configuration_key(point) for point in grid}) if grid is not None else None
        self._untried: Iterator[dict[str, Any]] = iter(grid or [])

    def known(self, params: dict[str, Any]) -> Outcome | None:
        return self.outcomes.get(configuration_key(params))

    def start(self, trial_id: str, params: dict[str, Any]) -> None:
        self.outcomes.setdefault(configuration_key(params), Outcome(trial_id))

    def end(self, trial_id: str, params: dict[str, Any], state: str, values: Any, intermediate: dict[int, float]) -> None:
        """The first trial of a configuration decides its outcome; a later one (``repeats = "allow"``) does not."""
        known = self.outcomes.setdefault(configuration_key(params), Outcome(trial_id))
        if known.trial_id == trial_id:
            known.state, known.values, known.intermediate = state, values, dict(intermediate)

    def exhausted(self) -> bool:
        """True when every point of a discrete space is finished or running."""
        return self.grid_size is not None and len(self.outcomes) >= self.grid_size

    def untried(self) -> dict[str, Any] | None:
        """The next grid point not yet proposed; None when there is none (or no grid)."""
        for point in self._untried:
            if self.known(point) is None:
                return point
        return None

    def seed(self, known: Iterable[tuple[str, dict[str, Any], str, Any, dict[int, float]]]) -> None:
        """Add the trials of an earlier experiment (an extension's warm start):
        (trial id, params, state, values, per-epoch values) each."""
        for trial_id, params, state, values, intermediate in known:
            self.end(trial_id, params, state, values, intermediate)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
