"""Training photos: folder scanning, deterministic random crops, and a resumable sample order."""

from __future__ import annotations

import random
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset, Sampler

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm")


class DataError(Exception):
    """The dataset or style image cannot be used."""


def open_rgb(path: Path) -> Image.Image:
    """An image file as upright RGB (EXIF orientation applied)."""
    with Image.open(path) as image:
        return ImageOps.exif_transpose(image).convert("RGB")


def find_photos(folder: str | Path, minimum: int) -> tuple[list[Path], int]:
    """Readable photos under ``folder`` (recursively, sorted) and how many unreadable ones were skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"dataset folder not found: {folder}")
    candidates = sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )
    photos, skipped = [], 0
    for path in candidates:
        try:
            with Image.open(path) as image:
                image.verify()
            photos.append(path)
        except Exception:
            skipped += 1
    if not photos:
        raise DataError(
            f"no readable photos in {folder} ({skipped} unreadable; looked for "
            f"{', '.join(IMAGE_SUFFIXES)}): point --dataset at a folder of photos"
        )
    if len(photos) < minimum:
        raise DataError(
            f"only {len(photos)} readable photos in {folder} ({skipped} unreadable skipped); "
            f"need at least {minimum} (one batch): add photos or lower --batch-size"
        )
    return photos, skipped


def load_style_image(path: str | Path, size: int) -> torch.Tensor:
    """The style image as a 1x3xHxW float tensor in [0, 1], its longer side resized to ``size``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"style image not found: {path}")
    try:
        image = open_rgb(path)
    except Exception as e:
        raise DataError(f"cannot read the style image {path} ({type(e).__name__})") from None
    scale = size / max(image.size)
    image = image.resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
        Image.BICUBIC,
    )
    return to_tensor(image).float().div(255).unsqueeze(0)


def calibration_images(folder: str | Path, count: int = 16, side: int = 512) -> list[torch.Tensor]:
    """Up to ``count`` photos spread over the dataset, longer side at most ``side``, as 1x3xHxW in [0, 1]."""
    photos, _ = find_photos(folder, 1)
    chosen = dict.fromkeys(photos[i * len(photos) // count] for i in range(count))
    images = []
    for path in chosen:
        image = open_rgb(path)
        image.thumbnail((side, side), Image.BICUBIC)
        images.append(to_tensor(image).float().div(255).unsqueeze(0))
    return images


def to_tensor(image: Image.Image) -> torch.Tensor:
    """A Pillow RGB image as a 3xHxW uint8 tensor."""
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


def _cover(image: Image.Image, size: int, resize: bool) -> Image.Image:
    """The image with its shorter side scaled to ``size``: always with ``resize``, else only if smaller."""
    shorter = min(image.size)
    if not resize and shorter >= size:
        return image
    scale = size / shorter
    return image.resize(
        (max(size, round(image.width * scale)), max(size, round(image.height * scale))),
        Image.BICUBIC,
    )


def random_crop(
    image: Image.Image, size: int, rng: random.Random, resize: bool, flip: bool = True
) -> Image.Image:
    """A ``size`` square crop; ``resize`` first scales the shorter side to ``size`` (else only if smaller)."""
    image = _cover(image, size, resize)
    left, top, mirrored = _crop_draw(image.width, image.height, size, rng, flip)
    image = image.crop((left, top, left + size, top + size))
    return image.transpose(Image.FLIP_LEFT_RIGHT) if mirrored else image


def _crop_draw(
    width: int, height: int, size: int, rng: random.Random, flip: bool = True
) -> tuple[int, int, bool]:
    """A random crop's (left, top, mirrored): the draws random_crop makes, in its order."""
    left = rng.randint(0, width - size)
    top = rng.randint(0, height - size)
    return left, top, flip and rng.random() < 0.5


def center_crop(path: Path, size: int, resize: bool) -> torch.Tensor:
    """A fixed ``size`` square from the middle of a photo, as 3xHxW uint8 (for previews)."""
    image = _cover(open_rgb(path), size, resize)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    return to_tensor(image.crop((left, top, left + size, top + size)))


def ignore_interrupts(worker_id: int) -> None:
    """DataLoader worker set-up: Ctrl-C reaches the whole process group, but only the training
    process should react to it (by checkpointing), not die mid-batch in a worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class PhotoCrops(Dataset):
    """Random square crops of photos; an item is (photo index, seed), so crops are reproducible.

    ``resize`` True scales each photo's shorter side to the crop size first (style training, as
    the paper's 256x256 inputs); False keeps native resolution (super-resolution needs real detail).
    ``resident``: a device on which each photo, once decoded and scaled, is kept and cropped (the
    same crops, no decoding per step: for data sets that fit in that device's memory).
    """

    def __init__(
        self, photos: list[Path], size: int, resize: bool, resident: torch.device | None = None
    ) -> None:
        self.photos, self.size, self.resize, self.resident = photos, size, resize, resident
        self._kept: dict[Path, torch.Tensor] = {}
        self._warned: set[Path] = set()

    def __len__(self) -> int:
        return len(self.photos)

    def __getitem__(self, item: tuple[int, str]) -> torch.Tensor:
        index, seed = item
        rng = random.Random(seed)
        # A photo that fails to decode is replaced by the next one, the same way every run.
        for offset in range(len(self.photos)):
            path = self.photos[(index + offset) % len(self.photos)]
            try:
                if self.resident is None:
                    return to_tensor(random_crop(open_rgb(path), self.size, rng, self.resize))
                return self._resident_crop(path, rng)
            except Exception as e:
                if path not in self._warned:
                    self._warned.add(path)
                    print(f"warning: skipping unreadable photo {path} ({e})", file=sys.stderr)
        raise DataError("none of the photos could be decoded")

    def _resident_crop(self, path: Path, rng: random.Random) -> torch.Tensor:
        """random_crop's crop (same random draws, same pixels) of the kept, scaled photo."""
        if path not in self._kept:
            cover = _cover(open_rgb(path), self.size, self.resize)
            self._kept[path] = to_tensor(cover).to(self.resident)
        image = self._kept[path]
        left, top, mirrored = _crop_draw(image.shape[2], image.shape[1], self.size, rng)
        crop = image[:, top : top + self.size, left : left + self.size]
        return crop.flip(2) if mirrored else crop


class ResumableSampler(Sampler):
    """An endless, reproducible sample order that can start at any step.

    Epoch ``e`` visits the photos in a permutation seeded by (seed, e); each global batch of
    ``batch_size * world_size`` items is split between ranks. Every item carries its own crop seed,
    so a resumed or data-parallel run sees exactly the crops of an uninterrupted one.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int,
        start_step: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.start_step, self.rank, self.world_size = start_step, rank, world_size
        self.steps_per_epoch = size // (batch_size * world_size)

    def __iter__(self) -> Iterator[tuple[int, str]]:
        step = self.start_step
        while True:
            epoch, offset = divmod(step, self.steps_per_epoch)
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
            for s in range(offset, self.steps_per_epoch):
                first = (s * self.world_size + self.rank) * self.batch_size
                for position in range(first, first + self.batch_size):
                    yield order[position], f"{self.seed}-{epoch}-{position}"
            step = (epoch + 1) * self.steps_per_epoch
