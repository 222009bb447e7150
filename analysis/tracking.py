"""MLflow tracking (optional: ``pip install -e ".[mlflow]"``): the search, each trial, and the
retrained winner as MLflow runs.

    python -m search run spaces/resnet.py --mlflow sqlite:///mlflow.db     # or MLFLOW_TRACKING_URI
    mlflow ui --backend-store-uri sqlite:///mlflow.db

One MLflow run for the search (named as the run directory; the resolved settings as parameters),
and nested under it one run per trial: its parameters, its metrics per epoch (step = epoch), and at
its end its status ("completed", "stopped early at epoch 2", "error") and the node it ran on as
tags. ``retrain`` adds a run for each retrained trial, also nested under the search's: test
metrics (mean and std over seeds), the first seed's model (``model.pt``, ``model.json``) and the
confusion matrix (CSV and PNG) as artifacts. The ids are kept in ``RUN_DIR/mlflow.json``, so a
resumed run and a later ``retrain`` log into the same MLflow runs. Experiment: "image-search".
No Ray here: the engine's Tune callback (search/tracking.py) calls ``SearchTracker``.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from analysis.records import RunDir, TrialStatus, read_json, write_json

__all__ = ["EXPERIMENT", "SearchTracker", "check_tracking_uri", "log_retrain", "tracking_uri"]

EXPERIMENT = "image-search"
_IDS = "mlflow.json"
_MAX_PARAM_CHARS = 500  # MLflow refuses longer parameter values


def tracking_uri(setting: str) -> str:
    """The URI the run logs to: the ``mlflow`` setting, else ``MLFLOW_TRACKING_URI``, else ""."""
    return setting or os.environ.get("MLFLOW_TRACKING_URI", "")


def check_tracking_uri(uri: str) -> None:
    """Fail before the search, naming the URI, when MLflow is missing or nothing answers there."""
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise ValueError(
            f"`mlflow` is {uri!r}, but MLflow is not installed: pip install -e \".[mlflow]\" "
            "(or leave --mlflow and MLFLOW_TRACKING_URI unset)"
        ) from None
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            socket.create_connection((parsed.hostname or "", port), timeout=5).close()
        except OSError as error:
            raise ValueError(
                f"`mlflow` is {uri!r}, but nothing answers there ({error}): start the tracking server "
                "(`mlflow server --port 5000`), fix the URI, or use a local store such as sqlite:///mlflow.db"
            ) from None
    try:
        _client(uri).search_experiments(max_results=1)
    except Exception as error:  # noqa: BLE001 (any failure to reach the store is the user's URI)
        raise ValueError(f"`mlflow` is {uri!r}, but MLflow cannot use it: {type(error).__name__}: {error}") from None


def _client(uri: str):
    import mlflow

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")  # a dead server fails in seconds
    return mlflow.MlflowClient(tracking_uri=uri)


def _experiment_id(client, uri: str) -> str:
    found = client.get_experiment_by_name(EXPERIMENT)
    if found is not None:
        return found.experiment_id
    artifacts = None
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite" and parsed.path not in ("", "/:memory:"):
        # Beside the database, not in ./mlruns of whatever directory the command ran in.
        artifacts = (Path(uri[len("sqlite:///") :]).resolve().parent / "mlartifacts").as_uri()
    return client.create_experiment(EXPERIMENT, artifact_location=artifacts)


def _param_value(value: Any) -> str:
    return str(value)[:_MAX_PARAM_CHARS]


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")
    }


class SearchTracker:
    """The search's MLflow run and its trials' nested runs; ids persisted in RUN_DIR/mlflow.json."""

    def __init__(self, run_dir: Path, uri: str):
        from mlflow.entities import Param

        self.run_dir, self.uri = Path(run_dir), uri
        self.client = _client(uri)
        path = self.run_dir / _IDS
        ids = read_json(path) if path.is_file() else {}
        if ids.get("tracking_uri") == uri:
            self.experiment_id, self.parent, self.trials = ids["experiment_id"], ids["run_id"], ids["trials"]
            self.client.update_run(self.parent, status="RUNNING")
        else:
            settings = RunDir.open(self.run_dir).settings().as_record()
            self.experiment_id = _experiment_id(self.client, uri)
            run = self.client.create_run(
                self.experiment_id,
                run_name=settings.get("name") or self.run_dir.name,
                tags={"run_dir": str(self.run_dir.resolve()), "kind": "search"},
            )
            self.parent, self.trials = run.info.run_id, {}
            self.client.log_batch(self.parent, params=[Param(k, _param_value(v)) for k, v in sorted(settings.items())])
            self._save()

    def _save(self) -> None:
        write_json(
            self.run_dir / _IDS,
            {"tracking_uri": self.uri, "experiment_id": self.experiment_id, "run_id": self.parent, "trials": self.trials},
        )

    def trial_started(self, trial_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        if trial_id in self.trials:  # restored after a failure or by `resume`: the same MLflow run
            self.client.update_run(self.trials[trial_id], status="RUNNING")
            return
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"trial {trial_id}",
            tags={"mlflow.parentRunId": self.parent, "trial_id": trial_id, "kind": "trial"},
        )
        self.trials[trial_id] = run.info.run_id
        self.client.log_batch(run.info.run_id, params=[Param(k, _param_value(v)) for k, v in sorted(params.items())])
        self._save()

    def trial_result(self, trial_id: str, metrics: dict[str, Any]) -> None:
        import time

        from mlflow.entities import Metric

        if trial_id not in self.trials:
            return
        step = int(metrics.get("epoch", 0))
        now = int(time.time() * 1000)
        values = [Metric(k, v, now, step) for k, v in _numbers(metrics).items() if k != "epoch"]
        self.client.log_batch(self.trials[trial_id], metrics=values)

    def trial_ended(self, trial_id: str, status: dict[str, Any]) -> None:
        if trial_id not in self.trials:
            return
        run_id = self.trials[trial_id]
        text = status.get("status", "")
        for key, value in (("status", text), ("node", status.get("hostname") or status.get("node_ip", "")),
                           ("node_id", status.get("node_id", "")), ("error", status.get("error", ""))):  # fmt: skip
            if value:
                self.client.set_tag(run_id, key, str(value)[:5000])
        self.client.set_terminated(run_id, status="FAILED" if TrialStatus.of(text).is_failed() else "FINISHED")

    def finish(self, best: dict[str, Any] | None) -> None:
        if best:
            self.client.log_batch(self.parent, metrics=_metrics_now(_numbers(best)))
        self.client.set_terminated(self.parent, status="FINISHED")


def _metrics_now(values: dict[str, float], step: int = 0) -> list:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, v, now, step) for k, v in values.items()]


def log_retrain(run_dir: Path, table, models) -> list[str]:
    """One MLflow run per retrained trial, nested under the search's run: test metrics, the first
    seed's model and the confusion matrix as artifacts. Nothing when the run was not tracked."""
    from mlflow.entities import Param

    run_dir = Path(run_dir)
    path = run_dir / _IDS
    if not path.is_file():
        return []
    ids = read_json(path)
    client = _client(ids["tracking_uri"])
    logged = []
    retrains = ids.setdefault("retrain", {})
    for _, row in table.iterrows():
        trial_id = str(row["trial_id"])
        if trial_id in retrains:
            run_id = retrains[trial_id]
            client.update_run(run_id, status="RUNNING")
        else:
            run = client.create_run(
                ids["experiment_id"],
                run_name=f"retrain {trial_id}",
                tags={"mlflow.parentRunId": ids["run_id"], "trial_id": trial_id, "kind": "retrain"},
            )
            run_id = retrains[trial_id] = run.info.run_id
            client.log_batch(run_id, params=[Param("trial_id", trial_id), Param("seeds", str(int(row["seeds"])))])
        client.log_batch(run_id, metrics=_metrics_now(_numbers({k: v for k, v in row.items() if k not in ("rank",)})))
        seeds = models[models["trial_id"].astype(str) == trial_id]["seed"].tolist()
        first = run_dir / "retrain" / f"{trial_id}-seed{seeds[0]}"
        for name in ("model.pt", "model.json", "metrics.json"):
            if (first / name).is_file():
                client.log_artifact(run_id, str(first / name), artifact_path="model")
        for name in (f"{trial_id}-confusion.csv", f"{trial_id}-confusion.png", f"{trial_id}-per_class.csv"):
            if (run_dir / "retrain" / name).is_file():
                client.log_artifact(run_id, str(run_dir / "retrain" / name), artifact_path="test")
        client.set_terminated(run_id, status="FINISHED")
        logged.append(run_id)
    write_json(path, ids)
    return logged
