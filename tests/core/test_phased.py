"""The phased form of few-channel convolutions computes exactly what the network computes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.networks import build_network
from core.phased import PhasedConv2d, phased


@pytest.mark.parametrize("size", [(1, 1), (5, 7), (16, 16), (37, 50)])
def test_a_phased_convolution_equals_the_convolution_at_any_size(size):
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(16, 3, 9))
    x = torch.randn(1, 16, size[0] + 8, size[1] + 8)
    with torch.no_grad():
        expected, result = conv(x), phased(conv)(x)
    assert result.shape == expected.shape == (1, 3, *size)
    assert torch.allclose(result, expected, atol=1e-5)


@pytest.mark.parametrize(
    "arch, options, shape",
    [("style", {"width": "compact"}, (1, 3, 45, 62)), ("sr", {}, (1, 3, 19, 23))],
)
def test_phased_networks_give_the_same_output_and_leave_the_original_alone(arch, options, shape):
    torch.manual_seed(0)
    net = build_network(arch, **options).eval()
    fast = phased(net)
    assert any(isinstance(m, PhasedConv2d) for m in fast.modules())
    assert not any(isinstance(m, PhasedConv2d) for m in net.modules())
    x = torch.rand(shape)
    with torch.no_grad():
        assert torch.allclose(fast(x), net(x), atol=1e-5)


def test_training_in_phases_gives_the_same_gradients_to_the_same_parameters():
    torch.manual_seed(0)
    net = nn.Sequential(nn.ReflectionPad2d(4), nn.Conv2d(8, 3, 9))
    x = torch.randn(2, 8, 30, 27)
    net(x).square().sum().backward()
    expected = [p.grad.clone() for p in net.parameters()]
    params, keys = list(net.parameters()), list(net.state_dict())
    net.zero_grad()
    phased(net, inplace=True)
    assert isinstance(net[1], PhasedConv2d)
    # The optimizer's parameters and the saved keys do not change.
    assert all(a is b for a, b in zip(net.parameters(), params, strict=True))
    assert list(net.state_dict()) == keys
    net(x).square().sum().backward()
    for p, grad in zip(net.parameters(), expected, strict=True):
        assert torch.allclose(p.grad, grad, rtol=1e-4, atol=1e-3)
