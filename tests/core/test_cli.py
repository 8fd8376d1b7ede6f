"""`python -m core`: the real command in a subprocess for whole runs, main() in-process for each error.

Each subprocess imports torch (seconds here), so the whole runs are few and cover much each; the
bad-input cases call the same main() in this process, one case each.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.cli import Progress, main
from core.images import load_image, save_image
from tests.core.test_images import bomb_png

REPO = Path(__file__).resolve().parents[2]
FAST = ["--backend", "torch"]  # no OpenVINO compilation: these tests check behaviour, not speed


def run_core(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "core", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def errors(stderr: str) -> list[str]:
    assert "Traceback" not in stderr
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def truncated(path: Path, photo: np.ndarray) -> Path:
    Image.fromarray(photo).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def rotated_jpeg(path: Path, photo: np.ndarray, orientation: int = 6) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(photo).save(path, exif=exif, quality=95)
    return path


def deep(photo: np.ndarray) -> np.ndarray:
    """A 16-bit version of the photo with detail below the 8-bit step."""
    return (
        photo.astype(np.uint16) * 257
        + np.arange(photo.size, dtype=np.uint16).reshape(photo.shape) % 200
    )


# ---------------------------------------------------------------- the real command, whole runs


def test_help_explains_every_option(tmp_path):
    stylize = run_core("stylize", "--help", cwd=tmp_path)
    upscale = run_core("upscale", "--help", cwd=tmp_path)
    assert stylize.returncode == 0 and upscale.returncode == 0
    shared = ["--output", "--format", "--quality", "--overwrite", "--device", "--backend"]
    shared += [
        "--precision",
        "--tile-size",
        "--max-megapixels",
        "--quiet",
        "never overwritten",
        "Exit status",
    ]
    for option in shared + ["--style", "--strength", "--preserve-colors", "--style-scale"]:
        assert option in stylize.stdout, option
    for option in shared + ["--model"]:
        assert option in upscale.stdout, option
    top = run_core("--help", cwd=tmp_path).stdout
    assert all(command in top for command in ("stylize", "upscale", "styles", "serve"))


def test_version_and_help_do_not_load_torch(tmp_path):
    version = run_core("--version", cwd=tmp_path)
    assert version.returncode == 0 and re.fullmatch(r"impasto \d+\.\d+\.\d+\n", version.stdout)
    code = "import sys; from core import cli; cli.build_parser().format_help(); print('torch' in sys.modules)"
    probe = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert probe.stdout.strip() == "False"


def test_serve_takes_its_options_from_the_server(tmp_path):
    result = run_core("serve", "--help", cwd=tmp_path)
    assert result.returncode == 0 and "--idle-timeout" in result.stdout


def test_folder_run_processes_good_images_and_reports_each_bad_one(models_dir, tmp_path, photo):
    photos = tmp_path / "photos"
    photos.mkdir()
    rotated_jpeg(photos / "phone.jpg", photo)  # stored 96x128, upright 128x96
    save_image(photos / "deep.png", deep(photo))
    rgba = np.dstack([photo, np.tile(np.arange(128, dtype=np.uint8) * 2, (96, 1))])
    save_image(photos / "cutout.png", rgba)
    Image.fromarray(photo).convert("CMYK").save(photos / "print.jpg")
    truncated(photos / "cut.png", photo)
    (photos / "notes.jpg").write_text("not a picture")
    bomb_png(photos / "bomb.png", 40000, 40000)
    (photos / "readme.txt").write_text("a sidecar file, not an input")

    result = run_core("stylize", "photos", "--style", "tiny", "-o", "styled", *FAST, cwd=tmp_path)

    assert result.returncode == 1
    assert sorted(errors(result.stderr)) == [
        "error: bomb.png: 40000x40000 is 1600 megapixels, over the 100-megapixel safety limit "
        "against decompression bombs; raise the limit only if you trust this file with "
        "--max-megapixels 1600",
        "error: cut.png: the file is truncated or corrupt (image file is truncated); "
        "re-export or re-download it",
        "error: notes.jpg: not an image file Impasto can read (use PNG, JPEG, WebP, TIFF or BMP)",
    ]
    assert "4 of 7 images done, 3 failed" in result.stderr
    assert "note: print.jpg: converted from CMYK to RGB" in result.stderr
    assert "readme" not in result.stderr
    styled = tmp_path / "styled"
    assert sorted(p.name for p in styled.iterdir()) == [
        "cutout.png",
        "deep.png",
        "phone.jpg",
        "print.jpg",
    ]
    phone = load_image(styled / "phone.jpg")
    assert phone.shape == (128, 96, 3) and phone.dtype == np.uint8  # EXIF rotation applied
    deep_out = load_image(styled / "deep.png")
    assert deep_out.shape == (96, 128, 3) and deep_out.dtype == np.uint16
    assert np.any(deep_out % 257 != 0)  # real 16-bit values, not 8-bit ones stretched
    cutout = load_image(styled / "cutout.png")
    assert cutout.shape == (96, 128, 4)
    np.testing.assert_array_equal(cutout[..., 3], rgba[..., 3])  # transparency kept
    assert not np.array_equal(cutout[..., :3], photo)  # and the image was restyled
    assert load_image(styled / "print.jpg").shape == (96, 128, 3)
    assert sorted(p.name for p in photos.iterdir())[0] == "bomb.png"  # inputs left in place


def test_upscale_gives_four_times_the_size_and_keeps_the_mode(models_dir, tmp_path, photo):
    gray_alpha = np.dstack([photo[:32, :48, :1], np.full((32, 48, 1), 200, np.uint8)])
    save_image(tmp_path / "small.png", gray_alpha)
    result = run_core("upscale", "small.png", "-o", "big.png", *FAST, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "small.png -> big.png" in result.stderr
    with Image.open(tmp_path / "big.png") as big:
        assert big.size == (192, 128) and big.mode == "LA"


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_without_partial_files(models_dir, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    # Enough images that the run is still going when the signal comes (a cached model does a
    # 384 px image in well under 0.1 s).
    for i in range(40):
        save_image(photos / f"p{i:02}.png", rng.integers(0, 256, (384, 384, 3), dtype=np.uint8))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "core", "stylize", "photos", "-s", "wide", "-o", "out", *FAST]
    job = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    first = job.stderr.readline()  # the first image is done: the second one is being computed
    assert "p00.png -> " in first, first + job.stderr.read()
    time.sleep(0.05)
    job.send_signal(signal.SIGINT)
    rest = job.stderr.read()
    assert job.wait(timeout=120) == 130
    assert re.search(r"interrupted: \d+ of 40 images done; no partial output file was left", rest)
    assert "Traceback" not in rest
    written = sorted((tmp_path / "out").iterdir())
    assert 1 <= len(written) < 40
    assert all(p.suffix == ".png" and not p.name.startswith(".") for p in written)
    for path in written:
        assert load_image(path).shape == (384, 384, 3)  # each file complete


# ---------------------------------------------------------------- main() in-process, one case each


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([*args, *FAST] if args[0] in ("stylize", "upscale") else list(args))
    out, err = capsys.readouterr()
    return code, out, err


def one_error(stderr: str) -> str:
    found = errors(stderr)
    assert len(found) == 1, stderr
    return found[0]


@pytest.fixture
def photo_file(tmp_path, photo) -> Path:
    return save_image(tmp_path / "photo.png", photo)


def test_stylize_one_file_keeps_size_and_mode(models_dir, tmp_path, photo_file, capsys):
    code, _, err = cli(
        capsys, "stylize", str(photo_file), "--style", "wide", "-o", str(tmp_path / "out.jpg")
    )
    assert code == 0, err
    with Image.open(tmp_path / "out.jpg") as out:
        assert out.size == (128, 96) and out.mode == "RGB" and out.format == "JPEG"


def test_default_output_goes_next_to_the_input(models_dir, photo_file, capsys):
    code, _, err = cli(capsys, "stylize", str(photo_file), "-s", "tiny", "--strength", "0.5")
    assert code == 0, err
    assert load_image(photo_file.with_name("photo-tiny.png")).shape == (96, 128, 3)


def test_unknown_style_lists_the_known_ones(models_dir, photo_file, capsys):
    code, _, err = cli(capsys, "stylize", str(photo_file), "--style", "monet")
    assert code == 2
    message = one_error(err)
    assert message.startswith("error: unknown style 'monet'; known: ")
    assert message.endswith("; see `python -m core styles`")
    known = set(re.findall(r"[\w-]+", message.split("known: ")[1]))
    assert {"tiny", "wide"} <= known and "sr" not in known  # styles only


def test_upscaler_is_not_a_style(models_dir, photo_file, capsys):
    code, _, err = cli(capsys, "stylize", str(photo_file), "--style", "sr")
    assert code == 2 and "'sr' is an upscaling model, not a style" in one_error(err)


def test_not_an_image(models_dir, tmp_path, capsys):
    (tmp_path / "cat.jpg").write_bytes(b"GIF? no: random bytes " * 10)
    code, _, err = cli(capsys, "stylize", str(tmp_path / "cat.jpg"), "-s", "tiny")
    assert code == 1 and one_error(err).startswith("error: cat.jpg: not an image file")
    assert not (tmp_path / "cat-tiny.jpg").exists()


@pytest.mark.parametrize("name", ["half.png", "half.jpg"])
def test_truncated_file(models_dir, tmp_path, photo, capsys, name):
    truncated(tmp_path / name, photo)
    code, _, err = cli(capsys, "stylize", str(tmp_path / name), "-s", "tiny")
    assert code == 1 and one_error(err).startswith(f"error: {name}: the file is truncated")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["models", name])  # nothing new


def test_decompression_bomb_names_the_limit_and_the_option(models_dir, tmp_path, capsys):
    bomb_png(tmp_path / "bomb.png", 20000, 20000)
    code, _, err = cli(capsys, "upscale", str(tmp_path / "bomb.png"))
    assert code == 1
    message = one_error(err)
    assert "400 megapixels, over the 100-megapixel safety limit" in message
    assert message.endswith("with --max-megapixels 400")


def test_pixel_limit_option_is_obeyed(models_dir, photo_file, capsys):
    code, _, err = cli(capsys, "stylize", str(photo_file), "-s", "tiny", "--max-megapixels", "0.01")
    assert code == 1 and "over the 0.01-megapixel safety limit" in one_error(err)
    code, _, err = cli(capsys, "stylize", str(photo_file), "-s", "tiny", "--max-megapixels", "0.02")
    assert code == 0, err


def test_cmyk_jpeg_is_converted_with_a_note(models_dir, tmp_path, photo, capsys):
    Image.fromarray(photo).convert("CMYK").save(tmp_path / "print.jpg")
    code, _, err = cli(capsys, "stylize", str(tmp_path / "print.jpg"), "-s", "tiny")
    assert code == 0 and "note: print.jpg: converted from CMYK to RGB" in err
    with Image.open(tmp_path / "print-tiny.jpg") as out:
        assert out.mode == "RGB" and out.size == (128, 96)


def test_16bit_png_to_jpeg_is_processed_in_8_bits_with_a_note(models_dir, tmp_path, photo, capsys):
    save_image(tmp_path / "deep.png", deep(photo))
    code, _, err = cli(
        capsys, "stylize", str(tmp_path / "deep.png"), "-s", "tiny", "--format", "jpg"
    )
    assert code == 0 and "16-bit image processed in 8 bits" in err
    assert load_image(tmp_path / "deep-tiny.jpg").dtype == np.uint8


def test_16bit_png_stays_16_bit(models_dir, tmp_path, photo, capsys):
    save_image(tmp_path / "deep.png", deep(photo[:32, :48]))
    code, _, err = cli(
        capsys, "upscale", str(tmp_path / "deep.png"), "-o", str(tmp_path / "big.png")
    )
    assert code == 0, err
    big = load_image(tmp_path / "big.png")
    assert big.dtype == np.uint16 and big.shape == (128, 192, 3)


def test_exif_rotation_is_applied(models_dir, tmp_path, photo, capsys):
    rotated_jpeg(tmp_path / "phone.jpg", photo, orientation=8)
    code, _, err = cli(
        capsys, "stylize", str(tmp_path / "phone.jpg"), "-s", "tiny", "-o", str(tmp_path / "up.png")
    )
    assert code == 0, err
    with Image.open(tmp_path / "up.png") as out:
        assert out.size == (96, 128)  # portrait, as the camera was held


def test_existing_output_is_kept_unless_overwrite(models_dir, tmp_path, photo_file, capsys):
    target = tmp_path / "out.png"
    target.write_bytes(b"my earlier work")
    code, _, err = cli(capsys, "stylize", str(photo_file), "-s", "tiny", "-o", str(target))
    assert (
        code == 1
        and one_error(err) == f"error: {target}: already exists; pass --overwrite to replace it"
    )
    assert target.read_bytes() == b"my earlier work"
    code, _, err = cli(
        capsys, "stylize", str(photo_file), "-s", "tiny", "-o", str(target), "--overwrite"
    )
    assert code == 0 and load_image(target).shape == (96, 128, 3)


def test_input_is_never_overwritten(models_dir, tmp_path, photo_file, capsys):
    """An output that is any input of the same run is refused before anything is written, by
    path, by a later input's default name, through a folder, a symlink or a hard link."""
    other = tmp_path / f"{photo_file.stem}-tiny.png"  # the first input's default output name
    other.write_bytes(photo_file.read_bytes())
    (tmp_path / "link.png").symlink_to(photo_file)
    os.link(photo_file, tmp_path / "hard.png")
    files = {p: p.read_bytes() for p in (photo_file, other)}
    for args in [
        [str(photo_file), "-o", str(photo_file)],
        [str(photo_file), str(other)],  # cat.png cat-tiny.png: the first result is the second input
        [str(photo_file), str(tmp_path), "-o", str(tmp_path)],
        [str(tmp_path), "-o", str(tmp_path)],
        [str(photo_file), "-o", str(tmp_path / "link.png")],
        [str(photo_file), "-o", str(tmp_path / "hard.png")],
    ]:
        code, _, err = cli(capsys, "stylize", *args, "-s", "tiny", "--overwrite")
        assert code == 2 and "would overwrite the input" in one_error(err), args
        assert {p: p.read_bytes() for p in files} == files, args
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [photo_file.name, other.name, "link.png", "hard.png", "models"]
    )


def test_transparency_cannot_go_to_jpeg(models_dir, tmp_path, photo, capsys):
    save_image(tmp_path / "cutout.png", np.dstack([photo, photo[..., :1]]))
    code, _, err = cli(
        capsys, "stylize", str(tmp_path / "cutout.png"), "-s", "tiny", "-o", str(tmp_path / "x.jpg")
    )
    assert code == 1 and "JPEG cannot store transparency" in one_error(err)


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.png"], "missing.png: no such file or folder"),
        (["photo.png", "-o", "out.psd"], "unknown output format '.psd'"),
        (["photo.png", "photo.png", "-o", "one.png"], "several inputs need an output folder"),
        (["photo.png", "--style-scale", "9"], "--style-scale 9 is out of range: use 0.1 to 4"),
        (["photo.png", "--tile-size", "8"], "tile size 8 is too small"),
    ],
)
def test_bad_command_lines_are_usage_errors(
    models_dir, photo_file, capsys, monkeypatch, args, message
):
    monkeypatch.chdir(photo_file.parent)
    code, _, err = cli(capsys, "stylize", *args, "-s", "tiny")
    assert code == 2 and message in one_error(err)


def test_out_of_range_strength_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["stylize", "x.png", "-s", "tiny", "--strength", "1.5"])
    assert exit_.value.code == 2 and "1.5 is not between 0 and 1" in capsys.readouterr().err


def test_styles_lists_name_display_name_kind_and_width(models_dir, capsys):
    code, out, _ = cli(capsys, "styles")
    rows = [line.split() for line in out.splitlines()]
    assert code == 0
    assert ["tiny", "Tiny", "style", "compact", "no"] in rows  # not calibrated for int8
    assert ["wide", "Wide", "style", "full", "no"] in rows
    assert ["sr", "Sr", "sr", "-", "-"] in rows
    shipped = next(r for r in rows if r and r[0] == "starry-night")
    assert shipped[:6] == ["starry-night", "Starry", "Night", "style", "compact", "yes"]
    assert "python -m trainer calibrate NAME" in out
    code, out, _ = cli(capsys, "styles", "--kind", "sr")
    assert "tiny" not in out and "sr" in out


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_shows_tiles_and_clears_for_messages():
    screen = Terminal()
    progress = Progress(3, quiet=False, stream=screen)
    progress.start(2, Path("photo.jpg"))
    progress.tiles(3, 4)
    progress.note("something worth knowing")
    shown = screen.getvalue()
    assert "[2/3] photo.jpg [##################------] 3/4 tiles" in shown
    assert shown.endswith("\r\033[Knote: something worth knowing\n")


def test_folder_without_output_goes_to_a_sibling_folder(models_dir, tmp_path, photo, capsys):
    (tmp_path / "photos").mkdir()
    save_image(tmp_path / "photos" / "a.jpg", photo)
    save_image(tmp_path / "photos" / "a.png", photo)
    code, _, err = cli(capsys, "stylize", str(tmp_path / "photos"), "-s", "tiny", "--format", "png")
    assert code == 1  # both inputs would become a.png: the second is refused, not overwritten
    assert "a.png: another input was already written to" in one_error(err)
    assert [p.name for p in (tmp_path / "photos-tiny").iterdir()] == ["a.png"]


def test_unwritable_output_folder_is_a_clear_error(models_dir, tmp_path, photo_file, capsys):
    (tmp_path / "notes.txt").write_text("a file where a folder is needed")
    target = tmp_path / "notes.txt" / "out.png"
    code, _, err = cli(capsys, "stylize", str(photo_file), "-s", "tiny", "-o", str(target))
    assert code == 1 and "notes.txt: cannot create the folder" in one_error(err)
