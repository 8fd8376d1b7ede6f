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


def srgb_to_lab(image: np.ndarray) -> np.ndarray:
    """CIE L*a*b* (D65) of uint8 sRGB pixels, any leading shape."""
    c = image.astype(np.float64) / 255.0
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = c @ np.array(
        [[0.4124, 0.2126, 0.0193], [0.3576, 0.7152, 0.1192], [0.1805, 0.0722, 0.9505]]
    )
    xyz /= np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1
    )


def palette_distance(image: np.ndarray, painting: np.ndarray, projections: int = 64) -> float:
    """Sliced Wasserstein distance between two images' colour distributions in Lab (lower = closer).

    Each image's pixels (uint8 RGB) are projected on fixed random directions; the mean absolute
    difference of the projections' quantiles is averaged over directions (Lab units, like Delta E).
    """
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(3, projections))
    directions /= np.linalg.norm(directions, axis=0)
    quantiles = np.linspace(0.005, 0.995, 200)
    a = srgb_to_lab(image.reshape(-1, 3)) @ directions
    b = srgb_to_lab(painting.reshape(-1, 3)) @ directions
    return float(
        np.abs(np.quantile(a, quantiles, axis=0) - np.quantile(b, quantiles, axis=0)).mean()
    )


def flat_spectrum(
    image: np.ndarray, truth: np.ndarray, tile: int = 32, flat: float = 3.0
) -> np.ndarray:
    """Summed Hann-windowed power spectra of the result's Y over the ``tile``-px tiles where the
    ground truth is flat (Y std below ``flat`` levels): where an upsampling grid shows."""
    y, t = rgb_to_y(image), rgb_to_y(truth)
    window = np.outer(np.hanning(tile), np.hanning(tile))
    power = np.zeros((tile, tile))
    for top in range(0, y.shape[0] - tile + 1, tile):
        for left in range(0, y.shape[1] - tile + 1, tile):
            if t[top : top + tile, left : left + tile].std() < flat:
                patch = y[top : top + tile, left : left + tile]
                power += np.abs(np.fft.fft2((patch - patch.mean()) * window)) ** 2
    return power


def grid_peak(power: np.ndarray, period: int = 4) -> float:
    """Power at the harmonics of 1/``period`` (an x4 network's upsampling grid) over the power 2-3
    bins around them, in a :func:`flat_spectrum` (summed over images): ~1 means no grid."""
    tile = power.shape[0]
    step = tile // period
    peaks, around = 0.0, 0.0
    for u in range(0, tile, step):
        for v in range(0, tile, step):
            if u == v == 0:
                continue
            peaks += power[u, v]
            around += np.mean(
                [
                    power[(u + du) % tile, (v + dv) % tile]
                    for du in range(-3, 4)
                    for dv in range(-3, 4)
                    if max(abs(du), abs(dv)) >= 2
                ]
            )
    return float(peaks / around) if around else float("nan")
