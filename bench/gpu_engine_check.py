"""GPU check of the engine: CUDA output vs CPU PyTorch fp32, and s/MP vs eager fp32 whole-image.

Run on a CUDA machine from the repo root: python bench/gpu_engine_check.py (BENCHMARKS.md, H200).
"""

import sys
import time

import numpy as np
import torch

sys.path.insert(0, ".")
from bench.bench_engine import psnr
from core.engine import Engine
from core.modelfile import load_model

rng = np.random.default_rng(0)


def photo(h, w):
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack(
        [
            127 + 100 * np.sin(x / 37) * np.cos(y / 53),
            127 + 90 * np.cos((x + y) / 71),
            60 + 150 * x / w,
        ],
        -1,
    )
    return np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)


cpu = Engine(device="cpu", backend="torch", precision="fp32")
gpu = Engine(device="cuda")
print("gpu engine", gpu.device, gpu.backend, gpu.precision, gpu.tile_size)
for m in ["weights/starry-night.impasto", "weights/starry-night-full.impasto"]:
    img = photo(512, 512)
    a = cpu.stylize(m, img)
    b = gpu.stylize(m, img)
    print(m, f"cuda vs cpu fp32 PSNR {psnr(a, b):.1f} dB")
    net, _ = load_model(m)
    net = net.cuda()
    for side in (512, 1024, 2048, 4096):
        img = photo(side, side)
        mp = side * side / 1e6
        gpu.stylize(m, img)
        torch.cuda.synchronize()
        t = time.perf_counter()
        gpu.stylize(m, img)
        torch.cuda.synchronize()
        te = time.perf_counter() - t
        try:
            x = torch.from_numpy(img).permute(2, 0, 1)[None].float().cuda() / 255
            torch.cuda.reset_peak_memory_stats()
            with torch.no_grad():
                net(x)
                torch.cuda.synchronize()
                t = time.perf_counter()
                y = net(x)
                y.clamp(0, 1).mul(255).byte().cpu()
                torch.cuda.synchronize()
            tb = time.perf_counter() - t
            mem = torch.cuda.max_memory_allocated() / 2**30
            print(
                f"  {side}px {mp:.2f}MP engine {te / mp:.4f} s/MP eager-fp32 {tb / mp:.4f} s/MP ratio {tb / te:.2f}x eager peak {mem:.1f} GiB"
            )
        except torch.OutOfMemoryError:
            print(f"  {side}px engine {te / mp:.4f} s/MP eager OOM")
img = photo(256, 256)
a = cpu.upscale("weights/sr-faithful.impasto", img)
b = gpu.upscale("weights/sr-faithful.impasto", img)
print(f"sr cuda vs cpu PSNR {psnr(a, b):.1f} dB", b.shape)
