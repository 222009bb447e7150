"""Training options a workflow space searches: schedules, two phases, class weights, balanced
accuracy, per-trial resolution, and that only training batches are augmented."""

import numpy as np
import pytest
import torch

from search.config.settings import Settings
from tests.trainables.test_classifier import MemoryCheckpoints
from trainables.classifier import (
    TrialConfig,
    build_classifier,
    check_against_run,
    fit_classifier,
    train_classifier,
)
from trainables.classifier.loop import train_epoch
from trainables.classifier.model import set_phase
from trainables.classifier.numerics import evaluate
from trainables.classifier.optim import Schedule, build_optimizer, inverse_frequency_weights
from trainables.classifier.step import Step, steps_per_epoch
from trainables.contract import TrialData
from trainables.metrics import balanced_accuracy
from trainables.models import backbone_units, build_model

TINY = {"model": "scratch_resnet", "conv_blocks": 2, "base_width": 8, "batch_size": 32, "lr": 3e-3, "max_epochs": 3}
AUGMENTED = {"hflip": True, "rotation_degrees": 10.0, "crop_scale": 0.7, "color_jitter": 0.3}


@pytest.fixture(scope="module")
def tiny_data(small_trial_data):
    """160 training and 80 validation digits at 16 px: a few milliseconds per epoch."""
    d = small_trial_data
    return TrialData(d.train_images[:160], d.train_labels[:160], d.val_images[:80], d.val_labels[:80], d.classes)


# --- augmentation reaches training batches only ---------------------------------------------


class _Recorder:
    """Stands in for Step inside train_epoch: keeps the batches it is given."""

    def __init__(self):
        self.net, self.batches = torch.nn.Linear(1, 1), []

    def __call__(self, images, labels):
        self.batches.append(images.clone())
        return 0.0, 0


def _batches(config, images, labels, epoch=1):
    recorder = _Recorder()
    train_epoch(recorder, images, labels, TrialConfig(**config), epoch)
    return recorder.batches


def test_training_batches_are_augmented_and_replayed_per_seed_and_epoch(tiny_data):
    images, labels = torch.as_tensor(tiny_data.train_images), torch.as_tensor(tiny_data.train_labels)
    plain, augmented = _batches(TINY, images, labels), _batches(TINY | AUGMENTED, images, labels)
    assert len(plain) == len(augmented) == 5
    assert plain[0].dtype == torch.uint8 and augmented[0].dtype == torch.float32
    assert all(not torch.equal(a, p.float()) for a, p in zip(augmented, plain))
    again = _batches(TINY | AUGMENTED, images, labels)
    assert all(torch.equal(a, b) for a, b in zip(augmented, again))
    other_epoch = _batches(TINY | AUGMENTED, images, labels, epoch=2)
    assert not torch.equal(other_epoch[0], augmented[0])


def test_validation_and_predictions_are_never_augmented(tiny_data):
    # The reported validation metrics are those of the saved weights on the raw validation images.
    config = TINY | AUGMENTED | {"max_epochs": 1}
    reports, store = [], MemoryCheckpoints()
    train_classifier(config, tiny_data, reports.append, store)
    state = store.saved[-1]["model"]
    on = build_classifier(config, tiny_data.classes, state_dict=state)
    off = build_classifier(TINY | {"max_epochs": 1}, tiny_data.classes, state_dict=state)
    val_x, val_y = torch.as_tensor(tiny_data.val_images), torch.as_tensor(tiny_data.val_labels)
    loss, accuracy = evaluate(on.net, on.normalize, val_x, val_y)
    assert (loss, accuracy) == pytest.approx((reports[0]["val_loss"], reports[0]["val_acc"]), rel=1e-5)
    assert np.array_equal(on.probabilities(tiny_data.val_images), off.probabilities(tiny_data.val_images))
    assert np.array_equal(on.probabilities(tiny_data.val_images), on.probabilities(tiny_data.val_images))


# --- learning-rate schedules -----------------------------------------------------------------


def _lrs(kind, epochs=4, steps=3, val_losses=None, **extra):
    cfg = TrialConfig(lr=0.1, max_epochs=epochs, lr_schedule=kind, optimizer="sgd", **extra)
    net = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(net.parameters(), lr=cfg.lr)
    schedule, seen = Schedule(cfg, optimizer, steps), []
    for epoch in range(epochs):
        for _ in range(steps):
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.after_step()
        schedule.after_epoch(val_losses[epoch] if val_losses else 1.0)
    return seen[::steps], seen


def test_constant_and_cosine_schedules_step_per_epoch():
    assert _lrs("constant")[0] == pytest.approx([0.1] * 4)
    assert _lrs("cosine")[0] == pytest.approx([0.1 * (1 + np.cos(np.pi * e / 4)) / 2 for e in range(4)])


def test_plateau_cuts_the_rate_when_validation_loss_stops_falling():
    per_epoch, _ = _lrs("plateau", val_losses=[1.0, 0.9, 0.95, 0.97], plateau_factor=0.5, plateau_patience=1)
    # epoch 3 is the first bad one, epoch 4 the second (> patience): the cut shows in epoch 5
    assert per_epoch == pytest.approx([0.1, 0.1, 0.1, 0.1])
    per_epoch, _ = _lrs("plateau", val_losses=[1.0, 1.1, 1.2, 1.3], plateau_factor=0.5, plateau_patience=0)
    # the first epoch sets the best loss; each worse one after it cuts the next epoch's rate
    assert per_epoch == pytest.approx([0.1, 0.1, 0.05, 0.025])


def test_onecycle_steps_per_optimizer_step_up_to_lr_and_down():
    _, per_step = _lrs("onecycle", epochs=4, steps=5)
    assert len(per_step) == 20
    peak = int(np.argmax(per_step))
    assert per_step[peak] == pytest.approx(0.1, rel=1e-3) and 3 <= peak <= 8  # 30% warm-up
    assert per_step[0] == pytest.approx(0.1 / 25) and per_step[-1] < per_step[0]
    assert np.all(np.diff(per_step[: peak + 1]) > 0) and np.all(np.diff(per_step[peak:]) < 0)


def test_steps_per_epoch_skips_a_last_single_image():
    assert steps_per_epoch(160, 32) == 5 and steps_per_epoch(161, 32) == 5 and steps_per_epoch(162, 32) == 6
    assert steps_per_epoch(10, 64) == 1


@pytest.mark.parametrize(
    "extra",
    [
        {"lr_schedule": "onecycle"},
        {"lr_schedule": "plateau", "plateau_patience": 0, "plateau_factor": 0.3, "lr": 0.05},
        {"head_epochs": 1, "backbone_lr_mult": 0.1, "lr_schedule": "cosine"},
    ],
)
def test_resuming_restores_the_schedule_and_the_phase(tiny_data, extra):
    config = TINY | extra
    straight, store = [], MemoryCheckpoints()
    train_classifier(config, tiny_data, straight.append, store)
    resumed = []
    train_classifier(config, tiny_data, resumed.append, MemoryCheckpoints(resume_from=store.saved[0]))
    assert [r["epoch"] for r in resumed] == [2, 3]
    for a, b in zip(straight[1:], resumed):
        assert a["lr"] == b["lr"] and a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
    if extra["lr_schedule"] == "plateau":
        assert len({r["lr"] for r in straight}) > 1  # the plateau did cut the rate in this run


def test_fit_classifier_replays_the_recorded_rates_of_a_plateau_trial(tiny_data):
    config = TINY | {"lr_schedule": "plateau", "backbone_lr_mult": 0.5}
    reports = []
    model = fit_classifier(config, tiny_data.train_images, tiny_data.train_labels, tiny_data.classes,
                           epochs=3, report=reports.append, lr_per_epoch=[0.01, 0.004, 0.001])  # fmt: skip
    assert [r["lr"] for r in reports] == pytest.approx([0.01, 0.004, 0.001])
    groups = build_optimizer(TrialConfig(**config), model.net).param_groups
    assert groups[-1]["lr"] == pytest.approx(groups[0]["lr"] * 0.5)
    with pytest.raises(ValueError, match=r"`lr_per_epoch` holds 1 rates, but 3 epochs"):
        fit_classifier(config, tiny_data.train_images, tiny_data.train_labels, tiny_data.classes, epochs=3, lr_per_epoch=[0.1])
    unreplayed = []
    fit_classifier(config, tiny_data.train_images, tiny_data.train_labels, tiny_data.classes, epochs=2, report=unreplayed.append)
    assert [r["lr"] for r in unreplayed] == [3e-3, 3e-3]  # no validation: the rate stays at lr


# --- two-phase fine-tuning -------------------------------------------------------------------


def _trainable(net):
    return {n for n, p in net.named_parameters() if p.requires_grad}


def test_two_phases_train_the_head_first_then_the_unfrozen_backbone_at_a_smaller_rate():
    cfg = TrialConfig(model="tf_efficientnet_lite0", frozen_fraction=0.5, head_epochs=2, backbone_lr_mult=0.1, lr=0.01)
    net = build_model(cfg.model, 10, frozen_fraction=cfg.frozen_fraction)
    optimizer = build_optimizer(cfg, net)
    head = {n for n, _ in net.named_parameters()} - {n for unit in backbone_units(net) for n in unit}
    assert head == {"classifier.weight", "classifier.bias"}
    assert set_phase(net, cfg, 1) == 1.0 and _trainable(net) == head
    assert set_phase(net, cfg, 2) == 1.0 and _trainable(net) == head
    assert set_phase(net, cfg, 3) == 0.5
    phase_two = _trainable(net)
    units = backbone_units(net)
    assert phase_two == head | {n for unit in units[len(units) // 2 :] for n in unit}
    # The optimizer holds every phase-two parameter from the start, the backbone at lr * 0.1.
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert in_optimizer == {id(p) for n, p in net.named_parameters() if n in phase_two}
    head_ids = {id(p) for n, p in net.named_parameters() if n in head}
    for group in optimizer.param_groups:
        is_head = all(id(p) in head_ids for p in group["params"])
        assert group["lr"] == pytest.approx(0.01 if is_head else 0.001)
    assert optimizer.param_groups[0]["lr"] == 0.01  # the reported rate is the head's


def test_head_only_epochs_leave_the_backbone_and_its_batchnorm_untouched(tiny_data):
    config = TINY | {"head_epochs": 1, "max_epochs": 2}
    store = MemoryCheckpoints()
    train_classifier(config, tiny_data, [].append, store)
    torch.manual_seed(0)  # as train_classifier seeds before building the network
    start = build_model("scratch_resnet", 10, conv_blocks=2, base_width=8).state_dict()
    after_one, after_two = store.saved[0]["model"], store.saved[1]["model"]
    for name in ("stem.0.weight", "stem.1.running_mean", "blocks.1.body.0.weight"):
        assert torch.equal(after_one[name], start[name]), name
        assert not torch.equal(after_two[name], start[name]), name
    assert not torch.equal(after_one["classifier.weight"], start["classifier.weight"])


# --- class weights and balanced accuracy ----------------------------------------------------


def test_inverse_frequency_weights():
    labels = torch.tensor([0] * 6 + [1] * 3 + [3] * 1)
    weights = inverse_frequency_weights(labels, 4)
    assert weights.tolist() == pytest.approx([10 / (3 * 6), 10 / (3 * 3), 0.0, 10 / 3])
    assert (weights[labels].sum() / len(labels)).item() == pytest.approx(1.0)  # mean weight 1 per image


def test_class_weights_change_the_loss_and_micro_batches_still_add_up():
    from trainables.classifier.numerics import Normalizer, Precision
    from trainables.classifier.optim import loss_fn

    torch.manual_seed(0)
    images = torch.randint(0, 256, (13, 3, 4, 4), dtype=torch.uint8)
    labels = torch.tensor([0] * 9 + [1] * 3 + [2])
    weights = inverse_frequency_weights(labels, 3)
    results = {}
    for weighted in (False, True):
        for micro in (13, 4):
            torch.manual_seed(1)  # the same initial weights for every variant
            net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 3))
            cfg = TrialConfig(class_weights=weighted)
            step = Step(net, torch.optim.SGD(net.parameters(), lr=0.0), loss_fn(cfg, weights if weighted else None),
                         Normalizer((0.5,) * 3, (0.5,) * 3, "cpu"), Precision(torch.device("cpu")), micro)  # fmt: skip
            loss, _ = step(images, labels)
            results[weighted, micro] = (loss, net[1].weight.grad.clone())
    for weighted in (False, True):
        assert results[weighted, 4][0] == pytest.approx(results[weighted, 13][0], rel=1e-5)
        assert torch.allclose(results[weighted, 4][1], results[weighted, 13][1], atol=1e-6)
    assert results[True, 13][0] != pytest.approx(results[False, 13][0], rel=1e-3)
    assert not torch.allclose(results[True, 13][1], results[False, 13][1], atol=1e-4)


def test_balanced_accuracy_is_mean_recall_over_present_classes():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 3])
    predictions = torch.tensor([0, 0, 0, 0, 0, 1, 0])
    assert balanced_accuracy(labels, predictions) == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert balanced_accuracy(labels, labels) == 1.0


def test_every_epoch_reports_balanced_validation_accuracy_and_it_can_be_the_metric(tiny_data):
    reports = []
    train_classifier(TINY | {"class_weights": True, "max_epochs": 1}, tiny_data, reports.append)
    assert 0.0 <= reports[0]["val_balanced_acc"] <= 1.0
    assert Settings(metric="val_balanced_acc").mode == "max"


# --- per-trial resolution and run limits ------------------------------------------------------


def test_a_trial_trains_and_predicts_at_its_own_resolution(tiny_data):
    config = TINY | {"image_size": 8, "max_epochs": 1}
    store = MemoryCheckpoints()
    train_classifier(config, tiny_data, [].append, store)
    model = build_classifier(config, tiny_data.classes, state_dict=store.saved[0]["model"])
    from trainables.augment import resize_images

    small = resize_images(torch.as_tensor(tiny_data.val_images), 8).numpy()
    native = build_classifier(TINY | {"image_size": 0}, tiny_data.classes, state_dict=store.saved[0]["model"])
    assert np.array_equal(model.probabilities(tiny_data.val_images), native.probabilities(small))
    assert not np.array_equal(model.probabilities(tiny_data.val_images), native.probabilities(tiny_data.val_images))
    fitted = fit_classifier(config, tiny_data.train_images, tiny_data.train_labels, tiny_data.classes, epochs=1)
    assert fitted.probabilities(tiny_data.val_images).shape == (80, 10)


def test_trial_limits_against_the_run_name_the_field():
    check_against_run(TrialConfig(max_epochs=4, image_size=16), max_epochs=4, image_size=16)
    with pytest.raises(ValueError, match=r"`max_epochs` is 6, but must be <= the run's max_epochs \(= 4\)"):
        check_against_run(TrialConfig(max_epochs=6), max_epochs=4, image_size=32)
    with pytest.raises(ValueError, match=r"`image_size` is 48, but must be <= the run's image_size \(= 32\)"):
        check_against_run(TrialConfig(image_size=48), max_epochs=4, image_size=32)
    with pytest.raises(ValueError, match=r"`image_size` is 4, but must be 0 \(the run's\) or an integer >= 8"):
        TrialConfig(image_size=4)
    with pytest.raises(ValueError, match=r"`lr_schedule` is 'plateu'.*did you mean 'plateau'"):
        TrialConfig(lr_schedule="plateu")
    with pytest.raises(ValueError, match=r"`backbone_lr_mult` is 0.0"):
        TrialConfig(backbone_lr_mult=0.0)


@pytest.mark.parametrize("model", ["resnet18", "mobilenetv3_small_100", "tf_efficientnet_lite0", "vgg11_bn"])
def test_each_transfer_backbone_has_units_and_a_head(model):
    net = build_model(model, 10, frozen_fraction=1.0)
    units = backbone_units(net)
    assert len(units) >= 5
    classifier = {id(p) for p in net.get_classifier().parameters()}
    trainable = [p for p in net.parameters() if p.requires_grad]
    assert trainable and all(id(p) in classifier for p in trainable)  # head only: the classifier
    assert sum(p.numel() for p in trainable) < 0.05 * sum(p.numel() for p in net.parameters())
