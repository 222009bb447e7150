"""GPU decisions that are plain arithmetic, and the out-of-memory paths driven by CUDA's own
exception on the CPU (tests/memory_limit.py): where a GPU is needed, that is said in README."""

import pytest
import torch

from tests.memory_limit import MemoryLimit
from tests.trainables.test_classifier import SMALL
from trainables.classifier import train_classifier


@pytest.mark.parametrize(
    "share, context_mib, total_gib, fraction",
    [
        (0.25, 600, 80, (0.25 * 80 * 1024 - 600) / (80 * 1024)),  # H100: a quarter less the context
        (0.5, 500, 16, (8 * 1024 - 500) / (16 * 1024)),
        (1.0, 600, 80, None),  # a whole GPU: no cap
    ],
)
def test_memory_fraction_is_the_share_less_the_context(share, context_mib, total_gib, fraction):
    from trainables.gpu import memory_fraction

    got = memory_fraction(share, context_mib * 2**20, total_gib * 2**30)
    assert got == (None if fraction is None else pytest.approx(fraction))


def test_memory_fraction_refuses_a_share_smaller_than_the_context():
    from trainables.gpu import memory_fraction

    with pytest.raises(ValueError, match=r"less than the CUDA context of 600 MiB: give each trial more of the GPU"):
        memory_fraction(0.01, 600 * 2**20, 16 * 2**30)
    with pytest.raises(ValueError, match="must be > 0"):
        memory_fraction(0.0, 0, 16 * 2**30)


def test_without_a_gpu_nothing_is_capped_and_release_is_harmless():
    from trainables.gpu import cap_memory, release

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    assert cap_memory(0.25) is None
    release()


def test_every_epoch_records_device_precision_peak_memory_and_workers(small_trial_data):
    reports = []
    train_classifier(SMALL | {"max_epochs": 1}, small_trial_data, reports.append)
    (epoch,) = reports
    assert epoch["device"] == "cpu" and epoch["precision"] == "fp32" and epoch["workers"] == 1
    assert epoch["peak_memory_mb"] > 10  # this process's peak resident memory on the CPU


def test_out_of_memory_in_validation_halves_its_batch_and_changes_nothing(small_trial_data):
    plain, limited = [], []
    config = SMALL | {"max_epochs": 1}
    train_classifier(config, small_trial_data, plain.append)
    # 100 images at most, training and evaluation alike: validation's 512 halves to 64.
    with MemoryLimit(images=100, in_eval=True) as limit:
        train_classifier(config, small_trial_data, limited.append)
    assert 64 <= limit.largest_ok <= 100
    for key in ("val_loss", "val_acc", "val_balanced_acc", "train_loss"):
        assert limited[0][key] == pytest.approx(plain[0][key], rel=1e-5)


def test_out_of_memory_even_at_batch_one_in_evaluation_is_infeasible():
    from trainables.classifier.numerics import Normalizer, predict
    from trainables.contract import TrialInfeasible

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(10))
    images = torch.randint(0, 256, (9, 3, 6, 6), dtype=torch.uint8)
    net(images.float())  # materialise the lazy layer outside the limit
    with MemoryLimit(images=0, in_eval=True), pytest.raises(TrialInfeasible, match="^infeasible: out of memory evaluating one image"):
        predict(net, Normalizer((0.5,) * 3, (0.5,) * 3, "cpu"), images, torch.arange(9), 512, None)


def _linear_step(micro: int, precision_name: str):
    from trainables.classifier.numerics import Normalizer, Precision
    from trainables.classifier.step import Step

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 10))
    optimizer = torch.optim.Adam(net.parameters(), lr=0.1)
    precision = Precision(torch.device("cpu"), precision_name)
    return net, optimizer, precision, Step(net, optimizer, torch.nn.CrossEntropyLoss(), Normalizer((0.5,) * 3, (0.5,) * 3, "cpu"), precision, micro)


@pytest.mark.parametrize("precision_name", ["fp32", "fp16"])
def test_a_retried_step_starts_clean_and_the_optimizer_steps_once(precision_name):
    # The same batch with and without out-of-memory retries (13 -> 6 -> 3 images per micro-batch)
    # leaves the same weights, one optimizer step (Adam's count) and, for fp16, the scaler's scale
    # untouched by the aborted attempts (no unscaled-twice gradients).
    images = torch.randint(0, 256, (13, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    labels = torch.randint(0, 10, (13,), generator=torch.Generator().manual_seed(2))
    net, optimizer, precision, step = _linear_step(13, precision_name)
    step(images, labels)
    plain = [p.detach().clone() for p in net.parameters()]
    net2, optimizer2, precision2, step2 = _linear_step(13, precision_name)
    with MemoryLimit(images=4):
        step2(images, labels)
    assert step2.micro_batch == 3
    for a, b in zip(plain, net2.parameters()):
        assert torch.allclose(a, b, atol=1e-3 if precision_name == "fp16" else 1e-6)
    steps = [state["step"].item() for state in optimizer2.state.values()]
    assert steps and all(s == 1 for s in steps)
    if precision_name == "fp16":
        assert precision2.scaler.get_scale() == precision.scaler.get_scale()


class _StepThatRunsOutOfMemory(torch.optim.SGD):
    """SGD whose update runs out of memory after the first parameter group: a half-done step."""

    calls = 0

    @torch.no_grad()
    def step(self, closure=None):
        type(self).calls += 1
        for parameter in self.param_groups[0]["params"]:
            parameter.add_(-1.0)
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (test: inside the optimizer step)")


def test_out_of_memory_inside_the_optimizer_step_is_infeasible_and_never_stepped_again():
    from trainables.classifier.numerics import Normalizer, Precision
    from trainables.classifier.step import Step
    from trainables.contract import TrialInfeasible

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 10))
    optimizer = _StepThatRunsOutOfMemory([{"params": [net[1].weight]}, {"params": [net[1].bias]}], lr=0.1)
    step = Step(net, optimizer, torch.nn.CrossEntropyLoss(), Normalizer((0.5,) * 3, (0.5,) * 3, "cpu"), Precision(torch.device("cpu")), 8)
    images = torch.randint(0, 256, (8, 3, 4, 4), dtype=torch.uint8)
    with pytest.raises(TrialInfeasible, match=r"^infeasible: out of memory in the optimizer step"):
        step(images, torch.arange(8))
    assert _StepThatRunsOutOfMemory.calls == 1  # never redone on half-stepped weights
