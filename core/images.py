"""Image files to and from numpy arrays: the pixel layouts the engine takes, read and written safely."""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import struct
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

# Larger images are refused unless the caller raises the limit: a small file can declare a huge size
# (a "decompression bomb") and exhaust memory. 100 MP opens any camera photo.
DEFAULT_MAX_PIXELS = 100_000_000

# Output formats by file suffix, with the channel counts each can store (1 gray, 2 gray+alpha, 3 RGB,
# 4 RGBA). WebP has no gray mode: gray is stored as equal RGB, which loses nothing.
FORMATS = {
    ".png": ("PNG", (1, 2, 3, 4)),
    ".jpg": ("JPEG", (1, 3)),
    ".jpeg": ("JPEG", (1, 3)),
    ".webp": ("WEBP", (1, 2, 3, 4)),
    ".tif": ("TIFF", (1, 2, 3, 4)),
    ".tiff": ("TIFF", (1, 2, 3, 4)),
    ".bmp": ("BMP", (1, 3)),
}
# Suffixes taken from a folder of inputs (other files in it, such as sidecars, are left alone).
INPUT_SUFFIXES = frozenset(FORMATS) | {".gif"}
DEFAULT_QUALITY = 92

# EXIF orientation tag value -> how to turn the stored pixels upright (rows, columns, channels).
_ORIENTATION = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}
_EXIF_ORIENTATION = 0x0112

# 16-bit PNG layouts that Pillow reads cut down to 8 bits; see _read_png16.
_PNG16 = {"RGB;16B": 3, "RGBA;16B": 4, "LA;16B": 2}


class ImageError(Exception):
    """An image cannot be read or written; the message names the file and says what to do."""


class ImageTooLargeError(ImageError):
    """An image has more pixels than the decompression-bomb limit allows."""

    def __init__(self, message: str, pixels: int):
        super().__init__(message)
        self.pixels = pixels


def load_image(
    path: str | Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS, notes: list[str] | None = None
) -> np.ndarray:
    """Read an image as HxWxC (C = 1..4) uint8, or uint16 for 16-bit files, turned upright by EXIF.

    ``max_pixels`` (None: no limit) guards against decompression bombs; conversions worth telling
    the user about (CMYK to RGB, first frame of an animation, ...) are appended to ``notes``.
    """
    path = Path(path)
    notes = notes if notes is not None else []
    name = path.name
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    try:
        # Pillow warns about oddities it works around (e.g. corrupt EXIF): not worth refusing for.
        # Silenced before the file is opened: opening already parses the EXIF of a JPEG.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with _pillow_limit(max_pixels), _open(path, max_pixels) as im:
                array = _read_png16(path, im, max_pixels)  # before EXIF, which may decode the image
                if array is None:
                    array = _pixels(im, name, notes)
                orientation = _orientation(im)
                if getattr(im, "n_frames", 1) > 1 and im.format != "MPO":  # MPO: a camera's preview
                    notes.append(f"{name}: has {im.n_frames} frames; only the first is used")
    except ImageError:
        raise
    except Image.DecompressionBombError:  # a frame or tile larger than the image declared
        raise ImageError(
            f"{name}: part of the image is over the {max_pixels / 1e6:g}-megapixel safety limit "
            "against decompression bombs; raise the limit only if you trust this file"
        ) from None
    except UnidentifiedImageError:
        raise ImageError(
            f"{name}: not an image file Impasto can read (use PNG, JPEG, WebP, TIFF or BMP)"
        ) from None
    except OSError as e:
        if e.errno is None:  # Pillow's own complaints ("image file is truncated", ...) have none
            raise ImageError(
                f"{name}: the file is truncated or corrupt ({e}); re-export or re-download it"
            ) from None
        raise ImageError(f"{name}: cannot read ({e.strerror})") from None
    except (SyntaxError, ValueError, EOFError, zlib.error) as e:
        raise ImageError(
            f"{name}: the file is truncated or corrupt ({e}); re-export or re-download it"
        ) from None
    upright = _ORIENTATION.get(orientation)
    return np.ascontiguousarray(upright(array)) if upright else array


@contextlib.contextmanager
def _pillow_limit(max_pixels: int | None) -> Iterator[None]:
    """Pillow's own decompression-bomb limit set to ours while an image is read.

    Pillow has one process-wide limit; the CLI reads one image at a time, so setting it is safe.
    """
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _open(path: Path, max_pixels: int | None) -> Image.Image:
    """Open an image lazily, refusing it with a clear message if it has too many pixels."""
    with _pillow_limit(None):  # ours, below, says which limit and what to do
        im = Image.open(path)
    width, height = im.size
    if max_pixels is not None and width * height > max_pixels:
        im.close()
        raise ImageTooLargeError(
            f"{path.name}: {width}x{height} is {width * height / 1e6:.0f} megapixels, over the "
            f"{max_pixels / 1e6:g}-megapixel safety limit against decompression bombs; "
            "raise the limit only if you trust this file",
            width * height,
        )
    return im


def _orientation(im: Image.Image) -> int:
    """EXIF orientation (1: upright); unreadable EXIF counts as upright rather than a bad image."""
    try:
        return int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:
        return 1


def _pixels(im: Image.Image, name: str, notes: list[str]) -> np.ndarray:
    """Decode an opened image into one of the engine's layouts."""
    mode = im.mode
    if mode.startswith("I;16"):
        array = np.asarray(im).astype(np.uint16)
    elif mode == "I":  # 32-bit integer; 16-bit PNGs arrive this way in older Pillow versions
        array = np.asarray(im)
        if array.min() < 0 or array.max() > 65535:
            notes.append(f"{name}: 32-bit integer samples clipped to 16 bits")
        array = np.clip(array, 0, 65535).astype(np.uint16)
    elif mode == "F":
        raise ImageError(
            f"{name}: 32-bit floating-point images are not supported; save it as a 16-bit PNG"
        )
    else:
        target = _TARGET_MODE.get(mode, "RGB")
        if mode == "P" and "transparency" in im.info:
            target = "RGBA"
        managed = _to_srgb(im, name, notes) if mode in ("RGB", "CMYK") else None
        if managed is not None:
            im = managed
        elif mode in ("CMYK", "LAB", "HSV"):
            notes.append(f"{name}: converted from {mode} to RGB")
        array = np.asarray(im if target == im.mode else im.convert(target))
    return array[..., None] if array.ndim == 2 else array


def _to_srgb(im: Image.Image, name: str, notes: list[str]) -> Image.Image | None:
    """The image in sRGB by its embedded colour profile; None if it has none or is already sRGB.

    Networks work on sRGB-like values and outputs carry no profile, so a CMYK print file or a wide-
    gamut (Adobe RGB, Display P3) photo would come out with wrong colours if taken as it is.
    """
    icc = im.info.get("icc_profile")
    if not icc:
        return None
    try:
        from PIL import ImageCms

        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        description = ImageCms.getProfileDescription(profile).strip()
        if description.lower().startswith("srgb"):  # "sRGB IEC61966-2.1", "sRGB built-in", ...
            return None
        srgb = ImageCms.createProfile("sRGB")
        converted = ImageCms.profileToProfile(im, profile, srgb, outputMode="RGB")
    except Exception:  # no colour management in this Pillow, or a profile it cannot apply
        notes.append(f"{name}: its colour profile could not be applied; colours taken as they are")
        return None
    notes.append(f"{name}: converted from its colour profile ({description}) to sRGB")
    return converted


_TARGET_MODE = {
    "1": "L",
    "L": "L",
    "LA": "LA",
    "La": "LA",
    "P": "RGB",
    "PA": "RGBA",
    "RGB": "RGB",
    "RGBA": "RGBA",
    "RGBa": "RGBA",
    "RGBX": "RGB",
}


def _read_png16(path: Path, im: Image.Image, max_pixels: int | None) -> np.ndarray | None:
    """All 16 bits of an RGB, RGBA or gray+alpha PNG, which Pillow's image modes cut to 8 bits.

    Pillow's own PNG decoder does the work (filters, interlacing, checksums): once keeping the
    high byte of each sample (in ``im`` itself, so its EXIF is then read without another decode)
    and once the low byte; gray+alpha is read once, all bytes kept. None for any other image.
    """
    if im.format != "PNG" or len(im.tile) != 1:
        return None
    tile = im.tile[0]
    channels = _PNG16.get(tile[3])
    if channels is None:
        return None

    def decode(image: Image.Image, rawmode: str) -> np.ndarray:
        image.tile = [(tile[0], tile[1], tile[2], rawmode)]
        return np.asarray(image).astype(np.uint16)

    if channels == 2:
        # "RGBA" reads the same 4 bytes per pixel unchanged: gray high, gray low, alpha high, low.
        raw = decode(im, "RGBA")
        return (raw[..., 0::2] << 8) | raw[..., 1::2]
    high = decode(im, tile[3])
    with _open(path, max_pixels) as again:
        low = decode(again, tile[3].replace("16B", "16L"))  # the same samples, bytes swapped
    return (high << 8) | low


def output_format(path: str | Path) -> str:
    """Pillow format name for an output path, from its suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        known = ", ".join(sorted(FORMATS))
        raise ImageError(f"{Path(path).name}: unknown output format {suffix!r}; use one of {known}")
    return FORMATS[suffix][0]


def check_writable(path: str | Path, channels: int) -> None:
    """Raise ImageError if an image with ``channels`` channels cannot be saved at ``path``."""
    output_format(path)
    fmt, allowed = FORMATS[Path(path).suffix.lower()]
    if channels not in allowed:
        raise ImageError(
            f"{Path(path).name}: {fmt} cannot store transparency; save as .png, .webp or .tif"
        )


def holds_16_bits(path: str | Path) -> bool:
    """Whether the output format for ``path`` keeps 16 bits per channel (only PNG does here)."""
    return output_format(path) == "PNG"


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Round uint16 or float [0,1] samples to uint8; uint8 passes through."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    return (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_image(
    path: str | Path,
    array: np.ndarray,
    *,
    quality: int = DEFAULT_QUALITY,
    notes: list[str] | None = None,
) -> Path:
    """Write HxWxC pixels atomically (a temporary file renamed into place), format from the suffix.

    uint16 is kept in PNG and rounded to 8 bits elsewhere (with a note); ``quality`` (1-100)
    applies to JPEG and WebP.
    """
    path = Path(path)
    notes = notes if notes is not None else []
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise ImageError(f"{path.name}: cannot save pixels of shape {array.shape}")
    if array.dtype not in (np.uint8, np.uint16, np.float32, np.float64):
        raise ImageError(f"{path.name}: cannot save pixels of type {array.dtype}")
    check_writable(path, array.shape[2])
    fmt = output_format(path)
    if array.dtype == np.uint16 and fmt != "PNG":
        notes.append(f"{path.name}: {fmt} holds 8 bits per channel; the 16-bit result was rounded")
    if array.dtype != np.uint16 or fmt != "PNG":
        array = to_uint8(array)
    if array.dtype == np.uint16:
        return _write_atomically(path, lambda f: f.write(_png16_bytes(array)))
    image = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
    options = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    if fmt == "JPEG":
        options["subsampling"] = "4:4:4"  # painted texture has fine colour detail worth keeping
    return _write_atomically(path, lambda f: image.save(f, format=fmt, **options))


def _write_atomically(path: Path, write) -> Path:
    """Call ``write(file)`` on a hidden temporary file next to ``path``, then rename it into place.

    An error or Ctrl-C leaves no partial file behind and any existing file at ``path`` unharmed.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    try:
        # os.open with 0o666 gives the file the user's normal permissions (umask), unlike mkstemp.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except OSError as e:
        raise ImageError(f"{path}: cannot write ({e.strerror or e})") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _png16_bytes(array: np.ndarray) -> bytes:
    """A 16-bit PNG of HxWxC uint16 pixels (Pillow writes 16 bits for gray only)."""
    height, width, channels = array.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = array.astype(">u2").reshape(height, -1).view(np.uint8)
    # "Up" filter (each byte minus the one above) compresses photos far better than none.
    up = rows.copy()
    up[1:] -= rows[:-1]
    scanlines = np.concatenate([np.full((height, 1), 2, np.uint8), up], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(scanlines.tobytes(), 6))
        + chunk(b"IEND", b"")
    )
