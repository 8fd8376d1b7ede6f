"""Proof of quality for the shipped models: the numbers and pictures in docs/models.md.

Style: one objective for every model, old or new (the relative perceptual loss on VGG-16-BN, which
none of them was trained with), for the feed-forward output vs Gatys-style L-BFGS optimisation
from the same photo, on held-out BSD100 photos. SR: PSNR/SSIM (Y, 4-pixel border) on
Set5/Set14/BSD100 from their LR_x4 inputs, for bicubic and each shipped SR model. Pictures: contact
sheets, a before/after gallery (with --old) and an SR comparison.

    python bench/quality.py [--data DIR] [--out docs] [--photos 10] [--styles a,b] [--skip-sr]
        [--old FOLDER_OF_EARLIER_MODELS]

Gatys optimisation is slow on a CPU (~0.5 s per iteration at 256 px with VGG-16-BN): --styles and
--photos bound the comparison; the pictures always cover every shipped style.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.gatys import optimise  # noqa: E402
from bench.metrics import flat_spectrum, grid_peak, psnr_y, ssim_y  # noqa: E402
from core.engine import Engine  # noqa: E402
from core.modelfile import ModelInfo, load_model  # noqa: E402
from core.registry import SHIPPED_DIR  # noqa: E402
from trainer.cli import data_root  # noqa: E402
from trainer.data import center_crop, load_style_image  # noqa: E402
from trainer.losses import StyleLoss  # noqa: E402
from trainer.lossnets import load_loss_network  # noqa: E402
from trainer.monitor import contact_sheet  # noqa: E402

SIZE = 256  # the training crop: the objective is compared at the scale the networks learnt
OUR_PHOTOS = [REPO / "docs" / "sample.jpg", REPO / "docs" / "sample-coffee.jpg"]


def shipped(kind: str) -> list[tuple[torch.nn.Module, ModelInfo]]:
    """The shipped models of one kind, loaded, by name."""
    models = [load_model(p) for p in sorted(SHIPPED_DIR.glob("*.impasto"))]
    return [(net, info) for net, info in models if info.kind == kind]


def square(path: Path) -> torch.Tensor:
    """A SIZE x SIZE centre crop of a photo as a 1x3xHxW float tensor in [0, 1]."""
    return center_crop(path, SIZE, resize=True).unsqueeze(0).float().div(255)


def painting(info: ModelInfo, data: Path) -> torch.Tensor:
    """The style image a model was trained on (found by name in DATA/styles), at its training size."""
    s = info.training["settings"]
    return load_style_image(data / "styles" / Path(s["style_image"]).name, s["style_size"])


# Every style model, old or new, is judged by one objective that none of them was trained on: the
# relative perceptual loss (trainer.losses, every style layer counted equally) on VGG-16-BN.
MEASURE_NETWORK = "vgg16_bn"


def measuring_loss(info: ModelInfo, data: Path, lossnet) -> StyleLoss:
    """The common objective for a style model: its painting at its training size, VGG-16-BN."""
    return StyleLoss(lossnet, painting(info, data), 1.0, 1.0, 0.0, "relative")


def style_models(old: Path | None) -> list[tuple[str, torch.nn.Module, ModelInfo]]:
    """(label, network, info) for the shipped styles and, with ``old``, the models in that folder."""
    found = [(info.name, net, info) for net, info in shipped("style")]
    if old is not None:
        for path in sorted(old.glob("*.impasto")):
            net, info = load_model(path)
            if info.kind == "style":
                found.append((f"{info.name} ({old.name})", net, info))
    return found


def compare_with_gatys(
    data: Path,
    photos: int,
    names: list[str] | None,
    iters: list[int],
    out: Path,
    init: str,
    old: Path | None,
):
    """Feed-forward objective vs Gatys at each iteration count, on held-out photos, one objective."""
    held_out = sorted((data / "sr" / "eval" / "BSD100" / "HR").glob("*.png"))[:photos]
    if not held_out:
        sys.exit(f"no held-out photos in {data}/sr/eval/BSD100/HR: pass --data or set IMPASTO_DATA")
    lossnet = load_loss_network(MEASURE_NETWORK)
    gatys_cache: dict[
        tuple, dict
    ] = {}  # (painting, size, photo) -> Gatys results, shared by models
    rows = []
    for label, net, info in style_models(old):
        name = info.name
        run_gatys = not names or name in names
        loss_fn = measuring_loss(info, data, lossnet)
        s = info.training["settings"]
        ff, ff_time, gatys = [], [], {n: ([], []) for n in iters}
        for i, path in enumerate(held_out):
            photo = square(path)
            start = time.perf_counter()
            with torch.no_grad():
                result = net(photo).clamp(0, 1)
            ff_time.append(time.perf_counter() - start)
            ff.append(float(loss_fn(result, photo)["total"]))
            if not run_gatys:
                continue
            key = (Path(s["style_image"]).name, s["style_size"], path.name)
            if key not in gatys_cache:
                gatys_cache[key] = optimise(loss_fn, photo, iters, init)
                print(f"  Gatys {key}", file=sys.stderr, flush=True)
            optimised = gatys_cache[key]
            for n, (value, seconds, _) in optimised.items():
                gatys[n][0].append(value)
                gatys[n][1].append(seconds)
            if i == 0 and label == name:  # pictures for the shipped models only
                picture = [photo, result] + [optimised[n][2] for n in iters]
                contact_sheet([torch.cat(picture)], out / f"gatys-{init}-{name}.png")
        row = {"name": label, "ff": np.mean(ff), "ff_time": np.mean(ff_time)}
        row.update({n: (np.mean(v), np.mean(t)) for n, (v, t) in gatys.items() if v})
        rows.append(row)
    header = (
        "| style | feed-forward | " + " | ".join(f"Gatys {n} it" for n in iters) + " | matches |"
    )
    print(
        f"\nobjective (relative content + style on {MEASURE_NETWORK}) on {len(held_out)} held-out "
        f"photos, mean (time); Gatys from {init}"
    )
    print(header + "\n|" + "---|" * (len(iters) + 3))
    for r in rows:
        if iters[0] not in r:
            print(
                f"| {r['name']} | {r['ff']:.4g} ({r['ff_time'] * 1000:.0f} ms) |"
                + " - |" * (len(iters) + 1)
            )
            continue
        # The feed-forward output is as good as Gatys somewhere before the first count that beats it.
        beaten = [i for i, n in enumerate(iters) if r[n][0] <= r["ff"]]
        cells = " | ".join(f"{r[n][0]:.4g} ({r[n][1]:.1f} s)" for n in iters)
        if not beaten:
            verdict = f"better than {iters[-1]} it"
        elif beaten[0] == 0:
            verdict = f"worse than {iters[0]} it"
        else:
            verdict = f"{iters[beaten[0] - 1]}-{iters[beaten[0]]} it"
        print(
            f"| {r['name']} | {r['ff']:.4g} ({r['ff_time'] * 1000:.0f} ms) | {cells} | {verdict} |"
        )


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """Whether two networks hold the same weights (a model the folder has unchanged)."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def style_pictures(data: Path, out: Path, old: Path | None) -> None:
    """A contact sheet per style (photo, painting, result) and a gallery of our own photos: each
    style's result, after its older version from ``old`` where there is one (before/after)."""
    held_out = sorted((data / "sr" / "eval" / "BSD100" / "HR").glob("*.png"))[:2]
    gallery = [[square(p) for p in OUR_PHOTOS]]
    before = {i.name: n for label, n, i in style_models(old) if label != i.name}
    for net, info in shipped("style"):
        if info.name in before and not same_weights(before[info.name], net):
            with torch.no_grad():
                gallery.append([before[info.name](p).clamp(0, 1) for p in gallery[0]])
        style = painting(info, data)
        style_square = F.interpolate(style, size=(SIZE, SIZE), mode="bilinear", antialias=True)
        sheet = []
        with torch.no_grad():
            for path in OUR_PHOTOS + held_out:
                photo = square(path)
                sheet.append(torch.cat([photo, style_square, net(photo).clamp(0, 1)]))
            gallery.append([net(p).clamp(0, 1) for p in gallery[0]])
        contact_sheet(sheet, out / f"sheet-{info.name}.png")
    contact_sheet([torch.cat(column) for column in zip(*gallery, strict=True)], out / "gallery.png")


def evaluate_sr(data: Path, out: Path, sets: list[str], extra: list[Path]) -> None:
    """PSNR/SSIM table for bicubic, each shipped SR model and each ``extra`` model file, with the
    upsampling-grid peak on flat regions (bench.metrics.grid_peak); a crop comparison picture."""
    engine = Engine(device="cpu", backend="torch", precision="fp32")
    models: dict[str, str | Path] = {info.name: info.name for _, info in shipped("sr")}
    models.update({p.stem: p for p in extra})  # name the files apart from the shipped ones
    names = ["bicubic", *models]
    print("| set | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    grids = []
    for name in sets:
        scores: dict[str, list[tuple[float, float]]] = {m: [] for m in names}
        spectra = dict.fromkeys(names, 0.0)
        pairs = sorted((data / "sr" / "eval" / name / "HR").glob("*.png"))
        if not pairs:
            sys.exit(f"no {name} images in {data}/sr/eval: pass --data or set IMPASTO_DATA")
        for hr_path in pairs:
            truth = np.asarray(Image.open(hr_path).convert("RGB"))
            low = Image.open(hr_path.parent.parent / "LR_x4" / hr_path.name).convert("RGB")
            results = {"bicubic": np.asarray(low.resize(truth.shape[1::-1], Image.BICUBIC))}
            for m, model in models.items():
                results[m] = engine.upscale(model, np.asarray(low))
            for m, image in results.items():
                scores[m].append((psnr_y(image, truth), ssim_y(image, truth)))
                spectra[m] = spectra[m] + flat_spectrum(image, truth)
            if name == "Set14" and hr_path.name == "img_005.png":
                _sr_picture(results, truth, out / "sr-comparison.png")
        cells = [
            f"{np.mean([s[0] for s in v]):.2f} dB / {np.mean([s[1] for s in v]):.4f}"
            for v in scores.values()
        ]
        print(f"| {name} ({len(pairs)}) | " + " | ".join(cells) + " |")
        grids.append(f"| {name} grid peak | " + " | ".join(f"{grid_peak(s):.2f}" for s in spectra.values()) + " |")  # fmt: skip
    print("\n".join(grids))


def _sr_picture(results: dict[str, np.ndarray], truth: np.ndarray, path: Path, crop: int = 128):
    """Centre crops, shown at 2x: bicubic, each model, ground truth."""
    h, w = truth.shape[:2]
    top, left = (h - crop) // 2, (w - crop) // 2
    tiles = [*results.values(), truth]
    batch = torch.stack(
        [
            torch.from_numpy(t[top : top + crop, left : left + crop].copy()).permute(2, 0, 1)
            for t in tiles
        ]
    ).float()
    contact_sheet([F.interpolate(batch / 255, scale_factor=2, mode="nearest")], path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=data_root(), help="shared data folder")
    p.add_argument("--out", type=Path, default=REPO / "docs", help="where pictures go")
    p.add_argument("--photos", type=int, default=10, help="held-out BSD100 photos (default 10)")
    p.add_argument("--styles", help="styles to compare with Gatys, comma-separated (default: all)")
    p.add_argument("--iterations", default="50,100,200", help="Gatys iteration counts")
    p.add_argument("--init", choices=["photo", "noise"], default="photo", help="Gatys start image")
    p.add_argument(
        "--old",
        type=Path,
        help="also judge the style models in this folder (before/after), labelled with its name",
    )
    p.add_argument("--sets", default="Set5,Set14,BSD100", help="SR evaluation sets")
    p.add_argument(
        "--sr-models", type=Path, nargs="*", default=[], help="also judge these SR model files"
    )
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads")
    p.add_argument("--skip-style", action="store_true")
    p.add_argument("--skip-sr", action="store_true")
    p.add_argument(
        "--pictures-only", action="store_true", help="style pictures without the Gatys comparison"
    )
    args = p.parse_args()
    if not args.data.is_dir():
        sys.exit(f"data folder not found: {args.data} (pass --data or set IMPASTO_DATA)")
    missing = [str(m) for m in args.sr_models if not m.is_file()]
    if missing:
        sys.exit(f"SR model file not found: {', '.join(missing)}")
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.skip_sr:
        evaluate_sr(args.data, args.out, args.sets.split(","), args.sr_models)
    if not args.skip_style:
        style_pictures(args.data, args.out, args.old)
        if args.pictures_only:
            return
        iters = [int(n) for n in args.iterations.split(",")]
        names = args.styles.split(",") if args.styles else None
        compare_with_gatys(args.data, args.photos, names, iters, args.out, args.init, args.old)


if __name__ == "__main__":
    main()
