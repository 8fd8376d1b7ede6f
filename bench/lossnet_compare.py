"""Loss networks compared by what their objective makes of a photo and a painting (Gatys et al.).

For each loss network and style weight, L-BFGS optimises the pixels of held-out photos against that
network's perceptual objective (bench.gatys.optimise): the image a feed-forward network trained with
it is pulled towards. Prints seconds per iteration and the objective's terms; saves a contact sheet
(a row per photo: the photo, then one result per network and weight).

    .venv/bin/python bench/lossnet_compare.py --runs mobilenet_v2=1e9 vgg16_bn=1e9,1e10,1e11 \
        --photos 2 --iterations 100 --out docs/lossnet-compare.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.gatys import optimise  # noqa: E402
from bench.quality import square  # noqa: E402
from trainer.cli import data_root  # noqa: E402
from trainer.data import load_style_image  # noqa: E402
from trainer.losses import StyleLoss  # noqa: E402
from trainer.lossnets import LOSS_NETWORKS, load_loss_network  # noqa: E402
from trainer.monitor import contact_sheet  # noqa: E402


def parse_runs(items: list[str]) -> list[tuple[str, float]]:
    """``NAME=W1,W2`` items as (loss network, style weight) pairs; ``NAME`` alone: its default."""
    runs = []
    for item in items:
        name, _, weights = item.partition("=")
        if name not in LOSS_NETWORKS:
            sys.exit(f"unknown loss network {name!r}: choose {', '.join(LOSS_NETWORKS)}")
        default = LOSS_NETWORKS[name].style_weight
        runs += [(name, float(w)) for w in weights.split(",")] if weights else [(name, default)]
    return runs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", default=["mobilenet_v2", "vgg16_bn"], help="NAME[=W1,W2]")
    p.add_argument("--data", type=Path, default=data_root(), help="shared data folder")
    p.add_argument("--painting", default="starry_night.jpg", help="file in DATA/styles")
    p.add_argument("--style-size", type=int, default=256, help="painting's longer side (px)")
    p.add_argument("--photos", type=int, default=2, help="held-out BSD100 photos")
    p.add_argument("--iterations", type=int, default=100, help="L-BFGS iterations")
    p.add_argument("--init", choices=["photo", "noise"], default="photo", help="start image")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "lossnet-compare.png")
    args = p.parse_args()
    runs = parse_runs(args.runs)
    photos = sorted((args.data / "sr" / "eval" / "BSD100" / "HR").glob("*.png"))[: args.photos]
    if not photos:
        sys.exit(
            f"no BSD100 photos in {args.data}/sr/eval/BSD100/HR: pass --data or set IMPASTO_DATA"
        )
    torch.set_num_threads(args.threads)
    painting = load_style_image(args.data / "styles" / args.painting, args.style_size)
    rows = [[square(path)] for path in photos]
    print(
        f"{args.painting}, {len(photos)} photos, {args.iterations} L-BFGS iterations from {args.init}"
    )
    print("| loss network | style weight | s / iteration | content | style | total |")
    print("|---|---|---|---|---|---|")
    for name, style_weight in runs:
        spec = LOSS_NETWORKS[name]
        loss_fn = StyleLoss(
            load_loss_network(name), painting, spec.content_weight, style_weight, 0.0
        )
        seconds, terms = 0.0, {"content": 0.0, "style": 0.0, "total": 0.0}
        for row in rows:
            photo = row[0]
            _, elapsed, image = optimise(loss_fn, photo, [args.iterations], args.init)[
                args.iterations
            ]
            seconds += elapsed
            with torch.no_grad():
                values = loss_fn(image, photo)
            for key in terms:
                terms[key] += float(values[key]) / len(rows)
            row.append(image)
        per_iteration = seconds / len(rows) / args.iterations
        print(
            f"| {name} | {style_weight:.0e} | {per_iteration:.2f} | {terms['content']:.3g} | "
            f"{terms['style']:.3g} | {terms['total']:.3g} |",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet([torch.cat(row) for row in rows], args.out)
    print(f"columns: photo, then {', '.join(f'{n} {w:.0e}' for n, w in runs)}; saved {args.out}")


if __name__ == "__main__":
    main()
