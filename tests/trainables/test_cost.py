import pytest
import torch
from torch import nn

from trainables.cost import count_parameters, measure_latency_ms
from trainables.models import build_model


def test_parameter_count_is_every_parameter_frozen_ones_included():
    net = build_model("scratch_resnet", num_classes=10, weights="none", conv_blocks=2, base_width=8)
    expected = sum(p.numel() for p in net.parameters())
    next(net.parameters()).requires_grad_(False)
    assert count_parameters(net) == expected
    assert count_parameters(nn.Linear(3, 2)) == 8


def test_latency_is_a_positive_median_and_leaves_the_model_in_eval_mode():
    net = build_model("scratch_resnet", num_classes=10, weights="none", conv_blocks=1, base_width=8)
    net.train()
    latency = measure_latency_ms(net, torch.zeros(1, 3, 16, 16), runs=5, warmup=1)
    assert 0 < latency < 10_000 and not net.training
    calls = []
    net.register_forward_hook(lambda *args: calls.append(1))
    measure_latency_ms(net, torch.zeros(1, 3, 16, 16), runs=3, warmup=2)
    assert len(calls) == 5


def test_latency_rejects_no_runs():
    with pytest.raises(ValueError, match="runs"):
        measure_latency_ms(nn.Linear(2, 2), torch.zeros(1, 2), runs=0)
