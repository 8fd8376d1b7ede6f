"""Gatys-style optimisation (the slow baseline the paper compares against), on our loss networks."""

from __future__ import annotations

import time

import torch

from trainer.losses import StyleLoss


def optimise(
    loss_fn: StyleLoss, photo: torch.Tensor, checkpoints: list[int], init: str = "photo"
) -> dict[int, tuple[float, float, torch.Tensor]]:
    """Minimise the perceptual objective for ``photo`` over an image's pixels with L-BFGS (Gatys et al.).

    ``init``: start from the photo, or from white noise (as jcjohnson/neural-style's default). Returns
    {iteration: (objective, seconds, image)} at each checkpoint, one iteration per evaluation.
    """
    generator = torch.Generator().manual_seed(0)
    start_image = photo if init == "photo" else torch.rand(photo.shape, generator=generator)
    image = start_image.detach().contiguous().clone().requires_grad_(True)
    optimiser = torch.optim.LBFGS([image], lr=1.0, max_iter=max(checkpoints), history_size=20)
    results: dict[int, tuple[float, float, torch.Tensor]] = {}
    evaluations = 0
    start = time.perf_counter()

    def closure() -> torch.Tensor:
        nonlocal evaluations
        optimiser.zero_grad()
        loss = loss_fn(image, photo)["total"]
        loss.backward()
        evaluations += 1
        if evaluations in checkpoints:
            elapsed = time.perf_counter() - start
            results[evaluations] = (loss.item(), elapsed, image.detach().clamp(0, 1).clone())
        return loss

    optimiser.step(closure)
    # L-BFGS may converge early: later checkpoints keep the last value reached.
    last = results[max(results)] if results else (float(loss_fn(image, photo)["total"]), 0.0, image)
    return {n: results.get(n, last) for n in checkpoints}
