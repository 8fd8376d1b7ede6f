"""The style loss: Gram matrices in either memory layout, and the relative form's scale invariance."""

from __future__ import annotations

import pytest
import torch

from trainer.losses import (
    StyleLoss,
    block_colours,
    colour_error,
    gram_matrix,
    out_of_range,
    painting_quantiles,
    recolour,
    shifted_pair,
    tone_error,
)
from trainer.lossnets import LOSS_NETWORKS, LossNetwork, vgg16_features


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


def _scaled_vgg(k: float) -> LossNetwork:
    """A random VGG-16 loss network whose every activation is ``k`` times the k=1 network's."""
    torch.manual_seed(0)
    state = vgg16_features(22).state_dict()
    for key in state:
        if key.endswith("bias") or key == "0.weight":  # ReLU networks are positively homogeneous
            state[key] = state[key] * k
    return LossNetwork(LOSS_NETWORKS["vgg16"], state)


def test_relative_loss_form_means_the_same_on_any_loss_networks_scale():
    torch.manual_seed(1)
    style, photo = torch.rand(1, 3, 40, 48), torch.rand(2, 3, 32, 32)
    output = photo + 0.1 * torch.randn_like(photo)
    terms = {}
    for form in ("paper", "relative"):
        for k in (1.0, 10.0):
            loss = StyleLoss(_scaled_vgg(k), style, 1.0, 1.0, 0.0, form)
            terms[form, k] = loss(output, photo)
    # Johnson's form: content grows with k^2 and the Gram term with k^4 (weights must be re-tuned).
    paper1, paper10 = terms["paper", 1.0], terms["paper", 10.0]
    torch.testing.assert_close(paper10["content"], 100 * paper1["content"])
    torch.testing.assert_close(paper10["style"], 1e4 * paper1["style"], rtol=1e-4, atol=0)
    for term in ("content", "style"):
        torch.testing.assert_close(terms["relative", 10.0][term], terms["relative", 1.0][term])


def test_content_layer_can_be_chosen_and_an_unknown_one_is_refused():
    torch.manual_seed(3)
    style, photo = torch.rand(1, 3, 40, 48), torch.rand(1, 3, 32, 32)
    output = photo + 0.1 * torch.randn_like(photo)
    net = _scaled_vgg(1.0)
    default = StyleLoss(net, style, 1.0, 0.0, 0.0, "relative")(output, photo)["content"]
    shallow = StyleLoss(net, style, 1.0, 0.0, 0.0, "relative", "relu1_2")
    features = net(photo, ("relu1_2",))["relu1_2"]
    expected = (net(output, ("relu1_2",))["relu1_2"] - features).pow(2).mean() / features.pow(
        2
    ).mean()
    torch.testing.assert_close(shallow(output, photo)["content"], expected)
    assert not torch.isclose(default, expected)
    with pytest.raises(ValueError, match="no layer 'block3'"):
        StyleLoss(net, style, 1.0, 1.0, 0.0, "relative", "block3")


def test_tone_term_keeps_brightness_and_leaves_colour_free():
    torch.manual_seed(4)
    photo = torch.rand(2, 3, 32, 32) * 0.5
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    # The same brightness in another hue (each pixel's luma kept): no tone error.
    recoloured = photo.mean(1, keepdim=True).expand(-1, 3, -1, -1).clone()
    shift = torch.tensor([0.05, -0.02, 0.0]).view(1, 3, 1, 1)
    recoloured = recoloured + shift - (shift * luma).sum(1, keepdim=True)
    recoloured = recoloured + ((photo - recoloured) * luma).sum(1, keepdim=True)
    assert tone_error(recoloured, photo) < 1e-6
    # A dark corner painted bright (a blotch): a clear error, growing with its size.
    small, large = photo.clone(), photo.clone()
    small[..., :8, :8], large[..., :16, :16] = 0.9, 0.9
    assert 0.1 < tone_error(small, photo) < tone_error(large, photo)
    # As a StyleLoss term it is reported and weighted.
    loss = StyleLoss(
        _scaled_vgg(1.0), torch.rand(1, 3, 32, 32), 1.0, 1.0, 0.0, "relative", None, 2.0
    )
    terms = loss(small, photo)
    torch.testing.assert_close(terms["tone"], 2 * tone_error(small, photo))
    assert "tone" in loss.terms


def test_range_term_pulls_only_out_of_range_pixels_back_into_range():
    torch.manual_seed(5)
    photo = torch.rand(2, 3, 32, 32)
    assert out_of_range(photo) == 0  # any image users can see costs nothing
    blotch = photo.clone()
    blotch[:, 1, :8, :8] = 10.0  # a region far above white, as a 20-minute model painted
    blotch[:, 2, :8, :8] = -20.0
    blotch.requires_grad_(True)
    loss = StyleLoss(_scaled_vgg(1.0), torch.rand(1, 3, 32, 32), 1.0, 0.0, 0.0, "relative",
                     None, 0.0, 3.0)  # fmt: skip
    terms = loss(blotch, photo)
    assert "range" in loss.terms
    torch.testing.assert_close(terms["range"], 3 * out_of_range(blotch))
    terms["range"].backward()
    grad = blotch.grad
    assert (grad[:, 1, :8, :8] > 0).all() and (grad[:, 2, :8, :8] < 0).all()  # descent: back in
    inside = torch.ones_like(grad, dtype=torch.bool)
    inside[:, 1:, :8, :8] = False
    assert (grad[inside] == 0).all()


def test_colour_guide_moves_the_photo_onto_the_painting_colours_and_leaves_strokes_free():
    torch.manual_seed(7)
    # A photo: a light-to-dark ramp in warm colours over a flat red square. A "painting": 3 parts
    # cream to 1 part Prussian blue, as the Great Wave.
    ramp = torch.linspace(0.2, 0.8, 64).view(1, 1, 1, 64).expand(1, 1, 64, 64)
    photo = torch.cat([ramp, 0.8 * ramp, 0.5 * ramp], 1).clone()
    photo[:, :, 8:24, 8:24] = torch.tensor([0.8, 0.1, 0.1]).view(1, 3, 1, 1)
    cream, blue = torch.tensor([0.93, 0.88, 0.74]), torch.tensor([0.10, 0.22, 0.42])
    painting = torch.cat([cream.expand(3000, 3), blue.expand(1000, 3)])
    painting = painting + 0.02 * torch.randn_like(painting)
    colours = block_colours(photo)  # 8x8 blocks: 1 x 64 x 3
    assert colours.shape == (1, 64, 3)
    guide = recolour(colours, painting_quantiles(painting))[0]
    near_blue = (guide - blue).norm(dim=1) < 0.1
    near_cream = (guide - cream).norm(dim=1) < 0.1
    assert near_blue.sum() + near_cream.sum() >= 60  # the painting's colours, not the photo's
    assert 12 <= near_blue.sum() <= 20  # in the painting's share
    grid = guide.T.reshape(3, 8, 8)
    assert (grid[:, 1:3, 1:3] == grid[:, 1:2, 1:2]).all()  # a flat region stays one colour
    luma = grid.mean(0)
    assert luma[4:, -1].mean() > luma[4:, 0].mean()  # the photo's light side stays the light side
    # The term compares block colours: strokes inside the blocks cost nothing.
    strokes = photo + 0.1 * torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(32, 32)
    assert colour_error(strokes, colours) < 1e-10 < 0.01 < colour_error(photo, guide[None])
    # In the style loss: the photo's guide against the painting's own block colours.
    painting_image = painting.T.reshape(1, 3, 40, 100)
    loss = StyleLoss(_scaled_vgg(1.0), painting_image, 1.0, 0.0, 0.0, "relative", None,
                     colour_weight=5.0)  # fmt: skip
    wanted = recolour(colours, painting_quantiles(block_colours(painting_image)[0]))
    assert "colour" in loss.terms
    torch.testing.assert_close(loss(photo, photo)["colour"], 5 * colour_error(photo, wanted))


def test_shifted_sr_loss_sees_every_pixel_phase_and_repeats_under_a_seed():
    target = torch.arange(2 * 3 * 12 * 16, dtype=torch.float32).reshape(2, 3, 12, 16)
    output = target + 0.5
    phases = set()
    torch.manual_seed(0)
    for _ in range(200):
        a, b = shifted_pair(output, target, 4)
        assert a.shape == b.shape == (2, 3, 8, 12) and torch.equal(a - b, torch.full_like(a, 0.5))
        phases.add(int(b[0, 0, 0, 0]) // 16 * 100 + int(b[0, 0, 0, 0]) % 16)  # (row, column)
    assert phases == {100 * y + x for y in range(4) for x in range(4)}
    torch.manual_seed(0)
    again = shifted_pair(output, target, 4)[1]
    torch.manual_seed(0)
    assert torch.equal(shifted_pair(output, target, 4)[1], again)  # torch's RNG: resumable
