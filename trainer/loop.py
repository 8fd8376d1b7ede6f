"""The training loop shared by style and super-resolution training: resumable, observable, scalable."""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from core.modelfile import ModelFileError
from core.phased import phased
from trainer.budget import TimeBudget
from trainer.checkpoint import CHECKPOINT_NAME, export_model, load_checkpoint, save_checkpoint
from trainer.config import TrainConfig
from trainer.data import PhotoCrops, ResumableSampler, center_crop, find_photos, ignore_interrupts
from trainer.distributed import Cluster
from trainer.lossnets import load_loss_network
from trainer.monitor import LossLog, Progress, contact_sheet, draw_loss_curve
from trainer.tasks import make_task, start_from

PREVIEW_PHOTOS = 4


class TrainingError(Exception):
    """Training cannot start or continue; the message says why and what to do."""


@dataclass
class TrainResult:
    """How a run ended: finished (model written) or stopped early (checkpoint kept)."""

    step: int
    finished: bool
    checkpoint: Path
    model_path: Path | None
    losses: dict[str, float]  # averages over the last logging interval
    net: nn.Module  # the trained network (fp32, on the training device)


def resolve_device(name: str) -> torch.device:
    """ "auto" picks CUDA, then Apple MPS, then the CPU; other names are checked to exist."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.mps.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError("--device cuda asked for, but this PyTorch build sees no CUDA GPU")
    if name == "mps" and not torch.mps.is_available():
        raise TrainingError("--device mps asked for, but this machine has no Apple GPU")
    return torch.device(name)


def memory_format_for(device: torch.device) -> torch.memory_format:
    """The trained network's layout: channels_last on GPUs (tensor cores want it); on CPUs the
    default layout measured faster (instance norm and reflection padding are slower in
    channels_last). The loss network picks its own (LossNetwork: channels_last everywhere)."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def for_training(net: nn.Module, device: torch.device) -> nn.Module:
    """``net`` on ``device`` in its fastest training layout; the same parameters and saved keys.

    On CPUs its 3-channel output layer runs in phases (core.phased): forward and backward of that
    layer 1.6x faster (bench/results/trainer.md). Not on GPUs, where it was not measured.
    """
    net = net.to(device, memory_format=memory_format_for(device))
    return phased(net, inplace=True) if device.type == "cpu" else net


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (else autocast emulates it, several times slower)."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


class StopRequest:
    """Ctrl-C or SIGTERM asks for a checkpoint then a clean stop; a second Ctrl-C aborts at once."""

    def __init__(self, event: threading.Event) -> None:
        self.event, self.previous = event, {}
        self.interrupted = False  # Ctrl-C (not SIGTERM): with a time budget, also write the model
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        print("\nstopping: writing a checkpoint (Ctrl-C again to abort)", file=sys.stderr)
        self.event.set()
        self.interrupted = signum == signal.SIGINT
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def training_step(
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    amp: bool = False,
) -> dict[str, torch.Tensor]:
    """One optimisation step; ``amp`` runs forward passes under bf16 autocast (weights stay fp32)."""
    with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=amp):
        terms = loss_fn(model(inputs), targets)
    optimizer.zero_grad(set_to_none=True)
    terms["total"].backward()
    optimizer.step()
    return terms


def _prepare(config: TrainConfig, resume: bool, cluster: Cluster) -> tuple[dict | None, list[Path]]:
    """Check the run folder and dataset before any expensive work; the checkpoint if resuming."""
    checkpoint = Path(config.run_dir) / CHECKPOINT_NAME
    state = None
    if resume:
        state = load_checkpoint(checkpoint)
        conflicts = config.resume_conflicts(TrainConfig.from_dict(state["config"]))
        if conflicts:
            raise TrainingError(
                "--resume needs the run's settings; these differ: " + "; ".join(conflicts)
            )
    elif checkpoint.exists():
        raise TrainingError(
            f"{config.run_dir} already holds a run (checkpoint at step "
            f"{load_checkpoint(checkpoint)['step']}): add --resume to continue it, or choose "
            "another --run-dir"
        )
    photos, skipped = find_photos(config.dataset, config.batch_size * cluster.world_size)
    if cluster.is_main:
        note = f" ({skipped} unreadable skipped)" if skipped else ""
        print(f"dataset: {len(photos)} photos in {config.dataset}{note}", flush=True)
    if state is not None and state["dataset_size"] != len(photos):
        raise TrainingError(
            f"the dataset now has {len(photos)} photos, the run was started with "
            f"{state['dataset_size']}: resume with the same photos"
        )
    return state, photos


def train(
    config: TrainConfig,
    resume: bool = False,
    stop: threading.Event | None = None,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train (or continue) the run ``config`` describes; ``stop.set()`` ends it with a checkpoint."""
    started = time.perf_counter()  # a time budget counts from here: loading is part of it
    device = resolve_device(config.device)
    cluster = Cluster.from_environment(device.type)
    if device.type == "cuda":
        device = torch.device(
            "cuda", cluster.local_rank if cluster.world_size > 1 else device.index or 0
        )
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    if config.amp and device.type == "cpu" and not cpu_has_bf16():
        print(
            "warning: this CPU has no native bf16 (AVX512-BF16 or AMX), so --amp is slower "
            "here; train without it",
            file=sys.stderr,
        )
    stop = stop or threading.Event()
    stopper = StopRequest(stop)
    try:
        return _train(config, resume, stop, on_step, device, cluster, stopper, started)
    finally:
        stopper.restore()
        cluster.close()


def _train(config, resume, stop, on_step, device, cluster, stopper, run_started) -> TrainResult:
    state, photos = _prepare(config, resume, cluster)
    run_dir, main = Path(config.run_dir), cluster.is_main
    checkpoint_path = run_dir / CHECKPOINT_NAME
    needs_lossnet = config.task == "style" or config.sr_loss == "perceptual"
    lossnet = load_loss_network(config.loss_network, config.loss_weights) if needs_lossnet else None
    task = make_task(config, lossnet)
    layout = memory_format_for(device)
    loss_fn = task.loss.to(device)

    torch.manual_seed(config.seed)
    net = task.network()
    if config.init_model and state is None:
        try:
            start_from(net, config.init_model)
        except (ModelFileError, ValueError) as e:
            raise TrainingError(f"--init-model: {e}") from None
    net = net.to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    step, elapsed, losses = 0, 0.0, {}
    if state is not None:
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed, losses = state["step"], state["elapsed"], state["losses"]
        torch.set_rng_state(state["rng"])
        if main:
            print(f"resuming {config.name} at step {step}", flush=True)
    net = for_training(net, device)
    model: nn.Module = DistributedDataParallel(net) if cluster.world_size > 1 else net
    if config.compile:
        model, loss_fn = torch.compile(model), torch.compile(loss_fn)

    def batches_from(start: int):
        """Batches from step ``start`` on, cropped at that step's size (the crop schedule)."""
        sampler = ResumableSampler(
            len(photos), config.batch_size, config.seed, start, cluster.rank, cluster.world_size
        )
        loader = DataLoader(
            PhotoCrops(
                photos,
                config.crop_size(start),
                task.resize_crops,
                device if config.resident else None,
            ),
            batch_size=config.batch_size,
            sampler=sampler,
            num_workers=0 if config.resident else config.workers,
            pin_memory=device.type == "cuda" and not config.resident,
            persistent_workers=config.workers > 0 and not config.resident,
            worker_init_fn=ignore_interrupts,
        )
        return iter(loader)

    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "previews").mkdir(exist_ok=True)
        log = LossLog(run_dir / "loss.csv", list(task.loss.terms), step if resume else None)
        chosen = [photos[i * len(photos) // PREVIEW_PHOTOS] for i in range(PREVIEW_PHOTOS)]
        preview = torch.stack(
            [center_crop(p, config.image_size, task.resize_crops) for p in dict.fromkeys(chosen)]
        )
        progress = Progress(step, config.steps, config.batch_size * cluster.world_size)
        print(
            f"training {config.name} ({config.task}) on {device}, "
            f"{cluster.world_size} process(es); run folder {run_dir}",
            flush=True,
        )
    budget = TimeBudget(config, step, run_started) if config.minutes else None
    autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=config.amp)

    def checkpoint_state() -> dict:
        return {
            "config": config.to_dict(),
            "options": task.options,
            "step": step,
            "net": net.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": torch.get_rng_state(),
            "elapsed": elapsed + time.perf_counter() - started,
            "losses": losses,
            "dataset_size": len(photos),
            "device": str(device),
        }

    saved_step = step if state is not None else None

    def write_checkpoint() -> None:
        nonlocal saved_step
        save_checkpoint(checkpoint_path, checkpoint_state())
        saved_step = step

    @contextlib.contextmanager
    def writing_run_files():
        """A full disk (or any failed write) stops the run with what to do; nothing is lost
        but the steps since the last checkpoint, which the atomic writes keep intact."""
        try:
            yield
        except OSError as e:
            kept = (
                f"the checkpoint of step {saved_step} is intact"
                if saved_step is not None
                else "no checkpoint was written yet"
            )
            raise TrainingError(
                f"could not write to {run_dir} at step {step} ({e}); {kept}: free disk space, "
                "then run the same command plus --resume"
            ) from None

    def write_preview() -> None:
        with torch.no_grad(), torch.autocast(**autocast):
            images = preview.to(device).float().div(255)
            rows = task.preview_rows(net, images.contiguous(memory_format=layout))
        contact_sheet(rows, run_dir / "previews" / f"step_{step:07d}.png")

    started = time.perf_counter()
    sums: dict[str, torch.Tensor] = {}
    count = 0
    stopping = False
    crop = config.crop_size(step)
    batches = batches_from(step)
    while step < config.steps and not stopping:
        if config.crop_size(step) != crop:
            crop = config.crop_size(step)
            batches = batches_from(step)
            if main:
                print(f"step {step}: crops now {config.crop_size(step)} px", flush=True)
        photos_batch = next(batches).to(device, non_blocking=True)
        images = photos_batch.float().div(255).contiguous(memory_format=layout)
        for group in optimizer.param_groups:
            group["lr"] = config.lr_at(step)
        terms = training_step(
            model, loss_fn, optimizer, *task.inputs_and_targets(images), config.amp
        )
        step += 1
        count += 1
        for k, v in terms.items():
            sums[k] = sums.get(k, 0) + v.detach()
        plan = budget.after_step(step) if budget is not None else None
        if plan and main:
            print(plan, flush=True)
        if budget is not None and main:
            progress.total = config.steps
        if on_step is not None:
            on_step(step)
        stopping = cluster.any(stop.is_set(), device)
        if main and (step % config.log_every == 0 or step == config.steps or stopping):
            losses = {k: float(v) / count for k, v in sums.items()}
            sums, count = {}, 0
            if not math.isfinite(losses["total"]):
                raise TrainingError(
                    f"the loss became {losses['total']} at step {step}: lower --lr, or train "
                    "without --amp; the checkpoint before this point is kept"
                )
            print(progress.line(step, losses), flush=True)
            with writing_run_files():
                log.append(step, losses, progress.rate)
                draw_loss_curve(log.read(), run_dir / "loss.png")
        if main and (step % config.checkpoint_every == 0 or step == config.steps or stopping):
            with writing_run_files():
                write_checkpoint()
        if (
            main
            and (config.preview_every or budget is not None)
            and (
                (budget.preview_due() if budget else step % config.preview_every == 0)
                or step == config.steps
            )
        ):
            with writing_run_files():
                write_preview()
    cluster.barrier()

    model_path = None
    keep_model = budget is not None and stopper.interrupted  # Ctrl-C: the model so far
    if main and (step >= config.steps or keep_model):
        try:
            model_path = export_model(checkpoint_state(), net=net)
        except OSError as e:
            raise TrainingError(
                f"training finished but the model file could not be written ({e}); the final "
                f"checkpoint is in {run_dir}: free disk space, then "
                f"`python -m trainer export {run_dir}`"
            ) from None
        print(f"model written: {model_path}", flush=True)
    if main and step < config.steps:
        print(
            f"stopped at step {step}; the checkpoint is in {run_dir}: continue with the same "
            "command plus --resume",
            flush=True,
        )
    return TrainResult(step, step >= config.steps, checkpoint_path, model_path, losses, net)
