"""What a training run shows: progress lines, a CSV loss log, a loss-curve PNG and preview sheets."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

CURVE_COLOURS = {
    "total": (20, 20, 20),
    "content": (31, 119, 180),
    "style": (214, 39, 40),
    "tv": (44, 160, 44),
    "pixel": (148, 103, 189),
}


def format_duration(seconds: float) -> str:
    """Seconds as e.g. "1h02m" or "3m05s"."""
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class Progress:
    """Throughput and remaining time, measured over the latest logging interval."""

    def __init__(self, start_step: int, total_steps: int, batch_size: int) -> None:
        self.total, self.batch_size = total_steps, batch_size
        self.mark_step, self.mark_time = start_step, time.perf_counter()
        self.rate = 0.0  # images per second

    def line(self, step: int, losses: dict[str, float]) -> str:
        """One progress line for ``step`` (and restart the rate measurement)."""
        now = time.perf_counter()
        if step > self.mark_step:
            self.rate = (step - self.mark_step) * self.batch_size / (now - self.mark_time)
        self.mark_step, self.mark_time = step, now
        eta = (self.total - step) * self.batch_size / self.rate if self.rate else math.nan
        parts = " ".join(f"{k} {v:.4g}" for k, v in losses.items() if k != "total")
        eta_text = format_duration(eta) if math.isfinite(eta) else "?"
        return (
            f"step {step}/{self.total}  loss {losses['total']:.4g} ({parts})  "
            f"{self.rate:.2f} img/s  ETA {eta_text}"
        )


class LossLog:
    """Loss terms per logging step in ``loss.csv``; a resumed run drops rows after its checkpoint."""

    def __init__(self, path: Path, terms: list[str], resume_step: int | None) -> None:
        self.path, self.fields = path, ["step", *terms, "images_per_s"]
        rows = self.read() if resume_step is not None and path.is_file() else []
        rows = [r for r in rows if int(r["step"]) <= (resume_step or 0)]
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, self.fields)
            writer.writeheader()
            writer.writerows({k: r.get(k, "") for k in self.fields} for r in rows)

    def append(self, step: int, losses: dict[str, float], rate: float) -> None:
        """Add one row and flush it to disk."""
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.fields).writerow({"step": step, **losses, "images_per_s": rate})

    def read(self) -> list[dict[str, str]]:
        """All rows logged so far."""
        with self.path.open(newline="") as f:
            return list(csv.DictReader(f))


def draw_loss_curve(rows: list[dict[str, str]], path: Path, size: tuple[int, int] = (800, 480)):
    """Loss terms against step, log scale, drawn with Pillow into a PNG."""
    width, height = size
    left, right, top, bottom = 70, 110, 20, 40
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    series = {
        name: [(int(r["step"]), float(r[name])) for r in rows if r.get(name) and float(r[name]) > 0]
        for name in CURVE_COLOURS
    }
    points = [p for values in series.values() for p in values]
    draw.rectangle((left, top, width - right, height - bottom), outline=(120, 120, 120))
    if points:
        x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
        y0 = math.floor(math.log10(min(p[1] for p in points)))
        y1 = math.ceil(math.log10(max(p[1] for p in points)))
        x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)

        def place(step: int, value: float) -> tuple[float, float]:
            fx = (step - x0) / (x1 - x0)
            fy = (math.log10(value) - y0) / (y1 - y0)
            return left + fx * (width - left - right), height - bottom - fy * (
                height - top - bottom
            )

        for exponent in range(y0, y1 + 1):
            _, y = place(x0, 10.0**exponent)
            draw.line((left, y, width - right, y), fill=(225, 225, 225))
            draw.text((8, y - 6), f"1e{exponent}", fill="black")
        draw.text((left, height - bottom + 8), f"step {x0}", fill="black")
        draw.text((width - right - 70, height - bottom + 8), f"step {x1}", fill="black")
        for row, (name, values) in enumerate(v for v in series.items() if v[1]):
            colour = CURVE_COLOURS[name]
            if len(values) > 1:
                draw.line([place(*p) for p in values], fill=colour, width=2)
            draw.text((width - right + 10, top + 16 * row), name, fill=colour)
    image.save(path)


def contact_sheet(rows: list[torch.Tensor], path: Path, gap: int = 4) -> None:
    """Save rows of equally sized NCHW [0, 1] image batches as one PNG grid."""
    tiles = [[(img.float().clamp(0, 1) * 255).round().byte() for img in row.cpu()] for row in rows]
    h = max(t.shape[1] for row in tiles for t in row)
    w = max(t.shape[2] for row in tiles for t in row)
    columns = max(len(row) for row in tiles)
    sheet = Image.new("RGB", (columns * (w + gap) + gap, len(tiles) * (h + gap) + gap), "white")
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            picture = Image.fromarray(tile.permute(1, 2, 0).numpy())
            sheet.paste(picture, (gap + c * (w + gap), gap + r * (h + gap)))
    sheet.save(path)
