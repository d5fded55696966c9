"""The LR range test (Smith 2017, "Cyclical Learning Rates for Training Neural Networks",
section 3.3; fastai's `lr_find`): train for a short while with an LR that grows exponentially
from tiny to huge, record the loss at each step, and read a good LR off the curve.

    result = lr_range_test(cfg)          # cfg's model, data, optimizer, batch size, clipping
    result.suggestion, result.min_loss_lr, result.stopped_early, result.stop_reason
    result.to_frame()                    # a row per step: learning_rate, loss, smoothed_loss
    plots.lr_finder_plot(result)

The steps are the trainer's (nbkit.core.train: same data loader, optimizer, token-normalised loss,
gradient accumulation and clipping); only the LR differs: it is set by hand before each step,
no scheduler. The weights are restored afterwards, so the test leaves the model untouched.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from nbkit.core.config import TrainConfig
from nbkit.core.i18n import _
from nbkit.core.models import load_model, load_tokenizer, quiet_loading
from nbkit.core.runs import write_json_atomic
from nbkit.core.train import (accumulation_groups, build_datasets, build_optimizer, build_train_loader, clip_and_step,
                              forward_backward, restore_state, seed_everything, trainable_state, uses_bf16)

SKIP_START = 5  # the first smoothed points average only a few losses: their slope is batch noise
# The slope is read across a decade of LR (half either side), not between neighbouring points: with
# 14 points a decade, two noisy batches in a row made a "steepest descent" at 3e-7 on one seed of the
# capstone's tiny model, a hundred times below where the loss really falls. A test of 3 points a
# decade already reads a decade between neighbours, and is unchanged.
SLOPE_HALF_WINDOW = 0.5  # decades of LR either side of a point
RESULT_FILE = "lr_range_test.json"


@dataclass
class LRRangeTest:
    """What one LR range test measured. Per step i (0-based): lrs[i] the LR it used, losses[i]
    its training loss, smoothed[i] the bias-corrected moving average up to it."""
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float  # LR of steepest descent of the smoothed loss (see suggest_lr)
    min_loss_lr: float  # LR at the lowest smoothed loss: the edge of stability, too high to train at
    stopped_early: bool  # True when the loss blew up before num_steps
    stop_reason: str  # why the test ended, in words
    steps: int  # optimizer steps taken
    seconds: float  # wall time, loading included
    suggestion_rule: str = "steepest descent"  # or the fallback used when there was no descent
    settings: dict = field(default_factory=dict)  # start_lr, end_lr, num_steps, stop_factor, smoothing
    config: dict = field(default_factory=dict)  # the TrainConfig, as cfg.to_dict()

    @property
    def min_loss_lr_over_10(self) -> float:
        """fastai's older rule: a tenth of the LR at the minimum, a safe margin below the edge."""
        return self.min_loss_lr / 10

    def to_frame(self) -> pd.DataFrame:
        """A row per step: step (1-based, as in run.steps), learning_rate, loss, smoothed_loss."""
        return pd.DataFrame({"step": range(1, len(self.lrs) + 1), "learning_rate": self.lrs,
                             "loss": self.losses, "smoothed_loss": self.smoothed})

    def to_dict(self) -> dict:
        return dict(asdict(self), min_loss_lr_over_10=self.min_loss_lr_over_10)

    def save(self, folder) -> Path:
        """Write the result to <folder>/lr_range_test.json (atomically); returns that path."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / RESULT_FILE
        write_json_atomic(path, self.to_dict())
        return path

    @classmethod
    def load(cls, path) -> "LRRangeTest":
        """Read a saved result back, from its JSON file or the folder holding it."""
        path = Path(path)
        data = json.loads((path / RESULT_FILE if path.is_dir() else path).read_text())
        data.pop("min_loss_lr_over_10", None)  # derived, not a field
        return cls(**data)


# ---------------------------------------------------------------- arguments and the ramp

def _require(ok: bool, name: str, value, allowed: str) -> None:
    if not ok:
        raise ValueError(_("{name}={value!r} is invalid; allowed: {allowed}.").format(name=name, value=value,
                                                                                    allowed=allowed))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_arguments(start_lr, end_lr, num_steps, stop_factor, smoothing) -> None:
    """ValueError naming the argument, its value and what is allowed, for each bad one."""
    _require(_is_number(start_lr) and start_lr > 0, "start_lr", start_lr, _("a finite number > 0, e.g. 1e-7"))
    _require(_is_number(end_lr) and end_lr > start_lr, "end_lr", end_lr,
             _("a finite number > start_lr ({start_lr!r}), e.g. 1.0").format(start_lr=start_lr))
    _require(isinstance(num_steps, int) and not isinstance(num_steps, bool) and num_steps >= 10,
             "num_steps", num_steps, _("a whole number >= 10 (fewer points give no curve to read)"))
    _require(_is_number(stop_factor) and stop_factor > 1, "stop_factor", stop_factor,
             _("a finite number > 1, e.g. 4.0 (stop when the smoothed loss reaches 4x its best)"))
    _require(_is_number(smoothing) and 0 <= smoothing < 1, "smoothing", smoothing,
             _("a number in [0, 1), e.g. 0.98 (0 = no smoothing)"))


def exponential_lrs(start_lr: float, end_lr: float, num_steps: int) -> list[float]:
    """start_lr * (end_lr / start_lr) ** (i / (num_steps - 1)) for i = 0 .. num_steps - 1:
    equal steps on a log scale, from start_lr to end_lr exactly."""
    ratio = end_lr / start_lr
    return [start_lr * ratio ** (i / (num_steps - 1)) for i in range(num_steps)]


def endless(loader, k: int):
    """The loader's accumulation groups, epoch after epoch (reshuffled each time, unlike
    itertools.cycle, which would replay the first epoch's batches from memory)."""
    while True:
        yield from accumulation_groups(loader, k)


def _to_device(batch: dict, device) -> dict:
    return {name: tensor.to(device) for name, tensor in batch.items()}


# ---------------------------------------------------------------- the suggestion

def slopes_per_decade(lrs, smoothed) -> np.ndarray:
    """The smoothed loss's change per decade of LR at each point, read across the points within
    SLOPE_HALF_WINDOW decades either side (the ends use what the curve has)."""
    x, y = np.log10(np.asarray(lrs, dtype=float)), np.asarray(smoothed, dtype=float)
    lo = np.searchsorted(x, x - SLOPE_HALF_WINDOW - 1e-9, side="left")
    hi = np.searchsorted(x, x + SLOPE_HALF_WINDOW + 1e-9, side="right") - 1
    lo, hi = np.minimum(lo, np.arange(len(x)) - 1).clip(0), np.maximum(hi, np.arange(len(x)) + 1).clip(max=len(x) - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (y[hi] - y[lo]) / (x[hi] - x[lo])


def suggest_lr(lrs, smoothed) -> tuple[float, float, str]:
    """(suggestion, min_loss_lr, rule) from the smoothed curve.

    min_loss_lr: the LR at the lowest finite smoothed loss.
    suggestion: the LR where the smoothed loss falls fastest per decade of LR: the most negative
    slopes_per_decade (read across a decade, so a pair of noisy batches is not a descent), searched
    from point SKIP_START (the first points average only a few losses) up to and including the
    minimum (after it the loss rises: those slopes say nothing about descent).
    Steepest descent is where the loss still improves fastest and is far from blowing up,
    which Smith and fastai's current `lr_find` (its "steep" suggestion) take as the LR to
    train at; the minimum itself is the edge of stability, and min_loss_lr / 10 (fastai's
    older rule) is reported alongside as a more conservative choice.
    When there is no descent to measure (the minimum within the first SKIP_START points, or
    no negative slope), the suggestion falls back to max(min_loss_lr / 10, lrs[0]) and
    rule says so.
    """
    lrs, smoothed = np.asarray(lrs, dtype=float), np.asarray(smoothed, dtype=float)
    n = int(np.argmax(~np.isfinite(smoothed))) if not np.isfinite(smoothed).all() else len(smoothed)
    if n == 0:  # the very first loss was NaN/inf: nothing to read
        return math.nan, math.nan, "none (no finite loss)"
    lrs, smoothed = lrs[:n], smoothed[:n]
    i_min = int(np.argmin(smoothed))
    min_loss_lr = float(lrs[i_min])
    fallback = (max(min_loss_lr / 10, float(lrs[0])), min_loss_lr, "min_loss_lr / 10 (no descent to measure)")
    if n < 2 or i_min < SKIP_START:
        return fallback
    slopes = slopes_per_decade(lrs, smoothed)[SKIP_START:i_min + 1]
    steepest = int(np.argmin(slopes))
    if slopes[steepest] >= 0:
        return fallback
    return float(lrs[SKIP_START + steepest]), min_loss_lr, "steepest descent"


# ---------------------------------------------------------------- the test

def lr_range_test(cfg: TrainConfig, start_lr: float = 1e-7, end_lr: float = 1.0, num_steps: int = 100,
                  stop_factor: float = 4.0, smoothing: float = 0.98, model=None,
                  tokenizer=None) -> LRRangeTest:
    """Train num_steps optimizer steps on cfg's training data with the LR growing exponentially
    from start_lr to end_lr, and return the loss curve and a suggested LR (LRRangeTest).

    Defaults, and why:
      start_lr=1e-7      far below any useful LR: the curve starts flat, at the base loss
      end_lr=1.0         far above: even a tiny model with AdamW diverges before it
      num_steps=100      fastai's default: about 14 points per decade over 7 decades
      stop_factor=4.0    a smoothed loss 4x its best has left the basin and will not come back
      smoothing=0.98     fastai's: the loss of one batch is noisy; the average is readable

    Everything else comes from cfg: model (unless `model` is given), dataset and max_samples,
    per_device_train_batch_size and gradient_accumulation_steps, optim and its betas, weight
    decay, max_grad_norm, precision, seed (two calls give identical curves) and disable_tqdm.
    Step i uses lr = start_lr * (end_lr / start_lr) ** (i / (num_steps - 1)). The loss of
    each step is recorded with its bias-corrected moving average
        avg = smoothing * avg + (1 - smoothing) * loss;  smoothed = avg / (1 - smoothing ** (i + 1))
    and the test stops early, as an expected outcome, once the smoothed loss exceeds
    stop_factor x its best so far or is NaN/inf. The data loader starts a new (reshuffled)
    epoch whenever num_steps needs more batches than one epoch has.

    `suggestion` is the LR of steepest descent of the smoothed loss (see suggest_lr for the
    exact rule and why); `min_loss_lr` and `min_loss_lr_over_10` are reported too.

    model / tokenizer: test a model you already have (e.g. run.model) instead of loading
    cfg.model. Its trainable weights are copied first and restored at the end, whatever
    happens; its train/eval mode is restored and its gradients are left empty (None). The
    optimizer lives only inside this call. One process only (a notebook tool).
    """
    check_arguments(start_lr, end_lr, num_steps, stop_factor, smoothing)
    from accelerate import Accelerator

    t_start = time.time()
    accelerator = Accelerator()  # for the trainer's step code; nothing is prepared or wrapped
    seed_everything(cfg)
    if model is None:
        with quiet_loading(cfg.disable_tqdm):
            model, tokenizer = load_model(cfg, accelerator.device)
        if not cfg.quantization_bit:  # a quantised model is loaded on its device and cannot move
            model.to(accelerator.device)
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(cfg)
    train_features = build_datasets(cfg, tokenizer)[0]
    loader = build_train_loader(cfg, train_features, tokenizer)

    saved, was_training = trainable_state(model), model.training
    try:
        curve = _ramp(cfg, model, loader, accelerator, exponential_lrs(start_lr, end_lr, num_steps),
                      stop_factor, smoothing)
    finally:
        restore_state(model, saved)
        model.train(was_training)
        model.zero_grad(set_to_none=True)
        if cfg.full_determinism:  # leave no global switch behind, as train() does
            torch.use_deterministic_algorithms(False)

    lrs, losses, smoothed, stop_reason = curve
    stopped_early = bool(stop_reason)
    suggestion, min_loss_lr, rule = suggest_lr(lrs, smoothed)
    return LRRangeTest(lrs=lrs, losses=losses, smoothed=smoothed, suggestion=suggestion,
                       min_loss_lr=min_loss_lr, stopped_early=stopped_early,
                       stop_reason=stop_reason or f"finished all {num_steps} steps", steps=len(lrs),
                       seconds=time.time() - t_start,
                       suggestion_rule=rule,
                       settings=dict(start_lr=start_lr, end_lr=end_lr, num_steps=num_steps,
                                     stop_factor=stop_factor, smoothing=smoothing),
                       config=cfg.to_dict())


def _ramp(cfg, model, loader, accelerator, schedule, stop_factor, smoothing):
    """The steps themselves: (lrs, losses, smoothed, why it stopped early or "")."""
    device = next(model.parameters()).device
    bf16 = uses_bf16(cfg, device)
    optimizer = build_optimizer(cfg, model)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.fp16)  # loss scaling only for fp16
    groups = endless(loader, cfg.gradient_accumulation_steps)
    lrs, losses, smoothed = [], [], []
    avg, best = 0.0, math.inf
    model.train()
    progress = tqdm(total=len(schedule), disable=cfg.disable_tqdm, desc=_("lr range test"))
    try:
        for i, lr in enumerate(schedule):
            for group in optimizer.param_groups:
                group["lr"] = lr
            micro_batches = [_to_device(b, device) for b in next(groups)]
            loss, _tokens = forward_backward(model, micro_batches, accelerator, scaler, device, bf16, cfg.fp16)
            avg = smoothing * avg + (1 - smoothing) * loss
            lrs.append(lr)
            losses.append(loss)
            smoothed.append(avg / (1 - smoothing ** (i + 1)))
            progress.update(1)
            reason = _stop_reason(i + 1, lr, loss, smoothed[-1], best, stop_factor)
            if reason:
                return lrs, losses, smoothed, reason
            best = min(best, smoothed[-1])
            clip_and_step(cfg, model, optimizer, scaler)
            optimizer.zero_grad(set_to_none=True)
    finally:
        progress.close()
    return lrs, losses, smoothed, ""


def _stop_reason(step: int, lr: float, loss: float, smooth: float, best: float, stop_factor: float) -> str:
    """Why to stop after this step, or "" to go on."""
    if not math.isfinite(loss) or not math.isfinite(smooth):
        return f"loss is {loss} at step {step} (lr {lr:.3g}): diverged"
    if smooth > stop_factor * best:
        return (f"smoothed loss {smooth:.4g} > {stop_factor:g} x best {best:.4g} at step {step} "
                f"(lr {lr:.3g}): diverged")
    return ""
