"""Training throughput (images/s): the trainer's step against a plain fp32 eager step.

The baseline is written the way pytorch/examples' fast_neural_style trains: fp32, default memory
layout, loss-network features of the input computed with autograd. The trainer's step
(trainer.loop.training_step with StyleLoss) computes content targets under no_grad and only up to
the content layer, folds MobileNetV2's batch norms, runs the loss network in channels_last and
(on CPUs) the 3-channel output layer in phases (trainer.loop.for_training), and optionally bf16
autocast / torch.compile. Both run in this process, on the
same random batch, alternating, so machine load affects them alike.

    .venv/bin/python bench/bench_trainer.py [--sizes 256 128] [--steps 4] [--threads N] [--compile]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.networks import StyleNet  # noqa: E402
from trainer.loop import cpu_has_bf16, for_training, memory_format_for, training_step  # noqa: E402
from trainer.losses import StyleLoss, gram_matrix  # noqa: E402
from trainer.lossnets import LOSS_NETWORKS, LossNetwork, load_loss_network  # noqa: E402

BATCH = 4


def plain_step(net, lossnet, optimizer, x, style_grams, spec) -> None:
    """pytorch/examples' step: every forward pass in fp32 with autograd, NCHW layout."""
    y = net(x)
    features_y = lossnet(y)
    features_x = lossnet(x)
    content = 1e5 * F.mse_loss(features_y[spec.content_layer], features_x[spec.content_layer])
    style = 0.0
    for name, gram_s in zip(spec.style_layers, style_grams, strict=True):
        style = style + F.mse_loss(gram_matrix(features_y[name]), gram_s.expand(len(x), -1, -1))
    loss = content + 1e10 * style
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def lossnet_for(name: str, fast: bool = True) -> LossNetwork:
    """MobileNetV2 with its real weights; VGG-16 with random weights (speed is the same)."""
    if name == "mobilenet_v2":
        return load_loss_network(name, fast=fast)
    torch.manual_seed(0)
    return LossNetwork(LOSS_NETWORKS[name], fast=fast)


def variants(name: str, size: int, use_compile: bool):
    """(label, step function) pairs, each with its own network and optimizer."""
    spec = LOSS_NETWORKS[name]
    x = torch.rand(BATCH, 3, size, size)
    style = torch.rand(1, 3, size, size)

    def baseline():
        torch.manual_seed(0)
        net, lossnet = StyleNet(), lossnet_for(name, fast=False)  # torchvision's layers
        optimizer = torch.optim.Adam(net.parameters(), 1e-3)
        with torch.no_grad():
            feats = lossnet(style)
            grams = [gram_matrix(feats[n]) for n in spec.style_layers]
        return lambda: plain_step(net, lossnet, optimizer, x, grams, spec)

    def trainer(amp: bool, compiled: bool):
        torch.manual_seed(0)
        layout = memory_format_for(x.device)
        net = for_training(StyleNet(), x.device)
        loss = StyleLoss(lossnet_for(name), style, 1e5, 1e10, 0.0)
        optimizer = torch.optim.Adam(net.parameters(), 1e-3)
        model, loss_fn = (torch.compile(net), torch.compile(loss)) if compiled else (net, loss)
        xc = x.contiguous(memory_format=layout)
        return lambda: training_step(model, loss_fn, optimizer, xc, xc, amp)

    found = [("plain fp32 eager", baseline()), ("trainer fp32", trainer(False, False))]
    found.append(("trainer bf16", trainer(True, False)))
    if use_compile:
        found.append(("trainer fp32+compile", trainer(False, True)))
        if cpu_has_bf16():  # emulated bf16 is slower here; compiling it would not change that
            found.append(("trainer bf16+compile", trainer(True, True)))
    return found


def measure(steps: list, rounds: int) -> list[float]:
    """Median images/s of each step function, timed in alternating rounds after one warm-up."""
    for step in steps:
        step()  # warm-up (and compilation)
    times: list[list[float]] = [[] for _ in steps]
    for _ in range(rounds):
        for i, step in enumerate(steps):
            start = time.perf_counter()
            step()
            times[i].append(time.perf_counter() - start)
    return [BATCH / statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 128])
    parser.add_argument("--networks", nargs="+", default=["vgg16", "mobilenet_v2"])
    parser.add_argument("--steps", type=int, default=4, help="timed steps per variant")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--threads", type=int, help="CPU threads (default: PyTorch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {BATCH}")
    print("| loss network | size | step | images/s | vs plain |")
    print("|---|---|---|---|---|")
    for name in args.networks:
        for size in args.sizes:
            labelled = variants(name, size, args.compile)
            rates = measure([step for _, step in labelled], args.steps)
            for (label, _), rate in zip(labelled, rates, strict=True):
                print(f"| {name} | {size} | {label} | {rate:.2f} | {rate / rates[0]:.2f}x |")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
