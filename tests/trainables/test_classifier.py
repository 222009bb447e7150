import numpy as np
import pytest
import torch

from tests.memory_limit import MemoryLimit
from trainables.classifier import TrialConfig, train_classifier

SMALL = {"model": "scratch_resnet", "conv_blocks": 2, "base_width": 16, "batch_size": 32, "lr": 3e-3, "max_epochs": 3}


class MemoryCheckpoints:
    """The Checkpoints protocol kept in a list, as a test double for Ray's checkpoint store."""

    def __init__(self, resume_from: dict | None = None):
        self.saved: list[dict] = []
        self.resume_from = resume_from

    def load(self):
        return self.resume_from

    def save(self, state):
        import copy

        self.saved.append(copy.deepcopy(state))


def test_reports_once_per_epoch_with_every_metric(small_trial_data):
    reports = []
    train_classifier(SMALL, small_trial_data, reports.append)
    assert [r["epoch"] for r in reports] == [1, 2, 3]
    for key in ("train_loss", "val_loss", "val_acc", "lr", "epoch_time_s", "train_time_s"):
        assert all(key in r for r in reports)
    assert reports[-1]["val_acc"] > 0.6  # it learns: chance is 0.1


def test_same_config_same_metrics(small_trial_data):
    first, second = [], []
    train_classifier(SMALL | {"max_epochs": 2}, small_trial_data, first.append)
    train_classifier(SMALL | {"max_epochs": 2}, small_trial_data, second.append)
    assert [(r["val_loss"], r["val_acc"]) for r in first] == [(r["val_loss"], r["val_acc"]) for r in second]


def test_resuming_from_a_checkpoint_continues_the_same_run(small_trial_data):
    config = SMALL | {"dropout": 0.3, "lr_schedule": "cosine"}
    straight, store = [], MemoryCheckpoints()
    train_classifier(config, small_trial_data, straight.append, store)
    assert [s["epoch"] for s in store.saved] == [1, 2, 3]
    resumed = []
    train_classifier(config, small_trial_data, resumed.append, MemoryCheckpoints(resume_from=store.saved[0]))
    assert [r["epoch"] for r in resumed] == [2, 3]
    for a, b in zip(straight[1:], resumed):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
        assert a["lr"] == b["lr"]


def test_offline_imagenet_features_beat_random_ones_head_only():
    # Transfer learning is real offline: with the backbone frozen, one epoch of the head on
    # pretrained features already separates digits; on random features it barely starts.
    from trainables.data import load_dataset
    from trainables.split import split_indices, trial_data

    images = load_dataset("digits", 32)
    data = trial_data(images, split_indices(images.labels, 0.2, 0.2, seed=0, data_fraction=0.35))
    config = {"model": "tf_efficientnet_lite0", "frozen_fraction": 1.0, "max_epochs": 1, "lr": 1e-2, "batch_size": 32, "threads": 2}
    accuracy = {}
    for weights in ("offline", "none"):
        reports = []
        train_classifier(config | {"weights": weights}, data, reports.append)
        accuracy[weights] = reports[-1]["val_acc"]
    assert accuracy["offline"] > 0.5 and accuracy["offline"] > accuracy["none"] + 0.2, accuracy


@pytest.mark.parametrize(
    "values, message",
    [
        ({"optimizer": "adma"}, r"`optimizer` is 'adma'.*did you mean 'adam'"),
        ({"learning_rate": 0.1}, r"unknown trial parameter 'learning_rate'"),
        ({"lr": -1.0}, r"`lr` is -1.0, but must be a finite number > 0"),
        ({"frozen_fraction": 1.5}, r"frozen_fraction"),
        ({"batch_size": "big"}, r"'batch_size' is 'big', but must be int"),
    ],
)
def test_bad_trial_config_says_what_and_why(values, message):
    with pytest.raises((ValueError, TypeError), match=message):
        TrialConfig.from_mapping(values)


def test_config_numbers_are_converted():
    config = TrialConfig.from_mapping({"lr": 1, "batch_size": 64.0, "nesterov": 1})
    assert config.lr == 1.0 and isinstance(config.lr, float)
    assert config.batch_size == 64 and config.nesterov is True


# --- out of memory: micro-batches with gradient accumulation, then "infeasible" -----------------


def test_out_of_memory_halves_the_micro_batch_and_keeps_training(small_trial_data):
    reports, store = [], MemoryCheckpoints()
    with MemoryLimit(images=10) as limit:
        train_classifier(SMALL | {"max_epochs": 2}, small_trial_data, reports.append, store)
    assert [r["micro_batch"] for r in reports] == [8, 8]  # 32 -> 16 -> 8 fits under 10
    assert 8 <= limit.largest_ok <= 9  # 9: a trailing single image joined the last micro-batch
    assert [s["micro_batch"] for s in store.saved] == [8, 8]  # a resumed trial starts at 8
    assert reports[-1]["val_acc"] > 0.5  # still learns
    unlimited = []
    train_classifier(SMALL | {"max_epochs": 1}, small_trial_data, unlimited.append)
    assert unlimited[0]["micro_batch"] == 32


def test_out_of_memory_at_the_smallest_micro_batch_is_infeasible(small_trial_data):
    from trainables.contract import NOT_RETRIED, TrialInfeasible

    with MemoryLimit(images=1), pytest.raises(TrialInfeasible, match=r"^infeasible: out of memory at micro-batch 2 \(batch size 32\)"):
        train_classifier(SMALL, small_trial_data, [].append)
    assert issubclass(TrialInfeasible, NOT_RETRIED)


def test_micro_batches_accumulate_the_full_batch_gradient():
    # Without BatchNorm, gradient accumulation over micro-batches is the full batch's gradient.
    import torch

    from trainables.classifier.numerics import Normalizer, Precision
    from trainables.classifier.step import Step

    torch.manual_seed(0)
    images = torch.randint(0, 256, (13, 3, 4, 4), dtype=torch.uint8)
    labels = torch.randint(0, 10, (13,))
    grads = {}
    for micro in (13, 4, 2):
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 10))
        torch.nn.init.constant_(net[1].weight, 0.01)
        torch.nn.init.constant_(net[1].bias, 0.0)
        optimizer = torch.optim.SGD(net.parameters(), lr=0.0)  # lr 0: the step leaves the weights
        step = Step(net, optimizer, torch.nn.CrossEntropyLoss(), Normalizer((0.5,) * 3, (0.5,) * 3, "cpu"), Precision(torch.device("cpu")), micro)
        loss, _ = step(images, labels)
        grads[micro] = (net[1].weight.grad.clone(), loss)
    for micro in (4, 2):
        assert torch.allclose(grads[micro][0], grads[13][0], atol=1e-6)
        assert grads[micro][1] == pytest.approx(grads[13][1], rel=1e-5)


@pytest.mark.parametrize(
    "batch, micro, sizes",
    [(32, 32, [32]), (32, 8, [8, 8, 8, 8]), (13, 4, [4, 4, 5]), (14, 4, [4, 4, 4, 2]), (3, 2, [3])],
)
def test_micro_batches_cover_the_batch_without_single_images(batch, micro, sizes):
    from trainables.classifier.step import micro_batches

    slices = micro_batches(batch, micro)
    assert [s.stop - s.start for s in slices] == sizes
    assert slices[0].start == 0 and slices[-1].stop == batch


def test_micro_batch_halves_down_to_the_floor():
    from trainables.classifier.step import MIN_MICRO_BATCH, next_micro_batch

    assert MIN_MICRO_BATCH == 2
    assert [next_micro_batch(m) for m in (128, 5, 4, 3, 2)] == [64, 2, 2, None, None]


# --- GPUs: precision and packing, the parts that are plain arithmetic -----------------------------


@pytest.mark.parametrize(
    "device, capability, precision",
    [
        ("cuda", (9, 0), "bf16"),  # H100
        ("cuda", (8, 0), "bf16"),  # A100: the first with native bf16
        ("cuda", (8, 6), "bf16"),  # A10, RTX 30xx
        ("cuda", (7, 5), "fp16"),  # T4: torch calls bf16 "supported", but emulates it
        ("cuda", (7, 0), "fp16"),  # V100
        ("cpu", None, "fp32"),
    ],
)
def test_bf16_only_where_it_is_native_else_fp16_and_float32_on_the_cpu(device, capability, precision):
    import torch

    from trainables.classifier.numerics import Precision, autocast_dtype
    from trainables.gpu import precision_for

    assert precision_for(device, capability) == precision
    assert autocast_dtype(precision) is {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]
    if device == "cpu":
        assert Precision(torch.device("cpu")).name == "fp32"
        assert Precision(torch.device("cpu")).scaler is None
        assert Precision(torch.device("cpu"), "fp16").scaler is not None  # fp16 always scales
    with pytest.raises(ValueError, match="compute capability"):
        precision_for("cuda", None)


@pytest.mark.parametrize(
    "peak_gib, gpu_gib, trials",
    [
        (1.0, 80.0, 8),  # many would fit; compute, not memory, is then the limit
        (4.0, 80.0, 8),
        (10.0, 80.0, 6),  # 72 GiB usable / (10 + 0.59) GiB
        (20.0, 24.0, 1),
        (30.0, 24.0, 1),  # does not fit alone: one per GPU, micro-batches take over
        (2.0, 16.0, 5),
    ],
)
def test_trials_per_gpu_from_measured_peak_memory(peak_gib, gpu_gib, trials):
    from trainables.gpu import trials_per_gpu

    assert trials_per_gpu(int(peak_gib * 2**30), int(gpu_gib * 2**30)) == trials


def test_trials_per_gpu_rejects_nonsense():
    from trainables.gpu import trials_per_gpu

    with pytest.raises(ValueError, match=r"must be > 0, but got \(0, 100\)"):
        trials_per_gpu(0, 100)
    with pytest.raises(ValueError, match=r"`headroom` is 1.0, but must be 0 <= headroom < 1"):
        trials_per_gpu(10, 100, headroom=1.0)


def test_measuring_step_memory_without_a_gpu_says_so(small_trial_data):
    import torch

    from trainables.classifier import measure_step_memory

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the measurement would run")
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        measure_step_memory(SMALL, small_trial_data)


def test_fit_classifier_replays_the_first_epochs_of_a_trial(small_trial_data):
    # Same seed, same schedule horizon, same data: stopping at epoch 2 gives the weights the trial
    # had after epoch 2, even though the trial went on to epoch 3 (retrain relies on this).
    from trainables.classifier import fit_classifier

    config = SMALL | {"lr_schedule": "cosine", "dropout": 0.2}
    store = MemoryCheckpoints()
    train_classifier(config, small_trial_data, [].append, store)
    epochs = []
    model = fit_classifier(
        config, small_trial_data.train_images, small_trial_data.train_labels, small_trial_data.classes, epochs=2, report=epochs.append
    )
    assert [e["epoch"] for e in epochs] == [1, 2]
    trial_weights = store.saved[1]["model"]
    for name, tensor in model.net.state_dict().items():
        assert torch.equal(tensor, trial_weights[name]), name
    with pytest.raises(ValueError, match=r"`epochs` is 4, but must be 1 <= epochs <= max_epochs \(= 3\)"):
        fit_classifier(config, small_trial_data.train_images, small_trial_data.train_labels, small_trial_data.classes, epochs=4)


def test_a_saved_state_dict_rebuilds_the_same_classifier(small_trial_data):
    from trainables.classifier import build_classifier, fit_classifier

    data = small_trial_data
    model = fit_classifier(SMALL | {"max_epochs": 1}, data.train_images, data.train_labels, data.classes)
    again = build_classifier(SMALL | {"max_epochs": 1}, data.classes, state_dict=model.net.state_dict())
    probabilities = model.probabilities(data.val_images)
    assert probabilities.shape == (len(data.val_labels), 10) and np.allclose(probabilities.sum(1), 1, atol=1e-5)
    assert np.allclose(again.probabilities(data.val_images), probabilities, atol=1e-6)


def test_a_refit_replays_a_pbt_clones_trial_epoch_for_epoch(small_trial_data):
    # One epoch loop: a PBT clone (its parent's checkpoint after epoch 1, then mutated values) and
    # fit_classifier replaying the same schedule on the same images train identically, bit for bit.
    parent = SMALL | {"dropout": 0.1, "lr_schedule": "cosine", "threads": 1}
    clone = parent | {"lr": 1.5e-3, "dropout": 0.3, "weight_decay": 1e-3, "label_smoothing": 0.05, "hflip": True}
    store = MemoryCheckpoints()
    train_classifier(parent | {"max_epochs": 3}, small_trial_data, [].append, store)
    resumed: list[dict] = []
    train_classifier(clone, small_trial_data, resumed.append, MemoryCheckpoints(resume_from=store.saved[0]))
    from trainables.classifier import fit_classifier

    refit: list[dict] = []
    d = small_trial_data
    fit_classifier(parent, d.train_images, d.train_labels, d.classes, report=refit.append, pbt_schedule=[(2, clone)])
    assert [r["epoch"] for r in resumed] == [2, 3]
    assert [(r["train_loss"], r["train_acc"], r["lr"]) for r in refit[1:]] == [(r["train_loss"], r["train_acc"], r["lr"]) for r in resumed]
