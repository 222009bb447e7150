"""One trial: frozen backbone features, then a classical scikit-learn classifier on them.

``train_features(config, data, report)`` extracts the pooled pre-logits features of a frozen timm
backbone (``forward_features`` then ``forward_head(pre_logits=True)``, eval mode, no gradients)
for the train and validation images, fits logistic regression, a random forest or an SVM on the
train features, and reports ONE result, as epoch 1, with the same ``val_acc``/``val_loss`` as a
classifier trial, so the same leaderboard ranks both kinds.

Extraction is the expensive part and depends only on (backbone, weights, images), never on the
classifier's hyperparameters, so each array's features are cached on disk under a key hashed from
those (``FeatureConfig.feature_cache``, default ``<system temp dir>/image-search-features``): the
first trial on a node extracts, the others load. Files are ``.npy`` read with
``allow_pickle=False`` and written atomically (temporary file, then rename); a lock file makes a
second trial wait for the first one's extraction instead of repeating it.

The fitted estimator is never saved: scikit-learn models persist only through pickle, which this
project refuses to load (a crafted pickle runs code). Fitting is deterministic given the seed, so
``analysis.predict`` refits the retrained model from the run directory instead.

    python -m search run spaces/features.py
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from trainables.configs import config_from_mapping
from trainables.contract import TrialData
from trainables.metrics import balanced_accuracy, log_loss
from trainables.names import did_you_mean

__all__ = [
    "CLASSIFIERS",
    "FeatureClassifier",
    "FeatureConfig",
    "KERNELS",
    "extract_features",
    "feature_cache_key",
    "fit_feature_classifier",
    "load_features",
    "refit_features",
    "train_features",
]

CLASSIFIERS = ("logistic_regression", "random_forest", "svm")
KERNELS = ("rbf", "linear")
# Training images whose refit probabilities load_features checks against the stored ones.
FIT_CHECK_IMAGES = 8
# Bump when the extraction changes, so that old cache files are not read as new ones.
_CACHE_VERSION = 1
_HASH_IMAGES = 1024  # images hashed at a time by feature_cache_key


@dataclass(frozen=True)
class FeatureConfig:
    """Everything one features trial depends on. A space may set any of these."""

    model: str = "tf_efficientnet_lite0"  # timm backbone name (not scratch_resnet)
    weights: str = "offline"  # none | imagenet | offline | checkpoint path
    classifier: str = "logistic_regression"  # one of CLASSIFIERS
    C: float = 1.0  # logistic_regression and svm: inverse regularisation strength
    max_iter: int = 1000  # logistic_regression: lbfgs iterations at most
    n_estimators: int = 200  # random_forest: trees
    max_depth: int = 0  # random_forest: depth limit of each tree; 0 = grow until pure
    kernel: str = "rbf"  # svm: one of KERNELS
    # svm, rbf kernel: width as a multiple of scikit-learn's "scale", 1 / (feature_dim * variance
    # of the features), so one range suits standardised and raw features alike.
    gamma: float = 1.0
    standardize: bool = True  # scale every feature to zero mean, unit variance (fitted on train)
    feature_batch: int = 256  # images per forward pass while extracting (memory only, not results)
    feature_cache: str = ""  # directory of cached features; "" = <system temp dir>/image-search-features
    max_epochs: int = 1  # accepted because every trial gets it; a features trial reports once, as epoch 1
    seed: int = 0  # random_forest's trees (logistic_regression and svm are deterministic)
    threads: int = 1  # torch threads while extracting, scikit-learn's threads while fitting

    def __post_init__(self) -> None:
        from trainables.models import SCRATCH_MODEL  # imports torch: not at this module's import

        for field, value, choices in (("classifier", self.classifier, CLASSIFIERS), ("kernel", self.kernel, KERNELS)):
            if value not in choices:
                raise ValueError(
                    f"`{field}` is {value!r}, but must be one of {list(choices)}" + did_you_mean(value, choices)
                )
        if self.model == SCRATCH_MODEL:
            raise ValueError(
                f"`model` is {SCRATCH_MODEL!r}, but a features trial needs a timm backbone with pretrained "
                "weights (e.g. 'tf_efficientnet_lite0' with weights 'offline')"
            )
        rules = [
            (self.C > 0 and math.isfinite(self.C), "C", "a finite number > 0"),
            (self.max_iter >= 1, "max_iter", "an integer >= 1"),
            (self.n_estimators >= 1, "n_estimators", "an integer >= 1"),
            (self.max_depth >= 0, "max_depth", "an integer >= 0 (0: unlimited)"),
            (self.gamma > 0 and math.isfinite(self.gamma), "gamma", "a finite number > 0 (a multiple of 'scale')"),
            (self.feature_batch >= 1, "feature_batch", "an integer >= 1"),
            (
                self.max_epochs == 1,
                "max_epochs",
                "1: a features trial fits once and reports one result (set MAX_EPOCHS = 1 or --max-epochs 1)",
            ),
            (self.threads >= 1, "threads", "an integer >= 1"),
        ]
        for ok, name, rule in rules:
            if not ok:
                raise ValueError(f"The value of `{name}` is {getattr(self, name)!r}, but must be {rule}.")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "FeatureConfig":
        """Build from a trial's config, rejecting unknown keys and converting numbers."""
        return config_from_mapping(cls, values, "features trial parameter")


def train_features(
    config: Mapping[str, Any],
    data: TrialData,
    report: Callable[[dict], Any],
    checkpoints: Any = None,  # unused: one short step, nothing to resume from
) -> None:
    """Extract (or load cached) features, fit the classifier on train, report validation once."""

    cfg = FeatureConfig.from_mapping(config)
    started = time.perf_counter()
    model = fit_feature_classifier(cfg, data.train_images, data.train_labels, data.classes)
    val = model.probabilities(data.val_images)
    train_predictions = model.last_train_probabilities.argmax(1)
    predictions = val.argmax(1)
    report(
        {
            "epoch": 1,
            "val_acc": float((predictions == data.val_labels).mean()),
            "val_loss": log_loss(val, data.val_labels),
            "val_balanced_acc": balanced_accuracy(data.val_labels, predictions),
            "train_acc": float((train_predictions == data.train_labels).mean()),
            "train_time_s": time.perf_counter() - started,  # features, fit and validation
            "feature_time_s": model.feature_time_s,  # extracting or loading; near 0 on a cache hit
            "fit_time_s": model.fit_time_s,
            "feature_dim": model.feature_dim,
        }
    )


@dataclass
class FeatureClassifier:
    """A fitted classical classifier over a frozen backbone's features, ready to evaluate."""

    config: FeatureConfig
    classes: tuple[str, ...]
    estimator: Any  # a fitted scikit-learn pipeline (optional scaler, then the classifier)
    feature_dim: int
    feature_time_s: float  # spent on the training images' features (extraction or cache load)
    fit_time_s: float
    last_train_probabilities: np.ndarray  # on the images it was fitted on: train accuracy

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities for (N, 3, S, S) uint8 images, as an (N, classes) float array."""
        features, _ = extract_features(self.config, images)
        return self.probabilities_of_features(features)

    def probabilities_of_features(self, features: np.ndarray) -> np.ndarray:
        with _thread_limit(self.config.threads):
            given = self.estimator.predict_proba(features)
        # Columns follow the classes seen while fitting; a class absent from training gets 0.
        full = np.zeros((len(features), len(self.classes)), dtype=np.float64)
        full[:, self.estimator.classes_] = given
        return full

    def save(self, directory) -> dict:
        """Nothing is written (no pickle): model.json gets the probabilities of the first training
        images, which ``load_features`` checks its refit against."""
        return {"fit_check": self.last_train_probabilities[:FIT_CHECK_IMAGES].tolist()}


def fit_feature_classifier(
    config: FeatureConfig | Mapping[str, Any], images: np.ndarray, labels: np.ndarray, classes: tuple[str, ...]
) -> FeatureClassifier:
    """Fit ``config``'s classifier on the features of ``images``; deterministic for a given seed."""
    cfg = config if isinstance(config, FeatureConfig) else FeatureConfig.from_mapping(config)
    features, feature_time = extract_features(cfg, images)
    began = time.perf_counter()
    labels = np.asarray(labels)
    estimator = _estimator(cfg, features, labels)
    with _thread_limit(cfg.threads):
        estimator.fit(features, labels)
    fit_time = time.perf_counter() - began
    model = FeatureClassifier(
        config=cfg,
        classes=tuple(classes),
        estimator=estimator,
        feature_dim=int(features.shape[1]),
        feature_time_s=feature_time,
        fit_time_s=fit_time,
        last_train_probabilities=np.empty((0, len(classes))),
    )
    model.last_train_probabilities = model.probabilities_of_features(features)
    return model


def refit_features(
    config: Mapping[str, Any], images: np.ndarray, labels: np.ndarray, classes: tuple[str, ...], **_ignored: Any
) -> FeatureClassifier:
    """The retrain's refit (trainables.Trainable.fit): ``fit_feature_classifier``; one fit, so the
    epoch count, per-epoch report and rate or PBT replay of a classifier's refit do not apply."""
    return fit_feature_classifier(config, images, labels, classes)


def load_features(directory, built: Mapping[str, Any], train_data: Callable[[], tuple]) -> FeatureClassifier:
    """A retrained features model, refitted on ``train_data()`` (the run's train + validation images,
    labels and classes; never the test split). The refit must reproduce the probabilities the
    retrain stored for the first training images (``save``), else ValueError says why it cannot be
    trusted."""
    images, labels, classes = train_data()
    if len(labels) != built["train_examples"] or list(classes) != built["classes"]:
        raise ValueError(
            f"{directory}: the run's train + validation data changed since the retrain "
            f"({len(labels)} images now, {built['train_examples']} then): retrain it with --force"
        )
    model = fit_feature_classifier(built["config"], images, labels, tuple(built["classes"]))
    expected = np.asarray(built["fit_check"])
    if not np.allclose(model.last_train_probabilities[: len(expected)], expected, atol=1e-4):
        raise ValueError(
            f"{directory}: refitting the features model does not reproduce the retrained one (its "
            "probabilities on the first training images differ; scikit-learn, timm or torch changed?): "
            "retrain it with --force"
        )
    return model


def _estimator(cfg: FeatureConfig, features: np.ndarray, labels: np.ndarray):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    if cfg.classifier == "logistic_regression":
        classifier = LogisticRegression(C=cfg.C, max_iter=cfg.max_iter)
    elif cfg.classifier == "random_forest":
        classifier = RandomForestClassifier(
            n_estimators=cfg.n_estimators,
            max_depth=cfg.max_depth or None,
            random_state=cfg.seed,
            n_jobs=cfg.threads,
        )
    else:
        # "scale" as scikit-learn computes it, on the features the SVM will see.
        seen = StandardScaler().fit_transform(features) if cfg.standardize else features
        variance = float(seen.var()) or 1.0
        svm = SVC(C=cfg.C, kernel=cfg.kernel, gamma=cfg.gamma / (features.shape[1] * variance))
        # Platt scaling fitted on 5-fold cross-validated decision values, then one SVM on all of
        # the data (scikit-learn's replacement for SVC(probability=True)): val_loss, ensembles and
        # TTA need probabilities. Unshuffled stratified folds: deterministic.
        classifier = CalibratedClassifierCV(svm, method="sigmoid", cv=_folds(features, labels), ensemble=False)
    return make_pipeline(StandardScaler(), classifier) if cfg.standardize else make_pipeline(classifier)


def _folds(features: np.ndarray, labels: np.ndarray) -> int:
    """Cross-validation folds for the SVM's calibration: 5, fewer when the smallest class is smaller."""
    counts = np.bincount(labels)
    smallest = int(counts[counts > 0].min()) if len(labels) else 0
    if smallest < 2:
        raise ValueError(
            f"the svm classifier calibrates its probabilities by cross-validation, and a class has only "
            f"{smallest} training image(s): it needs at least 2 per class (raise data_fraction)"
        )
    return min(5, smallest)


@contextlib.contextmanager
def _thread_limit(threads: int):
    """BLAS/OpenMP threads capped at the trial's CPUs while scikit-learn fits or predicts."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads):
        yield


def feature_cache_key(model: str, weights: str, images: np.ndarray) -> str:
    """Hex digest of what the features of ``images`` depend on: backbone, weights, image bytes."""
    import timm
    import torch

    digest = hashlib.sha256()
    weights_id = weights
    path = Path(weights).expanduser()
    if weights not in ("none", "imagenet", "offline") and path.is_file():
        stat = path.stat()  # a checkpoint: its identity is its resolved path, size and mtime
        weights_id = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    shape = tuple(int(n) for n in np.shape(images)) if isinstance(images, np.ndarray) else tuple(images.shape)
    header = f"v{_CACHE_VERSION}|{model}|{weights_id}|{np.dtype(images.dtype)}|{shape}|timm {timm.__version__}|torch {torch.__version__}"
    digest.update(header.encode())
    # The bytes in runs of images (the same digest as of the whole): a view of the data cache
    # (a streamed run's retrain) is hashed without a copy of the set in memory.
    for start in range(0, len(images), _HASH_IMAGES):
        digest.update(memoryview(np.ascontiguousarray(images[start : start + _HASH_IMAGES])).cast("B"))
    return digest.hexdigest()[:32]


def default_cache_dir() -> Path:
    return Path(tempfile.gettempdir()) / "image-search-features"


def extract_features(cfg: FeatureConfig, images: np.ndarray) -> tuple[np.ndarray, float]:
    """(N, D) float32 features of (N, 3, S, S) uint8 ``images`` and the seconds it took.

    Loaded from the cache when an earlier call (any trial on this node, any run) extracted the
    same images with the same backbone; otherwise extracted and stored.
    """
    started = time.perf_counter()
    directory = Path(cfg.feature_cache).expanduser() if cfg.feature_cache else default_cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{feature_cache_key(cfg.model, cfg.weights, images)}.npy"
    with _lock(path.with_suffix(".lock")):
        if path.is_file():
            try:
                return np.load(path, allow_pickle=False), time.perf_counter() - started
            except (OSError, ValueError):
                path.unlink(missing_ok=True)  # unreadable: extract again and replace it
        features = backbone_features(cfg.model, cfg.weights, images, cfg.threads, cfg.feature_batch)
        temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
        np.save(temporary, features, allow_pickle=False)
        os.replace(temporary, path)
    return features, time.perf_counter() - started


@contextlib.contextmanager
def _lock(path: Path):
    """An exclusive lock on ``path`` (POSIX flock) while one process extracts; a no-op elsewhere."""
    try:
        import fcntl
    except ImportError:  # Windows: two trials may extract the same features; the rename keeps it safe
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def backbone_features(model: str, weights: str, images: np.ndarray, threads: int = 1, batch: int = 256) -> np.ndarray:
    """The frozen backbone's pooled pre-logits features of ``images``: (N, D) float32."""
    import torch

    from trainables.gpu import training_device  # imports torch: not at this module's import
    from trainables.models import (  # imports torch: not at this module's import
        build_model,
        input_normalization,
    )

    torch.set_num_threads(threads)
    device = training_device()
    net = build_model(model, num_classes=0, weights=weights).to(device).eval()
    mean, std = input_normalization(net, weights)
    scale = (1.0 / (255.0 * torch.tensor(std, device=device))).view(1, -1, 1, 1)
    shift = (torch.tensor(mean, device=device) / torch.tensor(std, device=device)).view(1, -1, 1, 1)
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            x = torch.as_tensor(np.asarray(images[start : start + batch])).to(device).float() * scale - shift
            out.append(net.forward_head(net.forward_features(x), pre_logits=True).float().cpu())
    features = torch.cat(out).numpy() if out else np.zeros((0, net.num_features), dtype=np.float32)
    return np.ascontiguousarray(features.reshape(len(images), -1), dtype=np.float32)
