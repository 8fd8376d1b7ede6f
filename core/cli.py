"""The `python -m core` command line: stylize and upscale image files and folders, list models, serve."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core import __version__
from core.images import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_QUALITY,
    FORMATS,
    INPUT_SUFFIXES,
    ImageError,
    ImageTooLargeError,
    check_writable,
    holds_16_bits,
    load_image,
    output_format,
    save_image,
    to_uint8,
)

if TYPE_CHECKING:
    from core.engine import Engine

# Transforms one image, reporting progress(tiles_done, tiles_total).
Transform = Callable[[np.ndarray, Callable[[int, int], None]], np.ndarray]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
OUTPUT_FORMATS = ("png", "jpg", "webp", "tif", "bmp")

SERVE_DESCRIPTION = "Run the local inference server used by the GIMP plug-in."
EPILOG = """\
Inputs are image files or folders (the images directly inside a folder are processed; other files are
left alone). Outputs: with one input file, -o names the output file (its suffix sets the format) or a
folder; with several inputs or a folder, -o is a folder, created if needed, and each result keeps its
input's name. Without -o, results go next to each input as NAME-{tag}.EXT (a folder input gets a
sibling folder FOLDER-{tag}). An input is never overwritten: a run in which an output would be
one of its inputs is refused before anything is written. An existing output is kept unless
--overwrite is given. Files are written under a temporary name and renamed when complete, so Ctrl-C
never leaves a half-written file. 16-bit PNGs stay 16-bit when the output is PNG.

Exit status: 0 all done, 1 some images failed (each is reported, the others are processed),
2 bad options or unknown model, 130 interrupted."""


class UsageError(Exception):
    """The command line cannot work as given (exit status 2)."""


# ---------------------------------------------------------------- argument parsing


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def _positive(kind: type[int] | type[float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text} is not a positive number")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its error messages
    return parse


def megapixels(text: str) -> float:
    """An image size limit in megapixels: a finite number, 0 or more (also `serve`'s option)."""
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a number of megapixels (0 or more)")
    return value


def _add_job_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by stylize and upscale: inputs, outputs, hardware and safety limits."""
    parser.add_argument(
        "inputs", nargs="+", type=Path, metavar="INPUT", help="image files or folders"
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="OUT",
        help="output file (one input) or folder (see below); default: next to each input",
    )
    parser.add_argument(
        "--format",
        choices=OUTPUT_FORMATS,
        help="output format for folder outputs and default names (default: the input's format, "
        "PNG for formats Impasto cannot write); an -o file name's suffix sets its own format",
    )
    parser.add_argument(
        "--quality",
        type=int,
        choices=range(1, 101),
        default=DEFAULT_QUALITY,
        metavar="1-100",
        help=f"JPEG and WebP quality (default {DEFAULT_QUALITY})",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing output files (inputs are never overwritten)",
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cuda", "mps", "cpu"),
        default="auto",
        help="where to compute (default auto: a CUDA or Apple GPU when there is one, else the CPU)",
    )
    parser.add_argument(
        "--backend",
        choices=("auto", "openvino", "torch"),
        default="auto",
        help="inference runtime on the CPU (default auto: OpenVINO when installed, else PyTorch)",
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "fp16", "bf16", "int8"),
        default="auto",
        help="number format of the computation (default auto: fp16 on CUDA; with OpenVINO on the "
        "CPU int8 for style models calibrated for it, 2-3x faster than fp32 and within ~3 levels "
        "of it on average; else bf16 where the CPU has it, else fp32); fp32 is the most exact",
    )
    parser.add_argument(
        "--tile-size",
        type=_positive(int),
        metavar="PX",
        help="process big images in tiles of at most PX x PX pixels to bound memory "
        "(default: 1024 on the CPU and MPS, 2048 on CUDA; about 1.4x that for compact style "
        "models, which need half the memory per pixel; smaller tiles are tried by themselves "
        "when memory runs out)",
    )
    parser.add_argument(
        "--max-megapixels",
        type=megapixels,
        default=DEFAULT_MAX_PIXELS / 1e6,
        metavar="MP",
        help=f"refuse larger images, a guard against decompression bombs "
        f"(default {DEFAULT_MAX_PIXELS / 1e6:g}; 0: no limit)",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="print only errors (no progress or notes)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The `python -m core` parser; `serve` gets its options from core.server when it is used."""
    parser = argparse.ArgumentParser(
        prog="python -m core",
        description="Impasto: real-time neural style transfer and x4 super-resolution.",
    )
    parser.add_argument("--version", action="version", version=f"impasto {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    formatter = argparse.RawDescriptionHelpFormatter

    stylize = commands.add_parser(
        "stylize",
        help="restyle images with a style model",
        description="Restyle images with a trained style model (see `python -m core styles`).",
        epilog=EPILOG.format(tag="STYLE"),
        formatter_class=formatter,
    )
    stylize.add_argument(
        "-s",
        "--style",
        required=True,
        metavar="NAME",
        help="style model name or path to a .impasto file",
    )
    stylize.add_argument(
        "--strength",
        type=_fraction,
        default=1.0,
        metavar="0-1",
        help="blend of the styled result with the original: 1 full style, 0 the original (default 1)",
    )
    stylize.add_argument(
        "--preserve-colors",
        "--preserve-colours",
        action="store_true",
        help="keep the original colours and take only the style's brush strokes (luminance)",
    )
    stylize.add_argument(
        "--style-scale",
        type=_positive(float),
        default=1.0,
        metavar="F",
        help="size of the style's strokes: the image is styled at F times its size and brought back, "
        "so 0.5 gives strokes twice as large, 2 finer ones (default 1)",
    )
    _add_job_options(stylize)

    upscale = commands.add_parser(
        "upscale",
        help="enlarge images x4 with a super-resolution model",
        description="Enlarge images four times in width and height with a super-resolution model.",
        epilog=EPILOG.format(tag="x4"),
        formatter_class=formatter,
    )
    upscale.add_argument(
        "-m",
        "--model",
        metavar="NAME",
        help="upscaling model name or path (default: the first installed one, by name)",
    )
    _add_job_options(upscale)

    styles = commands.add_parser(
        "styles",
        help="list installed style and upscaling models",
        description="List installed models: name, display name, kind, network width, description.",
    )
    styles.add_argument("--kind", choices=("style", "sr"), help="only this kind of model")

    prepare = commands.add_parser(
        "prepare",
        help="prepare models for this computer, so their first use is not a wait",
        description="Convert models for this computer's runtime (OpenVINO on the CPU) and keep "
        "the result in the user cache folder; stylize and the GIMP plug-in do it on first use "
        "otherwise, which takes a few seconds per model. Nothing to do with PyTorch.",
    )
    prepare.add_argument(
        "models", nargs="*", metavar="MODEL", help="model names or paths (default: all installed)"
    )
    prepare.add_argument(
        "--precision",
        choices=("auto", "fp32", "fp16", "bf16", "int8"),
        default="auto",
        help="the precision they will run in (default auto, as stylize and upscale)",
    )

    commands.add_parser(
        "serve",
        help="run the local server the GIMP plug-in talks to",
        description=SERVE_DESCRIPTION,
        add_help=False,  # core.server adds its options (and -h) when the command is used
    )
    return parser


# ---------------------------------------------------------------- planning outputs


@dataclass
class Job:
    """One input image and where its result goes."""

    source: Path
    target: Path


def _suffix(source: Path, fmt: str | None) -> str:
    if fmt:
        return f".{fmt}"
    suffix = source.suffix.lower()
    return source.suffix if suffix in FORMATS else ".png"


def _images_in(folder: Path) -> list[Path]:
    try:
        names = list(folder.iterdir())
    except OSError as e:
        raise UsageError(f"{folder}: cannot list the folder ({e.strerror})") from None
    return sorted(
        p
        for p in names
        if p.is_file() and p.suffix.lower() in INPUT_SUFFIXES and not p.name.startswith(".")
    )


def _is_folder_name(path: Path) -> bool:
    return path.is_dir() or str(path).endswith((os.sep, "/")) or not path.suffix


def plan_outputs(inputs: list[Path], output: Path | None, tag: str, fmt: str | None) -> list[Job]:
    """Pair each input image with its output path, following the rules in the --help epilog; an
    output that is an input of the same run is refused before anything is written."""
    jobs = _pair(inputs, output, tag, fmt)
    _refuse_inputs_as_outputs(jobs)
    return jobs


def _pair(inputs: list[Path], output: Path | None, tag: str, fmt: str | None) -> list[Job]:
    for source in inputs:
        if not source.exists():
            raise UsageError(f"{source}: no such file or folder")
    several = len(inputs) > 1 or any(p.is_dir() for p in inputs)
    if output is not None and not _is_folder_name(output):
        try:
            output_format(output)
        except ImageError as e:
            raise UsageError(f"{e}, or give a folder") from None
        if several:
            raise UsageError(f"{output}: several inputs need an output folder, not a file name")
        if fmt and output_format(output) != output_format(f"x.{fmt}"):
            raise UsageError(f"--format {fmt} contradicts the output file name {output.name}")
        return [Job(inputs[0], output)]
    jobs = []
    for source in inputs:
        if source.is_dir():
            folder = output or source.resolve().with_name(f"{source.resolve().name}-{tag}")
            jobs += [Job(p, folder / (p.stem + _suffix(p, fmt))) for p in _images_in(source)]
        else:
            folder = output or source.parent
            name = source.stem + ("" if output else f"-{tag}") + _suffix(source, fmt)
            jobs.append(Job(source, folder / name))
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"{folder}: exists and is not a folder")
    if not jobs:
        raise UsageError("no images found in the given folders")
    return jobs


def _file_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of an existing file: the same file under another name or a hard link."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _refuse_inputs_as_outputs(jobs: list[Job]) -> None:
    """Refuse, before anything is written, an output that is an input of the same run (by resolved
    path or by inode), --overwrite or not: writing it would destroy an image not yet read."""
    inputs = {job.source.resolve(): job.source for job in jobs}
    inputs.update({_file_id(job.source): job.source for job in jobs})
    for job in jobs:
        source = inputs.get(job.target.resolve()) or inputs.get(_file_id(job.target) or ())
        if source is not None:
            raise UsageError(
                f"{job.target}: the output for {job.source.name} would overwrite the input "
                f"{source}; choose another -o or output folder"
            )


# ---------------------------------------------------------------- progress on stderr


class Progress:
    """Per-image lines and, on a terminal, a live tile bar; notes and errors always get a line."""

    def __init__(self, total: int, quiet: bool, stream=None):
        self.total = total
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.live = not quiet and self.stream.isatty()
        self.prefix = ""
        self.started = 0.0
        self.dirty = False  # a live line is on screen

    def start(self, index: int, source: Path) -> None:
        self.prefix = f"[{index}/{self.total}] {source.name}" if self.total > 1 else source.name
        self.started = time.monotonic()
        if self.live:
            self._live(f"{self.prefix} ...")

    def tiles(self, done: int, total: int) -> None:
        if self.live and total > 0:
            width = 24
            filled = round(width * done / total)
            self._live(
                f"{self.prefix} [{'#' * filled}{'-' * (width - filled)}] {done}/{total} tiles"
            )

    def done(self, target: Path) -> None:
        if not self.quiet:
            self.line(f"{self.prefix} -> {target} ({time.monotonic() - self.started:.1f} s)")

    def note(self, text: str) -> None:
        if not self.quiet:
            self.line(f"note: {text}")

    def error(self, text: str) -> None:
        self.line(f"error: {text}")

    def line(self, text: str) -> None:
        self.clear()
        print(text, file=self.stream, flush=True)

    def clear(self) -> None:
        if self.dirty:
            self.stream.write("\r\033[K")
            self.dirty = False

    def _live(self, text: str) -> None:
        self.stream.write(f"\r\033[K{text}")
        self.stream.flush()
        self.dirty = True


# ---------------------------------------------------------------- commands


def _engine(args: argparse.Namespace) -> Engine:
    """The engine for the chosen device, backend and tile size; torch loads here, not for --help."""
    from core.engine import Engine, EngineError

    try:
        engine = Engine(
            device=getattr(args, "device", "auto"),
            backend=getattr(args, "backend", "auto"),
            tile_size=getattr(args, "tile_size", None),
            precision=args.precision,
        )
    except EngineError as e:
        raise UsageError(str(e)) from None
    if not getattr(args, "quiet", False):
        engine.notify = _say
    return engine


def _say(text: str) -> None:
    """A line on stderr, replacing a live progress line there."""
    print(f"\r\033[K{text}" if sys.stderr.isatty() else text, file=sys.stderr, flush=True)


def _check_model(engine: Engine, model: str, kind: str) -> None:
    """Refuse, before any image is read, a model that is missing, unreadable or of the wrong kind."""
    from core.engine import EngineError
    from core.registry import UnknownModelError, find_model

    hint = "see `python -m core styles`"
    try:
        info = engine.model_info(model)
    except UnknownModelError as unknown:
        message = str(unknown)
        try:
            find_model(model, kind)  # its message lists only the models of this kind
        except UnknownModelError as of_kind:
            message = str(of_kind)
        raise UsageError(f"{message}; {hint}") from None
    except EngineError as e:
        raise UsageError(f"{e}; {hint}") from None
    if info.kind != kind:
        raise UsageError(
            f"{model!r} is an upscaling model, not a style; use `python -m core upscale`"
            if kind == "style"
            else f"{model!r} is a style model, not an upscaler; use `python -m core stylize`"
        )


def _process(args: argparse.Namespace, jobs: list[Job], run: Transform) -> int:
    """Shared loop of stylize and upscale; ``run(image, tiles_progress)`` transforms one image.

    Ctrl-C (KeyboardInterrupt) stops between two operations of the network, at once; files are
    written atomically, so there is never a half-written one.
    """
    from core.engine import EngineError

    progress = Progress(len(jobs), args.quiet)
    max_pixels = int(args.max_megapixels * 1e6) or None
    failed = done = 0
    written: set[Path] = set()
    try:
        for index, job in enumerate(jobs, 1):
            progress.start(index, job.source)
            try:
                _process_one(args, job, run, progress, max_pixels, written)
                done += 1
            except ImageTooLargeError as e:
                failed += 1
                progress.error(f"{e} with --max-megapixels {-(-e.pixels // 1_000_000)}")
            except (ImageError, EngineError) as e:
                failed += 1
                progress.error(str(e))
    except KeyboardInterrupt:
        progress.clear()
        print(
            f"interrupted: {done} of {len(jobs)} images done; no partial output file was left",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    if failed and len(jobs) > 1:
        progress.line(f"{done} of {len(jobs)} images done, {failed} failed")
    return EXIT_FAILED if failed else EXIT_OK


def _process_one(
    args: argparse.Namespace,
    job: Job,
    run: Transform,
    progress: Progress,
    max_pixels: int | None,
    written: set[Path],
) -> None:
    """Load, transform and save one image; raises ImageError or EngineError for this image only."""
    source, target = job.source, job.target
    if target.resolve() in written:
        raise ImageError(f"{source.name}: another input was already written to {target}")
    if target.exists() and not args.overwrite:
        raise ImageError(f"{target}: already exists; pass --overwrite to replace it")
    notes: list[str] = []
    image = load_image(source, max_pixels=max_pixels, notes=notes)
    check_writable(target, image.shape[2])
    if image.dtype != np.uint8 and not holds_16_bits(target):
        # Nothing to gain from 16-bit processing that the output cannot hold.
        image = to_uint8(image)
        notes.append(f"{source.name}: 16-bit image processed in 8 bits, as {target.suffix} holds 8")
    result = run(image, progress.tiles)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ImageError(f"{target.parent}: cannot create the folder ({e.strerror})") from None
    save_image(target, result, quality=args.quality, notes=notes)
    written.add(target.resolve())
    for note in notes:
        progress.note(note)
    progress.done(target)


def cmd_stylize(args: argparse.Namespace) -> int:
    """Restyle each input image with the chosen style."""
    jobs = plan_outputs(args.inputs, args.output, Path(args.style).stem, args.format)
    engine = _engine(args)
    from core.engine import SCALE_RANGE, StyleOptions

    low, high = SCALE_RANGE
    if not low <= args.style_scale <= high:
        raise UsageError(
            f"--style-scale {args.style_scale:g} is out of range: use {low:g} to {high:g}"
        )
    _check_model(engine, args.style, "style")
    options = StyleOptions(
        strength=args.strength, preserve_colors=args.preserve_colors, scale=args.style_scale
    )
    return _process(
        args,
        jobs,
        lambda image, tiles: engine.stylize(args.style, image, options, tiles),
    )


def cmd_upscale(args: argparse.Namespace) -> int:
    """Enlarge each input image x4."""
    jobs = plan_outputs(args.inputs, args.output, "x4", args.format)
    engine = _engine(args)
    model = args.model or _default_upscaler()
    _check_model(engine, model, "sr")
    return _process(args, jobs, lambda image, tiles: engine.upscale(model, image, tiles))


def _default_upscaler() -> str:
    from core.registry import list_models

    upscalers = list_models("sr")
    if not upscalers:
        raise UsageError(
            "no upscaling model is installed; train one with `python -m trainer sr` or reinstall"
        )
    return upscalers[0].name


def cmd_styles(args: argparse.Namespace) -> int:
    """Print a table of installed models."""
    from core.registry import scan_models, user_models_dir

    models, broken = scan_models(args.kind)
    if not models:
        print("No usable models installed." if broken else "No models installed.")
    else:
        rows = [("NAME", "DISPLAY NAME", "KIND", "WIDTH", "INT8", "DESCRIPTION")]
        for m in models:
            style = m.kind == "style"
            width = m.options.get("width", "full") if style else "-"
            int8 = ("yes" if m.int8_ranges else "no") if style else "-"
            rows.append((m.name, m.display_name or m.name, m.kind, str(width), int8, m.description))
        sizes = [max(len(row[i]) for row in rows) for i in range(5)]
        for row in rows:
            print(
                "  ".join(cell.ljust(size) for cell, size in zip(row[:5], sizes, strict=True))
                + "  "
                + row[5]
            )
        if any(m.kind == "style" and not m.int8_ranges for m in models):
            print(
                "\nINT8 no: runs in fp32 on CPUs, ~2x slower; `python -m trainer calibrate NAME` "
                "adds the calibration."
            )
    for bad in broken:
        print(f"\nBROKEN {bad.path}: {bad.reason}")
    print(f"\nYour own models go in {user_models_dir()} (the trainer saves them there).")
    return EXIT_OK


def cmd_prepare(args: argparse.Namespace) -> int:
    """Prepare models for this computer's runtime, one line each."""
    from core.engine import EngineError
    from core.registry import list_models

    engine = _engine(args)
    engine.notify = None  # each model gets its own line here
    models = args.models or [m.name for m in list_models()]
    failed = 0
    for model in models:
        started = time.monotonic()
        try:
            engine.prepare(model)
        except (EngineError, LookupError) as e:
            failed += 1
            print(f"error: {e}", file=sys.stderr)
            continue
        print(f"{model}: ready ({time.monotonic() - started:.1f} s)", file=sys.stderr, flush=True)
    return EXIT_FAILED if failed else EXIT_OK


def _serve(argv: list[str]) -> int:
    try:
        from core import server
    except ModuleNotFoundError as e:
        if e.name != "core.server":
            raise
        raise UsageError(
            "the local server is not part of this installation (core/server.py)"
        ) from None
    parser = argparse.ArgumentParser(prog="python -m core serve", description=SERVE_DESCRIPTION)
    server.add_arguments(parser)
    return server.run(parser.parse_args(argv))


COMMANDS = {
    "stylize": cmd_stylize,
    "upscale": cmd_upscale,
    "styles": cmd_styles,
    "prepare": cmd_prepare,
}


def main(argv: list[str] | None = None) -> int:
    """Run one command; errors are one line on stderr and an exit status, never a traceback."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv[:1] == ["serve"]:
            return _serve(argv[1:])
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
