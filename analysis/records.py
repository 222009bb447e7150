"""The run directory's files: the only interface between the engine and the analysis.

    RUN_DIR/
      settings.json            resolved settings (defaults < space file < command line)
      space.py                 the space file as it was when the run started
      split.json               data set, seed, classes, and the train/val/test indices
      environment.json         Python, platform and package versions
      trials/<trial_id>/
        config.json            the trial's full config: re-running it reproduces the trial
        metrics.jsonl          one JSON object per epoch
        status.json            status, epochs, error, node, times
        lineage.json           PBT only: the trials it cloned (and at which epoch) and the
                               hyperparameter schedule that produced its weights
        events.out.tfevents.*  TensorBoard scalars and HParams
      ray/                     Ray Tune's own experiment state and checkpoints
      leaderboard.csv
      importance.csv, study.db, plots/, report.md      analysis.report
      test_results.csv, retrain/                       analysis.retrain (the only reader of the test split)

Every file is written atomically (temporary file, then rename), so a crash leaves the previous
version; a metrics line torn by a crash is skipped when read. ``RunDir`` is the typed view of one
run directory that the engine, the analysis and the CLI share, and ``TrialStatus`` the one list of
trial statuses. Nothing here imports Ray, nor anything of search/ but its settings
(``search.config.settings``, which imports nothing heavy).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.config.settings import Settings, field_types
from trainables.contract import INFEASIBLE

__all__ = [
    "LINEAGE",
    "RunDir",
    "TrialRecord",
    "TrialStatus",
    "append_metrics",
    "read_json",
    "read_json_lines",
    "read_trial",
    "read_trials",
    "trial_dir",
    "unfinished_budget",
    "write_json",
    "write_text",
]


# This machine's name, in the temporary files' names (``write_text``).
_HOST = socket.gethostname()

# A PBT trial's lineage file in its directory (search/trial.py writes it).
LINEAGE = "lineage.json"


@dataclass(frozen=True)
class TrialRecord:
    trial_id: str
    config: dict[str, Any]  # everything the trainable received
    params: dict[str, Any]  # what the space chose (searched parameters and its constants)
    metrics: list[dict[str, Any]]  # one per epoch, in order
    status: dict[str, Any]
    # PBT: {"clones": [{"trial": parent id, "epoch": its epoch cloned}, ...], "schedule":
    # [{"from_epoch": first epoch, "config": config from then on}, ...]}; empty for other schedulers.
    lineage: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class RunDir:
    """One run directory: ``RunDir.open(path)`` checks that it is one, the methods read and write its files."""

    path: Path

    @classmethod
    def open(cls, path: Path | str) -> "RunDir":
        """The run directory at ``path``; FileNotFoundError when it has no settings.json.

        The one "is this a run directory" check of the engine, the analysis and the CLI.
        """
        run_dir = cls(Path(path))
        if not run_dir.settings_path.is_file():
            raise FileNotFoundError(f"{str(path)!r} is not a run directory (it has no settings.json)")
        return run_dir

    @property
    def settings_path(self) -> Path:
        return self.path / "settings.json"

    def settings(self) -> Settings:
        """The run's resolved settings (recorded fields a newer or older version does not know are
        left out; missing ones take their defaults). The one reader of settings.json."""
        types = field_types()
        return Settings(**{k: v for k, v in read_json(self.settings_path).items() if k in types})

    def write_settings(self, settings: Settings) -> None:
        """Record ``settings``, with the mode its metric implies."""
        write_json(self.settings_path, settings.as_record())

    def split(self) -> dict[str, Any]:
        """split.json: data set, image size, seed, classes, and the train/val/test indices."""
        return read_json(self.path / "split.json")

    def trials(self) -> list[TrialRecord]:
        """Every trial recorded, in the order the trials started (``read_trials``)."""
        return read_trials(self.path)

    def trial(self, trial_id: str) -> TrialRecord | None:
        """The record of ``trial_id``, or None when it has none (yet)."""
        return _read_trial(trial_dir(self.path, trial_id))

    def trial_dir(self, trial_id: str) -> Path:
        return trial_dir(self.path, trial_id)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a temporary file beside it, then a rename. The
    temporary name is this host's, process's and thread's own, so writers never share one (a run
    directory can be on a file system shared by nodes), and the file gets the umask's permissions,
    as any file the user creates (``mkstemp``'s are 0600, unreadable to the others sharing a
    cluster's disk). The folder is made only when missing."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{_HOST}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        file = open(temporary, "w")
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        file = open(temporary, "w")
    try:
        with file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_json(path: Path, value: Any) -> None:
    write_text(path, json.dumps(value, indent=2, sort_keys=True, default=_jsonable) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file (``metrics.jsonl``, Ray's ``result.json``), in order; a line
    torn by a crash is skipped, and a missing file has none."""
    records = []
    for line in Path(path).read_text().splitlines() if Path(path).is_file() else []:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def append_metrics(path: Path, metrics: dict[str, Any]) -> None:
    """Append one epoch's line; a line torn by a crash is ignored by ``read_trials``."""
    with open(path, "a") as file:
        file.write(json.dumps(metrics, sort_keys=True, default=_jsonable) + "\n")


def trial_dir(run_dir: Path, trial_id: str) -> Path:
    return Path(run_dir) / "trials" / trial_id


def read_trials(run_dir: Path) -> list[TrialRecord]:
    """Every trial recorded under ``run_dir``, in the order the trials started."""
    records = [_read_trial(directory) for directory in sorted((Path(run_dir) / "trials").glob("*/"))]
    records = [record for record in records if record is not None]
    records.sort(key=lambda r: (r.status.get("started_at", ""), r.trial_id))
    return records


def read_trial(run_dir: Path, trial_id: str) -> TrialRecord:
    """One recorded trial; FileNotFoundError when it has no config.json."""
    record = _read_trial(trial_dir(run_dir, trial_id))
    if record is None:
        raise FileNotFoundError(f"trial {trial_id!r} has no record in {Path(run_dir) / 'trials'}")
    return record


def _read_trial(directory: Path) -> TrialRecord | None:
    if not (directory / "config.json").is_file():
        return None
    started = read_json(directory / "config.json")
    metrics = read_json_lines(directory / "metrics.jsonl")
    status = read_json(directory / "status.json") if (directory / "status.json").is_file() else {}
    return TrialRecord(
        trial_id=directory.name,
        config=started["config"],
        params=started["params"],
        metrics=_one_per_epoch(metrics),
        status=status,
        lineage=read_json(directory / LINEAGE) if (directory / LINEAGE).is_file() else {},
    )


class TrialStatus(enum.Enum):
    """A trial's status, as its status.json says it (search/recorder.py writes it; the leaderboard
    shows it). The text may go on after the value ("stopped early at epoch 2"): ``of`` reads it.
    Like Optuna's ``TrialState``: the one place that says which statuses end a trial."""

    PENDING = "pending"  # no epoch reported yet
    RUNNING = "running"
    COMPLETED = "completed"  # trained to its max_epochs
    STOPPED = "stopped early"  # by the scheduler (ASHA, PBT's end): "stopped early at epoch N"
    DIVERGED = "diverged"  # its loss stopped being finite: "diverged at epoch N"
    ERROR = "error"
    INFEASIBLE = INFEASIBLE  # out of memory even at the smallest micro-batch

    @classmethod
    def of(cls, text: str) -> "TrialStatus":
        """The status a status text starts with; an empty or unknown text is PENDING."""
        return next((status for status in cls if text.startswith(status.value)), cls.PENDING)

    def at_epoch(self, epoch: int) -> str:
        """The status text of a trial that ended at ``epoch`` (STOPPED, DIVERGED)."""
        return f"{self.value} at epoch {epoch}"

    def is_ended(self) -> bool:
        """The trial will not train again (the budget counts it as done)."""
        return self not in (TrialStatus.PENDING, TrialStatus.RUNNING)

    def is_failed(self) -> bool:
        """It ended without a result to trust: an error, or a configuration that does not fit."""
        return self in (TrialStatus.ERROR, TrialStatus.INFEASIBLE)

    def is_comparable(self) -> bool:
        """Its scores can stand against other trials' (not diverged, not failed)."""
        return self is not TrialStatus.DIVERGED and not self.is_failed()


def unfinished_budget(run_dir: Path) -> int:
    """How many of the run's budgeted trials have not ended: 0 for a finished search; more after
    Ctrl-C, a killed driver or a lost cluster (``python -m search resume`` finishes them)."""
    budget = RunDir(Path(run_dir)).settings().trials
    ended = sum(1 for r in read_trials(run_dir) if TrialStatus.of(r.status.get("status", "")).is_ended())
    return max(0, budget - ended)


def _one_per_epoch(metrics: list[dict]) -> list[dict]:
    # A trial restored from a checkpoint repeats the epochs after it; keep the latest of each.
    by_epoch = {m.get("epoch"): m for m in metrics}
    return [by_epoch[e] for e in sorted(by_epoch, key=lambda e: (e is None, e))]


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
