"""The inference engine: image formats, options, tiling without seams, runtimes, cancel and errors."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core import engine as engine_module
from core.engine import TILE_SIZE, Cancelled, Engine, EngineError, StyleOptions
from core.modelfile import ModelInfo, load_model, save_model
from core.netspec import sr_margin
from core.ovruntime import RuntimeCancelled, openvino_available
from core.registry import UnknownModelError
from core.runtime import FrozenStats, LiveStats
from tests.conftest import make_model

needs_openvino = pytest.mark.skipif(not openvino_available(), reason="openvino is not installed")


@pytest.fixture(scope="module", autouse=True)
def openvino_cache(tmp_path_factory: pytest.TempPathFactory):
    """One OpenVINO trace cache for the module: the seeded test models trace once, not per test."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMPASTO_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def torch_engine() -> Engine:
    return Engine(device="cpu", backend="torch")


def textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A float32 RGB image with smooth shapes and fine texture, values inside (0, 1)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([np.sin(x / 11) * np.cos(y / 7), np.cos((x + y) / 13), np.sin(y / 17)], -1)
    image = 0.5 + 0.3 * base + 0.05 * rng.standard_normal((h, w, 3)).astype(np.float32)
    return np.clip(image, 0.02, 0.98).astype(np.float32)


def as_dtype(image: np.ndarray, dtype) -> np.ndarray:
    if dtype == np.float32:
        return image.astype(np.float32)
    return np.rint(image * np.iinfo(dtype).max).astype(dtype)


def with_channels(rgb: np.ndarray, channels: int, alpha: np.ndarray) -> np.ndarray:
    gray = rgb[..., :1]
    return {
        1: gray,
        2: np.concatenate([gray, alpha], -1),
        3: rgb,
        4: np.concatenate([rgb, alpha], -1),
    }[channels]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(1 / max(mse, 1e-20))


def luma(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


# --- image formats ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_shape_dtype_and_alpha_are_kept(models_dir, torch_engine, dtype, channels):
    rgb = textured(40, 56)
    # Alpha: a ramp over the left half, fully opaque on the right half.
    alpha = np.clip(np.linspace(0, 2, 56, dtype=np.float32), 0, 1)[None, :, None].repeat(40, 0)
    image = as_dtype(with_channels(rgb, channels, alpha), dtype)

    styled = torch_engine.stylize("tiny", image)
    assert styled.shape == image.shape and styled.dtype == image.dtype
    upscaled = torch_engine.upscale("sr", image)
    assert upscaled.shape == (160, 224, channels) and upscaled.dtype == image.dtype

    if channels in (2, 4):
        # Alpha is bit-exact through stylize, and never leaks into the colours.
        assert np.array_equal(styled[..., -1], image[..., -1])
        alone = torch_engine.stylize("tiny", np.ascontiguousarray(image[..., :-1]))
        assert np.array_equal(styled[..., :-1], alone)
        alone = torch_engine.upscale("sr", np.ascontiguousarray(image[..., :-1]))
        assert np.array_equal(upscaled[..., :-1], alone)
        # Upscaled alpha is the original's, resized: opaque stays opaque, the ramp stays a ramp.
        top = 1 if dtype == np.float32 else np.iinfo(dtype).max
        a = upscaled[..., -1].astype(np.float64) / top
        assert np.all(a[:, 4 * 32 :] == 1)
        blocks = a.reshape(40, 4, 56, 4).mean(axis=(1, 3))
        assert np.abs(blocks - alpha[..., 0])[:, 1:26].max() < 0.01


def test_gray_in_gray_out_is_the_luminance_of_the_colour_result(models_dir, torch_engine):
    gray = as_dtype(textured(40, 56)[..., :1], np.uint8)
    styled = torch_engine.stylize("tiny", gray)
    colour = torch_engine.stylize("tiny", np.repeat(gray, 3, axis=2)).astype(np.float64)
    assert np.abs(styled[..., 0] - luma(colour)).max() <= 1.0
    assert torch_engine.stylize("tiny", gray[..., 0]).shape == (40, 56)  # plain HxW works too


# --- options ---------------------------------------------------------------------------------


def test_strength_blends_with_the_original(models_dir, torch_engine):
    image = as_dtype(textured(48, 64), np.uint8)
    assert np.array_equal(torch_engine.stylize("tiny", image, StyleOptions(strength=0)), image)
    full = torch_engine.stylize("tiny", image).astype(np.float64)
    half = torch_engine.stylize("tiny", image, StyleOptions(strength=0.5)).astype(np.float64)
    # Unclipped pixels are halfway (to rounding); clipped ones differ only by the clipping.
    inside = np.all((full > 0) & (full < 255), axis=2)
    assert np.abs(half - (full + image) / 2)[inside].max() <= 1.0
    assert np.abs(full - image).mean() > 10  # the model does change the image


def test_float_values_above_one_survive_the_blend(models_dir, torch_engine):
    image = textured(48, 64) * 2  # HDR: up to about 2
    assert image.max() > 1.5
    same = torch_engine.stylize("tiny", image, StyleOptions(strength=0))
    assert np.array_equal(same, image)  # nothing clipped
    full = torch_engine.stylize("tiny", image)
    assert full.max() <= 1 and full.min() >= 0  # the network's own range
    half = torch_engine.stylize("tiny", image, StyleOptions(strength=0.5))
    np.testing.assert_allclose(half, (full + image) / 2, atol=1e-5)  # the original as it is
    assert torch_engine.upscale("sr", image).max() <= 1  # upscaling clips: the network's range


def test_preserve_colors_keeps_the_chroma(models_dir, torch_engine):
    image = textured(48, 64)
    plain = torch_engine.stylize("tiny", image)
    kept = torch_engine.stylize("tiny", image, StyleOptions(preserve_colors=True))
    # Clipping alters chroma and luma: compare where neither result was clipped.
    inside = np.all((kept > 0) & (kept < 1) & (plain > 0) & (plain < 1), axis=2)
    assert inside.sum() > 20  # random weights push most pixels out of range

    def chroma(rgb):
        return rgb - luma(rgb)[..., None]

    unclipped = np.all((kept > 0) & (kept < 1), axis=2)
    assert np.abs(chroma(kept) - chroma(image))[unclipped].max() < 1e-4
    assert np.abs(luma(kept) - luma(plain))[inside].max() < 1e-4
    assert np.abs(luma(kept) - luma(image)).mean() > 0.02


def test_processing_scale_changes_the_stroke_size(models_dir, torch_engine):
    image = textured(96, 128)
    fine = torch_engine.stylize("wide", image)
    coarse = torch_engine.stylize("wide", image, StyleOptions(scale=0.5))
    assert coarse.shape == image.shape and coarse.dtype == image.dtype

    def detail(x):  # energy of pixel-to-pixel differences
        return float(np.mean(np.abs(np.diff(x, axis=1))) + np.mean(np.abs(np.diff(x, axis=0))))

    assert detail(coarse) < 0.8 * detail(fine)


# --- tiling ----------------------------------------------------------------------------------


def stylize_whole_with_stats(path, image: np.ndarray, stats_from: np.ndarray) -> np.ndarray:
    """The network on the whole image with instance-norm statistics of ``stats_from``."""
    net, _ = load_model(path)
    with torch.no_grad():
        stats = LiveStats(net)(torch.from_numpy(stats_from).permute(2, 0, 1)[None])
        frozen = FrozenStats(net)
        out = frozen(torch.from_numpy(image).permute(2, 0, 1)[None], frozen.affine(stats.numpy()))
    return np.clip(out[0].permute(1, 2, 0).numpy(), 0, 1)


def thumbnail(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    t = torch.from_numpy(image).permute(2, 0, 1)[None]
    t = F.interpolate(t, size=size, mode="bilinear", antialias=True, align_corners=False)
    return t[0].permute(1, 2, 0).contiguous().numpy()


def test_tiles_match_the_whole_image_with_thumbnail_statistics(models_dir, monkeypatch):
    monkeypatch.setattr(engine_module, "THUMBNAIL_SIDE", 160)
    image = textured(240, 320)
    tiled = Engine(device="cpu", backend="torch", tile_size=160).stylize("tiny", image)
    expected = stylize_whole_with_stats(
        models_dir / "tiny.impasto", image, thumbnail(image, (120, 160))
    )
    assert psnr(tiled, expected) > 50  # measured: ~70 dB with random weights


def column_jumps(image: np.ndarray) -> np.ndarray:
    """Mean absolute difference between each column and the next, relative to the median."""
    jumps = np.abs(np.diff(image.astype(np.float64), axis=1)).mean(axis=(0, 2))
    return jumps / np.median(jumps)


def test_tiles_show_no_seams(models_dir):
    image = textured(128, 320)
    tiled = Engine(device="cpu", backend="torch", tile_size=160).stylize("tiny", image)
    margin, blend = engine_module.STYLE_MARGIN, engine_module.STYLE_BLEND
    multiple = engine_module.STYLE_TILE_MULTIPLE
    size, starts = engine_module._plan_axis(320, 160, 2 * margin + blend, 4, multiple)
    # Where a seam could show: where a tile's output is cut off and where its blend ramp ends.
    edges = [s + d for s in starts[1:] for d in (margin, margin + blend)]
    edges += [s + size - d for s in starts[:-1] for d in (margin, margin + blend)]
    candidates = sorted({c + k for c in edges for k in (-2, -1, 0)})
    jumps = column_jumps(tiled)
    assert jumps[candidates].max() <= np.delete(jumps, candidates).max()  # measured: 1.37 vs 1.58
    # The naive way, each tile with its own statistics, shows seams: the detector sees them.
    path = models_dir / "tiny.impasto"
    naive = np.concatenate(
        [
            stylize_whole_with_stats(path, image[:, x : x + 80], image[:, x : x + 80])
            for x in range(0, 320, 80)
        ],
        axis=1,
    )
    jumps = column_jumps(naive)
    assert jumps[[79, 159, 239]].max() > 1.2 * np.delete(jumps, [79, 159, 239]).max()  # 2.3 vs 1.6


@pytest.mark.parametrize(
    "length, tile, scale", [(320, 160, 1), (1000, 128, 1), (517, 300, 1), (90, 64, 4)]
)
def test_tiles_are_added_with_their_blend_weights(length, tile, scale):
    # _add_tile copies where a tile's weight is 1 and adds only its bands: the same sum as weighting
    # every pixel of every tile, for layouts with narrow tiles and no weight of 1 too.
    margin, blend = (32, 32) if scale == 1 else (sr_margin({}), engine_module.SR_BLEND)
    size, starts = engine_module._plan_axis(length, tile, 2 * margin + blend, 4, 8)
    weights = engine_module._blend_weights(starts, size, length, margin, blend, scale)
    rng = np.random.default_rng(0)
    out = np.zeros((length * scale, length * scale, 3), np.float32)
    expected = np.zeros_like(out)
    for y, wy in zip(starts, weights, strict=True):
        for x, wx in zip(starts, weights, strict=True):
            result = rng.random((1, size * scale, size * scale, 3), dtype=np.float32)
            engine_module._add_tile(out, result, y * scale, x * scale, wy, wx)
            weighted = result[0] * wy[:, None, None] * wx[None, :, None]
            expected[y * scale : (y + size) * scale, x * scale : (x + size) * scale] += weighted
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_upscale_tiles_are_exact(models_dir, torch_engine):
    image = textured(72, 96)
    whole = torch_engine.upscale("sr", image)
    tiled = Engine(device="cpu", backend="torch", tile_size=256).upscale("sr", image)
    assert np.abs(whole - tiled).max() < 1e-5


def test_a_deeper_upscaler_gets_wider_tile_margins(models_dir, torch_engine):
    # 12 residual blocks see ~30 input pixels around each pixel: the default network's 16-pixel
    # margin would cut context off and leave seams.
    net = load_model(make_model(models_dir, "sr-deep", kind="sr", blocks=12))[0]
    with torch.no_grad():  # trained blocks are stronger than fresh ones: make distant pixels count
        for block in net.res:
            block.conv1[1].weight.mul_(2)
            block.conv2[1].weight.mul_(2)
    info = ModelInfo(name="sr-deep", kind="sr", arch="sr", options={"blocks": 12})
    save_model(models_dir / "sr-deep.impasto", net, info, half=False)
    image = textured(200, 260)
    whole = torch_engine.upscale("sr-deep", image)
    tiled = Engine(device="cpu", backend="torch", tile_size=512).upscale("sr-deep", image)
    assert np.abs(whole - tiled).max() < 1e-5


# --- runtimes --------------------------------------------------------------------------------


@needs_openvino
def test_openvino_matches_pytorch(models_dir):
    image = as_dtype(textured(96, 128), np.uint8)
    reference = Engine(device="cpu", backend="torch")
    fast = Engine(device="cpu", backend="openvino", precision="fp32")
    assert fast.backend == "openvino"
    # fp32 both: the same result to rounding (at most 1 of 255, on a few pixels).
    for model in ("wide", "tiny"):
        difference = np.abs(
            fast.stylize(model, image).astype(int) - reference.stylize(model, image)
        )
        assert difference.max() <= 1 and (difference > 0).mean() < 0.01
    difference = np.abs(fast.upscale("sr", image).astype(int) - reference.upscale("sr", image))
    assert difference.max() <= 1 and (difference > 0).mean() < 0.01
    # Tiled (thumbnail statistics compiled in as constants) too; float32 output, tolerance 1e-3.
    image = textured(200, 260)
    tiled = Engine(device="cpu", backend="openvino", precision="fp32", tile_size=160)
    expected = Engine(device="cpu", backend="torch", tile_size=160).stylize("tiny", image)
    assert np.abs(tiled.stylize("tiny", image) - expected).max() < 1e-3


@needs_openvino
def test_openvino_tiles_of_each_image_use_that_images_statistics(models_dir):
    # Each image's tiles are compiled with its statistics as constants: a second image of the
    # same size must not reuse the first one's.
    tiled = Engine(device="cpu", backend="openvino", precision="fp32", tile_size=160)
    reference = Engine(device="cpu", backend="torch", tile_size=160)
    first, second = textured(200, 260), textured(200, 260, seed=1) * 0.5
    for image in (first, second, first):
        expected = reference.stylize("tiny", image)
        result = tiled.stylize("tiny", image)
        assert np.abs(result - expected).max() < 1e-3


@needs_openvino
def test_openvino_bf16_stays_close(models_dir):
    image = textured(96, 128)
    bf16 = Engine(device="cpu", backend="openvino", precision="bf16").stylize("tiny", image)
    fp32 = Engine(device="cpu", backend="torch").stylize("tiny", image)
    assert psnr(bf16, fp32) > 35  # measured ~45 dB (random weights; trained ones are smoother)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_half_precision_matches_cpu_fp32(models_dir):
    gpu = Engine(device="cuda")
    assert (gpu.device, gpu.backend, gpu.precision) == ("cuda", "torch", "fp16")
    reference = Engine(device="cpu", backend="torch")
    image = textured(200, 260)
    for model in ("wide", "tiny"):
        assert psnr(gpu.stylize(model, image), reference.stylize(model, image)) > 40
    tiled = Engine(device="cuda", tile_size=160).stylize("tiny", image)
    assert (
        psnr(tiled, Engine(device="cpu", backend="torch", tile_size=160).stylize("tiny", image))
        > 40
    )
    assert psnr(gpu.upscale("sr", image[:64, :80]), reference.upscale("sr", image[:64, :80])) > 40


# --- jobs: progress, cancel, memory, threads, model files --------------------------------------


def cancel_at(step: int):
    """A cancel event, and a progress callback that records each count and sets it at ``step``."""
    cancel, seen = threading.Event(), []

    def progress(done: int, total: int) -> None:
        seen.append(done)
        if done == step:
            cancel.set()

    return cancel, progress, seen


@pytest.mark.parametrize("backend", ["torch", pytest.param("openvino", marks=needs_openvino)])
def test_progress_counts_tiles_and_cancel_stops(models_dir, backend):
    engine = Engine(device="cpu", backend=backend, tile_size=160)
    image = textured(200, 260)
    calls = []
    engine.stylize("tiny", image, progress=lambda done, total: calls.append((done, total)))
    # Every tile plus the thumbnail pass, counted in order.
    total = calls[0][1]
    assert total > 3 and calls == [(i, total) for i in range(total + 1)]

    # Cancel after the thumbnail: no tile runs.
    cancel, progress, seen = cancel_at(1)
    with pytest.raises(Cancelled):
        engine.stylize("tiny", image, progress=progress, cancel=cancel)
    assert seen == [0, 1]
    # Cancel while the only tile runs (set as the job starts): the job still stops.
    cancel = threading.Event()
    with pytest.raises(Cancelled):
        engine.upscale("sr", image[:64, :64], progress=lambda d, t: cancel.set(), cancel=cancel)
    # The engine is fine afterwards.
    assert engine.upscale("sr", image[:32, :32]).shape == (128, 128, 3)


@needs_openvino
def test_openvino_runs_again_after_a_cancel_inside_a_tile(models_dir):
    runner = Engine(device="cpu", backend="openvino", precision="fp32")._load("sr", "sr").runner
    x = textured(256, 256)[None]
    no_stats = np.zeros((2, 0), np.float32)
    cancel = threading.Event()
    cancel.set()  # seen at the first poll, 0.1 s into the run (the run takes longer)
    with pytest.raises(RuntimeCancelled):
        runner.run_frozen(x, no_stats, cancel)
    assert runner.run_frozen(x, no_stats, None).shape == (1, 1024, 1024, 3)


@needs_openvino
def test_openvino_works_when_its_cache_cannot_be_written(models_dir, tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("IMPASTO_CACHE_DIR", str(tmp_path / "a-file" / "cache"))
    image = as_dtype(textured(48, 64), np.uint8)
    expected = Engine(device="cpu", backend="torch").stylize("tiny", image)
    result = Engine(device="cpu", backend="openvino", precision="fp32").stylize("tiny", image)
    assert np.abs(result.astype(int) - expected).max() <= 1


@needs_openvino
def test_openvino_cancel_between_tiles_leaves_the_engine_exact(models_dir):
    engine = Engine(device="cpu", backend="openvino", precision="fp32", tile_size=160)
    image = textured(300, 400)  # 9 tiles
    expected = engine.stylize("tiny", image)
    cancel, progress, seen = cancel_at(2)  # after the thumbnail and the first tile
    with pytest.raises(Cancelled):
        engine.stylize("tiny", image, progress=progress, cancel=cancel)
    assert seen == [0, 1, 2]
    # Nothing of the cancelled job lingers: the next job is exact.
    np.testing.assert_array_equal(engine.stylize("tiny", image), expected)


@pytest.mark.parametrize("resident", [True, False])
def test_out_of_memory_retries_with_smaller_tiles(models_dir, monkeypatch, resident):
    engine = Engine(device="cpu", backend="torch", tile_size=512, resident=resident)
    image = textured(300, 400)
    expected = Engine(device="cpu", backend="torch", tile_size=256).stylize("tiny", image)
    runner = engine._load("tiny", "style").runner
    # The forms each path runs: tensors (1, 3, H, W) on the device, arrays (1, H, W, 3) on the host.
    names = ("tile", "whole") if resident else ("run_frozen", "run_whole")
    tried = []

    def limited(run):
        # What a real allocator does: big inputs fail, small ones work.
        def run_limited(x, *args):
            height, width = x.shape[-2:] if resident else x.shape[1:3]
            tried.append(width)
            if height * width > 300 * 300:
                raise RuntimeError(
                    "[enforce fail] DefaultCPUAllocator: not enough memory: you tried to allocate"
                )
            return run(x, *args)

        return run_limited

    for name in names:
        monkeypatch.setattr(runner, name, limited(getattr(runner, name)))
    result = engine.stylize("tiny", image)
    assert tried[0] == 400 and max(tried[1:]) <= 256
    assert np.abs(result - expected).max() < 1e-5
    monkeypatch.setattr(engine_module, "MIN_TILE_SIZE", 512)
    with pytest.raises(EngineError, match="not enough memory"):
        engine.stylize("tiny", image)


def test_compact_models_get_larger_tiles_for_the_same_memory(models_dir):
    engine = Engine(device="cpu", backend="torch")
    # Half the channels, twice the tile area: the memory of one tile stays that of the full width.
    assert engine._load("wide", "style").tile_size == TILE_SIZE["cpu"]
    assert engine._load("tiny", "style").tile_size == 1408
    assert engine._load("sr", "sr").tile_size == TILE_SIZE["cpu"]
    assert Engine(device="cpu", tile_size=600)._load("tiny", "style").tile_size == 600  # as asked


def test_jobs_from_two_threads_run_one_at_a_time(models_dir, torch_engine):
    images = [as_dtype(textured(48, 64, seed), np.uint8) for seed in (1, 2)]
    expected = [torch_engine.stylize("tiny", image) for image in images]
    results = [None, None]

    def work(i):
        results[i] = torch_engine.stylize("tiny", images[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(r, e) for r, e in zip(results, expected, strict=True))


def test_a_retrained_model_is_reloaded(models_dir, torch_engine):
    image = as_dtype(textured(48, 64), np.uint8)
    before = torch_engine.stylize("tiny", image)
    make_model(models_dir, "tiny", seed=7, width="compact")  # the trainer writes the same name
    assert not np.array_equal(torch_engine.stylize("tiny", image), before)
    by_path = torch_engine.stylize(str(models_dir / "tiny.impasto"), image)
    assert np.array_equal(by_path, torch_engine.stylize("tiny", image))
    assert torch_engine.model_info("tiny").display_name == "Tiny"


# --- errors ----------------------------------------------------------------------------------


def test_unknown_model_lists_known_ones(models_dir, torch_engine):
    image = as_dtype(textured(48, 64), np.uint8)
    with pytest.raises(UnknownModelError, match="tiny.*wide"):
        torch_engine.stylize("starry", image)
    with pytest.raises(UnknownModelError, match="sr"):
        torch_engine.upscale("nope", image)
    with pytest.raises(EngineError, match="not found"):
        torch_engine.stylize(str(models_dir / "missing.impasto"), image)


def test_wrong_kind_of_model_is_refused(models_dir, torch_engine):
    image = as_dtype(textured(48, 64), np.uint8)
    with pytest.raises(EngineError, match="needs a style model"):
        torch_engine.stylize("sr", image)
    with pytest.raises(EngineError, match="needs an upscaling model"):
        torch_engine.upscale("tiny", image)


def test_a_cached_model_is_still_refused_for_the_other_kind(models_dir, torch_engine):
    image = as_dtype(textured(48, 64), np.uint8)
    torch_engine.stylize("tiny", image)
    torch_engine.upscale("sr", image)
    with pytest.raises(EngineError, match="needs an upscaling model"):
        torch_engine.upscale("tiny", image)
    with pytest.raises(EngineError, match="needs a style model"):
        torch_engine.stylize("sr", image)


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((32, 32, 5), np.uint8), "not HxWxC"),
        (np.zeros(32 * 32, np.uint8), "not HxWxC"),
        (np.zeros((32, 32, 3), np.float64), "float64: use uint8, uint16 or float32"),
        (np.zeros((32, 32, 3), np.int32), "int32"),
        (np.zeros((8, 32, 3), np.uint8), "at least 16x16"),
        ([[1, 2], [3, 4]], "numpy array"),
    ],
)
def test_bad_images_are_refused(models_dir, torch_engine, image, message):
    with pytest.raises(EngineError, match=message):
        torch_engine.stylize("tiny", image)


def test_bad_options_and_settings_are_refused(models_dir, torch_engine):
    image = as_dtype(textured(48, 64), np.uint8)
    with pytest.raises(EngineError, match="strength 2"):
        torch_engine.stylize("tiny", image, StyleOptions(strength=2))
    with pytest.raises(EngineError, match="scale 0"):
        torch_engine.stylize("tiny", image, StyleOptions(scale=0))
    with pytest.raises(EngineError, match="unknown device"):
        Engine(device="tpu")
    with pytest.raises(EngineError, match="unknown backend"):
        Engine(backend="tensorrt")
    with pytest.raises(EngineError, match="too small"):
        Engine(tile_size=16)
    if not torch.cuda.is_available():
        with pytest.raises(EngineError, match="not available"):
            Engine(device="cuda")
