"""The style loss's Gram matrices: the same in either memory layout, gradients included."""

from __future__ import annotations

import torch

from trainer.losses import gram_matrix


def test_gram_matrices_are_the_same_in_either_memory_layout():
    torch.manual_seed(0)
    features = torch.randn(2, 8, 5, 7)
    expected = torch.einsum("bchw,bdhw->bcd", features, features) / (8 * 5 * 7)
    grads = []
    for layout in (torch.contiguous_format, torch.channels_last):
        x = features.contiguous(memory_format=layout).detach().requires_grad_()
        gram = gram_matrix(x)
        torch.testing.assert_close(gram, expected)
        gram.square().sum().backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1])
