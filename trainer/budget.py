"""A time budget instead of a step count: the steps and crop schedule follow from measured speed."""

from __future__ import annotations

import math
import time

from trainer.config import TrainConfig

WARMUP_STEPS = 2  # the first steps at a crop size allocate and tune kernels: not representative
MEASURE_STEPS = 3  # then at least this many steps (and MEASURE_SECONDS) give the speed
MEASURE_SECONDS = 1.0
FINAL_SHARE = 1 / 3  # of the training time at the final crop size: the strokes' scale of use
EXPORT_SHARE = 0.04  # of the budget kept for writing and calibrating the model (at least 1 s)
PREVIEW_SECONDS = 180.0  # a preview sheet every few minutes


class TimeBudget:
    """Fixes ``config.steps`` and its crop schedule on the fly so the run ends by its deadline.

    Training starts at ``image_size`` (small, cheap crops) with the switch to ``final_image_size``
    left open; once the small steps' speed is measured the schedule is planned, once the final
    size's is measured it is re-planned, and any step that would end past the deadline ends the run.
    """

    def __init__(self, config: TrainConfig, start_step: int = 0, started: float | None = None):
        self.config, self.start_step = config, start_step
        self.started = time.perf_counter() if started is None else started
        self.seconds = config.minutes * 60
        self.reserve = max(1.0, EXPORT_SHARE * self.seconds)
        self.deadline = self.started + self.seconds - self.reserve
        self.max_steps = config.steps  # the full schedule: more never helps within the recipe
        self.final_size = config.final_image_size or config.image_size
        self.switch: int | None = None  # first step at the final size, once planned
        self.switch_time: float | None = None  # when the final size starts, fixed at the first plan
        self.mark: tuple[int, float] | None = None  # (step, time) a measurement began at
        self.step_seconds = 0.0
        self.last_preview = self.started
        config.final_image_size, config.final_steps = self.final_size, 0  # switch not yet planned

    def after_step(self, step: int, now: float | None = None) -> str | None:
        """Update the plan after ``step`` steps; a line to show when it is first made or ends."""
        now = time.perf_counter() if now is None else now
        planned = self.switch is not None or not self.config.final_image_size
        self._measure(step, now)
        if now + self.step_seconds > self.deadline:  # one more step would end late
            self.config.steps = step
        if self.config.steps == step:
            return f"step {step}: time budget reached, writing the model"
        first_plan = not planned and (self.switch is not None or not self.config.final_image_size)
        return self.describe(now) if first_plan else None

    def _measure(self, step: int, now: float) -> None:
        final = self.switch is not None and step >= self.switch
        phase_start = self.switch if final else self.start_step
        if final and step == self.switch:  # until measured: the estimate for the larger crops
            self.step_seconds *= (self.final_size / self.config.image_size) ** 2
        if step - phase_start == WARMUP_STEPS:
            self.mark = (step, now)
            return
        measuring = self.mark is not None and step - self.mark[0] >= MEASURE_STEPS
        if not measuring or now - self.mark[1] < MEASURE_SECONDS:
            return
        self.step_seconds = (now - self.mark[1]) / (step - self.mark[0])
        self.mark = (step, now)  # keep measuring: a shared machine's speed drifts
        if final:
            self._plan_final(step, now)
        else:
            self._plan(step, now)

    def _plan(self, step: int, now: float) -> None:
        """Small crops until a switch time fixed at the first plan (FINAL_SHARE of the time left
        then), the final size after it; each re-plan counts the steps that fit at today's speed.

        The switch is a time, not a step count: a passing slowdown only shrinks the estimate of
        the small steps for a while (a count of final steps, costed at the slow speed, would pull
        the switch to now, and a run never leaves the large crops once there)."""
        if self.switch_time is None:
            self.switch_time = now + (self.deadline - now) * (1 - FINAL_SHARE)
        final_seconds = self.step_seconds * (self.final_size / self.config.image_size) ** 2
        small_steps = max(0, math.floor((self.switch_time - now) / self.step_seconds))
        final_steps = max(
            1, math.floor((self.deadline - max(now, self.switch_time)) / final_seconds)
        )
        total = min(self.max_steps, step + small_steps + final_steps)
        self._set(total, min(final_steps, total - step))

    def _plan_final(self, step: int, now: float) -> None:
        """The final size's own speed decides how many of its steps still fit."""
        total = min(self.max_steps, step + math.floor((self.deadline - now) / self.step_seconds))
        self._set(max(step, total), max(step, total) - self.switch)

    def _set(self, total: int, final_steps: int) -> None:
        self.config.steps, self.config.final_steps = total, final_steps
        self.switch = total - final_steps
        if self.config.image_size == self.final_size:  # no schedule: one size throughout
            self.config.final_image_size = self.config.final_steps = 0
            self.switch = None

    def preview_due(self, now: float | None = None) -> bool:
        """Whether PREVIEW_SECONDS have passed since the last preview (and restart the clock)."""
        now = time.perf_counter() if now is None else now
        if now - self.last_preview < PREVIEW_SECONDS:
            return False
        self.last_preview = now
        return True

    def describe(self, now: float) -> str:
        """The plan as one line for the progress output."""
        c = self.config
        crops = f"{c.image_size} px crops"
        if c.final_steps:
            crops += f", the last {c.final_steps} at {c.final_image_size} px"
        left = self.started + self.seconds - now
        return (
            f"time budget {self.config.minutes:g} min: {c.steps} steps ({crops}) at "
            f"{self.step_seconds:.3g} s/step measured; {left:.0f} s left"
        )
