"""Image files in and out: every layout the engine takes, 16 bits kept, bad files refused clearly."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from core.images import (
    ImageError,
    ImageTooLargeError,
    _write_atomically,
    load_image,
    save_image,
)


def ramp(height: int, width: int, channels: int, dtype=np.uint8) -> np.ndarray:
    """Distinct, structured values per pixel and channel (so a flip or swap is visible)."""
    top = np.iinfo(dtype).max
    y, x, c = np.mgrid[0:height, 0:width, 0:channels]
    return ((y * 7919 + x * 104729 + c * 15485863) % (top + 1)).astype(dtype)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and message
    return message


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("suffix", [".png", ".tif", ".webp"])
def test_8bit_round_trip_keeps_pixels_and_channels(tmp_path, channels, suffix):
    image = ramp(20, 30, channels)
    path = save_image(tmp_path / f"x{suffix}", image, quality=100)
    loaded = load_image(path)
    if suffix == ".webp":  # lossy even at quality 100, and gray comes back as RGB
        assert loaded.shape == (20, 30, {1: 3, 2: 4}.get(channels, channels))
        return
    assert loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded, image)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16bit_png_round_trip_keeps_all_16_bits(tmp_path, channels):
    image = ramp(17, 23, channels, np.uint16)
    path = save_image(tmp_path / "deep.png", image)
    loaded = load_image(path)
    assert loaded.dtype == np.uint16
    np.testing.assert_array_equal(loaded, image)


def test_16bit_png_high_bytes_agree_with_pillow(tmp_path):
    # An independent check of our 16-bit writer and reader: Pillow reads the same file as 8 bits.
    image = ramp(9, 11, 3, np.uint16)
    path = save_image(tmp_path / "deep.png", image)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), (image >> 8).astype(np.uint8))


def test_16bit_gray_png_written_by_pillow_is_read_as_16_bits(tmp_path):
    image = ramp(8, 9, 1, np.uint16)[..., 0]
    Image.fromarray(image).save(tmp_path / "gray16.png")  # mode I;16
    np.testing.assert_array_equal(load_image(tmp_path / "gray16.png")[..., 0], image)


def test_16bit_saved_as_jpeg_is_rounded_to_8_bits_with_a_note(tmp_path):
    image = np.full((8, 8, 3), 257 * 200, np.uint16)
    notes: list[str] = []
    save_image(tmp_path / "x.jpg", image, notes=notes)
    loaded = load_image(tmp_path / "x.jpg")
    assert loaded.dtype == np.uint8 and abs(int(loaded.mean()) - 200) <= 1
    assert any("8 bits" in n for n in notes)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_pillow(tmp_path, orientation):
    stored = ramp(6, 10, 3)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "phone.png"
    Image.fromarray(stored).save(path, exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)))
    loaded = load_image(path)
    np.testing.assert_array_equal(loaded, expected)
    assert loaded.shape == ((10, 6, 3) if orientation >= 5 else (6, 10, 3))


def test_exif_rotation_turns_a_phone_photo_upright(tmp_path):
    # Orientation 6: the camera was turned clockwise; the stored top-left pixel belongs top-right.
    stored = np.zeros((4, 6, 3), np.uint8)
    stored[0, 0] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif, quality=100)
    loaded = load_image(tmp_path / "phone.jpg")
    assert loaded.shape == (6, 4, 3)
    assert loaded[0, -1].mean() > 150 and loaded[-1, 0].mean() < 50


def test_exif_rotation_applies_to_16_bits(tmp_path):
    stored = ramp(5, 7, 3, np.uint16)
    save_image(tmp_path / "deep.png", stored)
    # Add an eXIf chunk with orientation 8 before IEND (our writer does not write EXIF).
    exif = Image.Exif()
    exif[0x0112] = 8
    data = exif.tobytes()[6:] if exif.tobytes().startswith(b"Exif") else exif.tobytes()
    raw = (tmp_path / "deep.png").read_bytes()
    (tmp_path / "deep.png").write_bytes(raw[:-12] + png_chunk(b"eXIf", data) + raw[-12:])
    loaded = load_image(tmp_path / "deep.png")
    assert loaded.dtype == np.uint16
    np.testing.assert_array_equal(loaded, np.rot90(stored, 1))


def test_cmyk_jpeg_is_converted_to_rgb_with_a_note(tmp_path):
    cmyk = Image.new("CMYK", (16, 12), (0, 255, 255, 0))  # pure red ink: no cyan, full M and Y
    cmyk.save(tmp_path / "print.jpg", quality=95)
    notes: list[str] = []
    loaded = load_image(tmp_path / "print.jpg", notes=notes)
    assert loaded.shape == (12, 16, 3)
    red, green, blue = loaded.reshape(-1, 3).mean(0)
    assert red > 200 and green < 60 and blue < 60
    assert any("CMYK" in n for n in notes)


def test_palette_with_transparency_becomes_rgba(tmp_path):
    image = Image.new("P", (8, 8), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(0, (0, 0, 4, 8))
    image.save(tmp_path / "icon.png", transparency=0)
    loaded = load_image(tmp_path / "icon.png")
    assert loaded.shape == (8, 8, 4)
    assert loaded[0, 0, 3] == 0 and tuple(loaded[0, 7]) == (255, 0, 0, 255)


def test_palette_without_transparency_becomes_rgb(tmp_path):
    Image.new("RGB", (8, 8), (10, 200, 30)).convert("P").save(tmp_path / "flat.gif")
    loaded = load_image(tmp_path / "flat.gif")
    assert loaded.shape == (8, 8, 3)


def test_bilevel_becomes_gray(tmp_path):
    Image.new("1", (8, 8), 1).save(tmp_path / "bw.png")
    loaded = load_image(tmp_path / "bw.png")
    assert loaded.shape == (8, 8, 1) and loaded.dtype == np.uint8 and loaded.min() == 255


def test_animation_uses_the_first_frame_with_a_note(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    notes: list[str] = []
    loaded = load_image(tmp_path / "anim.gif", notes=notes)
    assert loaded[..., 0].mean() > 200 and any("2 frames" in n for n in notes)


def test_not_an_image_is_refused(tmp_path):
    (tmp_path / "notes.jpg").write_text("shopping list: eggs, paint")
    with pytest.raises(ImageError) as error:
        load_image(tmp_path / "notes.jpg")
    assert "notes.jpg: not an image file" in one_line(error)


@pytest.mark.parametrize("fmt, suffix", [("PNG", ".png"), ("JPEG", ".jpg")])
def test_truncated_file_is_refused_not_half_read(tmp_path, fmt, suffix):
    path = tmp_path / f"cut{suffix}"
    Image.fromarray(ramp(64, 64, 3)).save(path, fmt)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ImageError) as error:
        load_image(path)
    assert f"cut{suffix}: the file is truncated or corrupt" in one_line(error)


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(ImageError) as error:
        load_image(tmp_path / "gone.png")
    assert "no such file" in one_line(error)


def bomb_png(path: Path, width: int, height: int) -> None:
    """A tiny PNG file that declares a huge image (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + png_chunk(b"IEND", b"")
    )


def test_decompression_bomb_is_refused_naming_the_limit(tmp_path):
    bomb_png(tmp_path / "bomb.png", 40000, 40000)
    with pytest.raises(ImageTooLargeError) as error:
        load_image(tmp_path / "bomb.png")
    message = one_line(error)
    assert "40000x40000" in message and "100-megapixel" in message and "raise the limit" in message
    assert error.value.pixels == 40000 * 40000


def test_pixel_limit_can_be_raised_or_lowered(tmp_path):
    save_image(tmp_path / "x.png", ramp(100, 100, 3))
    with pytest.raises(ImageTooLargeError):
        load_image(tmp_path / "x.png", max_pixels=9999)
    assert load_image(tmp_path / "x.png", max_pixels=10000).shape == (100, 100, 3)
    assert load_image(tmp_path / "x.png", max_pixels=None).shape == (100, 100, 3)


def test_jpeg_refuses_transparency_before_writing(tmp_path):
    with pytest.raises(ImageError) as error:
        save_image(tmp_path / "x.jpg", ramp(8, 8, 4))
    assert "JPEG cannot store transparency" in one_line(error)
    assert list(tmp_path.iterdir()) == []


def test_unknown_output_suffix_is_refused(tmp_path):
    with pytest.raises(ImageError) as error:
        save_image(tmp_path / "x.psd", ramp(8, 8, 3))
    assert "unknown output format '.psd'" in one_line(error)


def test_interrupted_write_leaves_no_partial_file_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "out.png"
    target.write_bytes(b"previous result")

    def write_then_interrupt(f):
        f.write(b"half an image")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _write_atomically(target, write_then_interrupt)
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]
    assert target.read_bytes() == b"previous result"


def test_saved_file_gets_normal_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        path = save_image(tmp_path / "x.png", ramp(4, 4, 3))
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644


def test_write_into_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ImageError) as error:
        save_image(tmp_path / "nowhere" / "x.png", ramp(4, 4, 3))
    assert "cannot write" in one_line(error)


def linear_rgb_profile() -> bytes:
    """A minimal ICC v2 display profile: sRGB primaries with a linear (gamma 1) tone curve."""

    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ \0\0\0\0" + s15(x) + s15(y) + s15(z)

    text = b"Linear test RGB\0"
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + b"\0" * 78
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, 0x0100)  # one entry: gamma 1.0
    tags = [
        (b"desc", desc),
        (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz(0.4361, 0.2225, 0.0139)),
        (b"gXYZ", xyz(0.3851, 0.7169, 0.0971)),
        (b"bXYZ", xyz(0.1431, 0.0606, 0.7141)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    offset, table, data = 128 + 4 + 12 * len(tags), b"", b""
    for signature, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    header = struct.pack(">I4sI", offset + len(data), b"\0" * 4, 0x02100000)
    header += b"mntrRGB XYZ " + b"\0" * 12 + b"acsp" + b"\0" * 28
    header += s15(0.9642) + s15(1.0) + s15(0.8249) + b"\0" * 48
    return header + struct.pack(">I", len(tags)) + table + data


def test_colour_profile_is_applied_to_give_srgb(tmp_path):
    # Mid-grey 128 in linear light is 188 in sRGB: taken as it is, the image would look too dark.
    Image.new("RGB", (4, 4), (128, 128, 128)).save(
        tmp_path / "linear.png", icc_profile=linear_rgb_profile()
    )
    notes: list[str] = []
    loaded = load_image(tmp_path / "linear.png", notes=notes)
    assert np.all(np.abs(loaded.astype(int) - 188) <= 1)
    assert notes == ["linear.png: converted from its colour profile (Linear test RGB) to sRGB"]


def test_srgb_profile_leaves_pixels_as_they_are(tmp_path):
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    image = ramp(6, 8, 3)
    Image.fromarray(image).save(tmp_path / "srgb.png", icc_profile=srgb)
    notes: list[str] = []
    np.testing.assert_array_equal(load_image(tmp_path / "srgb.png", notes=notes), image)
    assert notes == []


def test_unusable_colour_profile_is_noted_not_fatal(tmp_path):
    from PIL import ImageCms

    lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()  # not an RGB profile
    image = ramp(6, 8, 3)
    Image.fromarray(image).save(tmp_path / "odd.png", icc_profile=lab)
    notes: list[str] = []
    np.testing.assert_array_equal(load_image(tmp_path / "odd.png", notes=notes), image)
    assert notes == ["odd.png: its colour profile could not be applied; colours taken as they are"]


ADAM7 = [
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
]


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_interlaced_16bit_png_keeps_all_16_bits(tmp_path, channels):
    # Some programs write interlaced (Adam7) PNGs: seven sub-images, each its own scanlines.
    image = ramp(13, 11, channels, np.uint16)
    data = b""
    for x0, y0, dx, dy in ADAM7:
        sub = image[y0::dy, x0::dx]
        if sub.size:
            rows = sub.astype(">u2").reshape(sub.shape[0], -1).view(np.uint8)
            data += np.concatenate([np.zeros((len(rows), 1), np.uint8), rows], axis=1).tobytes()
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    header = struct.pack(">IIBBBBB", 11, 13, 16, color_type, 0, 0, 1)
    (tmp_path / "adam7.png").write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(data))
        + png_chunk(b"IEND", b"")
    )
    loaded = load_image(tmp_path / "adam7.png")
    assert loaded.dtype == np.uint16
    np.testing.assert_array_equal(loaded, image)
