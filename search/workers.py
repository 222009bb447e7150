"""Trials trained by several workers at once (``--workers-per-trial N``), through Ray Train.

Each Tune trial is a ``WorkersTrial`` actor that holds no CPU and no GPU (a 1-byte ``memory``
bundle: Tune needs some resource per trial). It starts a Ray Train ``TorchTrainer`` of N
workers, each holding ``cpus_per_trial`` CPUs and ``gpus_per_trial`` GPUs
(``ScalingConfig.resources_per_worker``); Ray Train sets up the process group (gloo on CPUs,
NCCL on GPUs) and each worker's CUDA device, and every worker runs the trial's trainable, which
trains data-parallel with torch.distributed alone (trainables/distributed.py).

This is Ray Train V2's way to tune a Train run (a Tune trainable that launches a TorchTrainer;
V2 no longer takes a trainer as the Tune trainable itself). The actor is a class trainable, one
``step`` per epoch: worker 0 hands each epoch's metrics and checkpoint to it through a Ray queue,
and all workers wait for Tune's verdict before the next epoch. When ASHA stops the trial, Tune
calls ``cleanup``, which tells the workers to stop: they end their training function and Ray
Train ends cleanly, freeing their resources for the next trial (killing the actor while the
workers run would leave Train's placement group behind and the next trial waiting for it).
Reports, checkpoints (Tune's, one per epoch), ``resume``, ASHA and the run directory's records
see a multi-worker trial as they see a one-process trial; a restored trial's checkpoint goes to
every worker as its starting state. Ray Train's own retries are off (Tune's ``max_failures``
retries the trial); Train keeps its run state under ``<run dir>/ray_train/``.
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.util.queue import Empty, Queue

from search import _adapter
from search.trial import MetricNotReported, check_first_report, remember_final_error, replay_or_refuse
from trainables.contract import NOT_RETRIED, TrialDiverged, TrialInfeasible

__all__ = ["TORCH_BACKEND_ENV", "TRIAL_ACTOR_RESOURCES", "workers_trainable"]

TORCH_BACKEND_ENV = "IMAGE_SEARCH_TORCH_BACKEND"  # "gloo" or "nccl"; unset: Ray Train's choice

# What the Tune actor of a multi-worker trial holds: Tune refuses an empty request, and any CPU
# it held would be missing for the workers (2 workers x 1 CPU would never start on 2 CPUs).
TRIAL_ACTOR_RESOURCES = {"cpu": 0, "memory": 1}

_POLL_S = 0.5
_STATE_FILE = "state.pt"


def workers_trainable(
    data: Any, defaults: dict, trainable_name: str, run_dir: str, finished: dict, workers: int, cpus: float, gpus: float,
    metric: str = "val_acc",
) -> type:
    """The Tune class trainable of a multi-worker search, its fixed arguments bound."""
    shared = ray.put(data)

    class WorkersTrial(_WorkersTrial):
        fixed = dict(
            data=shared, defaults=defaults, trainable_name=trainable_name, run_dir=run_dir,
            finished=finished, workers=workers, cpus=cpus, gpus=gpus, metric=metric,
        )  # fmt: skip

    return WorkersTrial


class _WorkersTrial(tune.Trainable):
    fixed: dict = {}

    def setup(self, config: dict) -> None:
        self.trial_config = dict(config)
        self.start: dict | None = None  # set by load_checkpoint when Tune restores the trial
        self.state: bytes | None = None  # the last epoch's checkpoint, from worker 0
        self.thread: threading.Thread | None = None
        self.outcome: dict[str, BaseException] = {}
        self.failure: tuple | None = None
        self.first_report = True
        self.node_id = ray.get_runtime_context().get_node_id()

    def step(self) -> dict:
        fixed = self.fixed
        if self.thread is None:
            replayed = replay_or_refuse(fixed["run_dir"], self.trial_id, fixed["finished"])
            if replayed is not None:  # recorded as ended before the driver died
                return replayed | {"done": True}
            self._start_workers()
        else:
            self.replies.put("continue")
        item = self._next_item()
        if item is None:  # the workers ended without another report
            try:
                self._raise_failure()
            except NOT_RETRIED as error:  # as search/trial.py's ray_trial: a retry would repeat it
                remember_final_error(fixed["run_dir"], self.trial_id, error)
                raise
            return {"done": True}
        _, metrics, self.state = item
        if self.first_report:  # as search/trial.py's ray_trial: the metric, before Tune sees it
            self.first_report = False
            try:
                check_first_report(metrics, fixed["metric"], fixed["trainable_name"])
            except MetricNotReported as error:
                remember_final_error(fixed["run_dir"], self.trial_id, error)
                raise
        # The trainable's last epoch (or a divergence) ends the trial here, not one step later.
        last = metrics.get("diverged") or metrics.get("epoch", 0) >= self.trial_config.get("max_epochs", self.fixed["defaults"].get("max_epochs", 0))
        return metrics | {"node_id": self.node_id} | ({"done": True} if last else {})

    def _start_workers(self) -> None:
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer

        fixed = self.fixed
        self.reports, self.replies = Queue(actor_options={"num_cpus": 0}), Queue(actor_options={"num_cpus": 0})
        gpus = fixed["gpus"]
        # Ray Train's placement-group cleaner asks the state API, which finds its cluster by an
        # address file, not this connection: where that is not this session, every trial's end
        # would wait out the cleaner's 12 s stop, or worse (search/_adapter.py).
        reached = _adapter.state_api_reaches_this_session()
        trainer_class = TorchTrainer if reached else _adapter.without_placement_group_cleaner(TorchTrainer)
        trainer = trainer_class(
            _worker,
            train_loop_config={
                "trainable": fixed["trainable_name"],
                "config": fixed["defaults"] | self.trial_config,
                "data": fixed["data"],
                "start": ray.put(self.start) if self.start is not None else None,
                "reports": self.reports,
                "replies": self.replies,
                "gpus": gpus,
            },
            scaling_config=ScalingConfig(
                num_workers=fixed["workers"],
                use_gpu=gpus > 0,
                resources_per_worker={"CPU": fixed["cpus"]} | ({"GPU": gpus} if gpus else {}),
            ),
            # None: NCCL with GPUs, gloo without. TORCH_BACKEND_ENV forces one (tests/logical_gpus.py
            # declares GPUs that torch cannot see, so NCCL could not start there).
            torch_config=TorchConfig(backend=os.environ.get(TORCH_BACKEND_ENV) or None),
            run_config=RunConfig(
                name=f"trial-{self.trial_id}",
                storage_path=str(Path(fixed["run_dir"]) / "ray_train"),
                failure_config=FailureConfig(max_failures=0),
            ),
        )
        self.thread = threading.Thread(target=_fit, args=(trainer, self.outcome), daemon=True)
        self.thread.start()

    def _next_item(self) -> tuple | None:
        """The next report from worker 0; None once the trainer ended and every item is read."""
        while True:
            try:
                item = self.reports.get(timeout=_POLL_S)
            except Empty:
                if self.thread.is_alive() or not self.reports.empty():
                    continue
                return None
            if item[0] == "report":
                return item
            self.failure = item  # ("error", kind, message): raised once the trainer ended

    def _raise_failure(self) -> None:
        self.thread.join()
        if self.failure is not None:
            kinds = {"TrialInfeasible": TrialInfeasible, "TrialDiverged": TrialDiverged}
            raise kinds[self.failure[1]](self.failure[2])
        if "error" in self.outcome:
            raise RuntimeError(f"the trial's Ray Train workers failed: {self.outcome['error']}") from self.outcome["error"]

    def save_checkpoint(self, checkpoint_dir: str) -> dict | None:
        if self.state is not None:
            (Path(checkpoint_dir) / _STATE_FILE).write_bytes(self.state)
        return None

    def load_checkpoint(self, checkpoint) -> None:
        path = Path(checkpoint if isinstance(checkpoint, str) else checkpoint.path) / _STATE_FILE
        if path.exists():
            self.start = _load_state(path.read_bytes())

    def cleanup(self) -> None:
        """Stopped (ASHA) or ended: let the workers end their training function, then Ray Train."""
        if self.thread is None:
            return
        if self.thread.is_alive():
            self.replies.put("stop")
            self.thread.join(timeout=120)


def _fit(trainer, outcome: dict) -> None:
    try:
        trainer.fit()
    except BaseException as error:  # handed to the Tune actor's thread, which raises it
        outcome["error"] = error


def _dump_state(state: dict) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _load_state(payload: bytes) -> dict:
    import torch

    return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)


class _WorkerCheckpoints:
    """A worker's checkpoint store: ``load`` gives the trial's starting state; worker 0's ``save``
    rides its next report to the Tune actor, the other workers' states are the same and dropped."""

    def __init__(self, start: dict | None, rank: int):
        self.start, self.rank, self.pending = start, rank, None

    def load(self) -> dict | None:
        return self.start

    def save(self, state: dict) -> None:
        if self.rank == 0:
            self.pending = _dump_state(state)  # serialised now: the tensors change in the next epoch

    def take(self) -> bytes | None:
        pending, self.pending = self.pending, None
        return pending


def _worker(loop_config: dict) -> None:
    """One Ray Train worker: the trial's trainable with torch.distributed up (Ray Train set it up)."""
    import ray.train
    import torch  # the workers' process group; not on the driver's path

    from trainables import get_trainable, gpu  # imports torch: not at this module's import

    rank = ray.train.get_context().get_world_rank()
    reports, replies = loop_config["reports"], loop_config["replies"]
    data = ray.get(loop_config["data"])
    start = ray.get(loop_config["start"]) if loop_config["start"] is not None else None
    store = _WorkerCheckpoints(start, rank)
    gpu.cap_memory(loop_config["gpus"])

    def report(metrics: dict) -> None:
        """Worker 0 hands the epoch to Tune; every worker waits for Tune's verdict."""
        verdict = ["continue"]
        if rank == 0:
            reports.put(("report", metrics, store.take()))
            verdict = [replies.get()]
        torch.distributed.broadcast_object_list(verdict, src=0)
        if verdict[0] == "stop":
            raise _Stopped()

    try:
        get_trainable(loop_config["trainable"])(loop_config["config"], data, report, store)
    except _Stopped:
        pass  # ASHA stopped the trial: end the training function normally
    except NOT_RETRIED as error:
        if rank == 0:
            reports.put(("error", type(error).__name__, str(error)))
        raise
    finally:
        gpu.release()


class _Stopped(Exception):
    """Tune stopped the trial (ASHA): the workers end their training function."""
