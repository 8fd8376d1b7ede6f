"""Image quality metrics as the SR literature computes them: PSNR and SSIM on the Y channel."""

from __future__ import annotations

import numpy as np


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma in [16, 235] from uint8 RGB, as MATLAB's rgb2ycbcr (the convention of SR papers)."""
    rgb = image.astype(np.float64) / 255.0
    return 16.0 + 65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]


def _crop(y: np.ndarray, border: int) -> np.ndarray:
    return y[border:-border, border:-border] if border else y


def psnr_y(result: np.ndarray, truth: np.ndarray, border: int = 4) -> float:
    """PSNR in dB of the Y channel with ``border`` pixels removed on each side."""
    a, b = _crop(rgb_to_y(result), border), _crop(rgb_to_y(truth), border)
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def _gaussian_filter(x: np.ndarray, sigma: float = 1.5, size: int = 11) -> np.ndarray:
    """'valid' 2-D Gaussian filtering, separable, as in Wang et al.'s reference SSIM."""
    t = np.arange(size) - size // 2
    g = np.exp(-(t**2) / (2 * sigma**2))
    g /= g.sum()
    h, w = x.shape[0] - size + 1, x.shape[1] - size + 1
    rows = sum(g[i] * x[:, i : i + w] for i in range(size))
    return sum(g[i] * rows[i : i + h] for i in range(size))


def ssim_y(result: np.ndarray, truth: np.ndarray, border: int = 4) -> float:
    """SSIM (Wang et al., 2004; 11x11 Gaussian window, sigma 1.5) of the Y channel."""
    a, b = _crop(rgb_to_y(result), border), _crop(rgb_to_y(truth), border)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = _gaussian_filter(a), _gaussian_filter(b)
    var_a = _gaussian_filter(a * a) - mu_a**2
    var_b = _gaussian_filter(b * b) - mu_b**2
    cov = _gaussian_filter(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return float(ssim_map.mean())
