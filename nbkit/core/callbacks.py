"""What the training loop tells its listeners, and the one rule for "the best evaluation so far".

train() calls each callback f(event, data) with these events, in this order: TRAIN_BEGIN once, then
STEP after every optimizer step and EPOCH_END after every evaluation (epoch 0, the base model, comes
before any step), then RUN_END. EPOCH_END's data is the epoch's row of epochs.csv plus `last_epoch`:
True when the run ends after this evaluation anyway (its last epoch, or early stopping), so a listener
knows the compute is spent. A callback may raise StopRun(status) to end the run early with that
status (a study's pruner does, never at the last epoch). The panel's live plot (nbkit.views.ui) and
chapter 3's noise probe listen to them.

BestTracker is the rule every reader of a run shares (fastai's TrackerCallback is the model): the
trainer's early stopping and best weights (EarlyStopping), the panel's live "best epoch", and the
doctor's "lowest validation loss" (best_of, threshold 0).
"""
from __future__ import annotations

import math

TRAIN_BEGIN, STEP, EPOCH_END, RUN_END = "train_begin", "step", "epoch_end", "run_end"
EVENTS = (TRAIN_BEGIN, STEP, EPOCH_END, RUN_END)


class StopRun(Exception):
    """Raised by a callback (on STEP or EPOCH_END) to end the run now: train() closes it with
    `status` and keeps the curves recorded so far. nbkit.core.study raises StopRun("pruned") when
    Optuna's pruner gives up on a trial."""

    def __init__(self, status: str, reason: str = ""):
        super().__init__(reason or status)
        self.status, self.reason = status, reason


class BestTracker:
    """The lowest eval loss so far and its epoch. An evaluation improves when its loss is below the
    best by more than `threshold` (HF's EarlyStoppingCallback rule; 0: any fall counts)."""

    def __init__(self, threshold: float = 0.0):
        self.threshold = threshold
        self.best_loss, self.best_epoch = math.inf, None

    def update(self, epoch, eval_loss: float) -> bool:
        """Record an evaluation; True when it is the new best (a NaN loss never is)."""
        if eval_loss < self.best_loss - self.threshold:
            self.best_loss, self.best_epoch = eval_loss, epoch
            return True
        return False

    @property
    def best(self) -> tuple | None:
        """(epoch, eval_loss) of the best evaluation, or None before any."""
        return None if self.best_epoch is None else (self.best_epoch, self.best_loss)


class EarlyStopping(BestTracker):
    """BestTracker that counts the evaluations in a row that did not improve. As in HF's
    EarlyStoppingCallback, the run stops at the `patience`-th of them (1: at the first; None: never)."""

    def __init__(self, patience: int | None, threshold: float = 0.0):
        super().__init__(threshold)
        self.patience, self.bad_epochs = patience, 0

    def update(self, epoch, eval_loss: float) -> bool:
        improved = super().update(epoch, eval_loss)
        self.bad_epochs = 0 if improved else self.bad_epochs + 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience


def best_of(evaluations, threshold: float = 0.0) -> tuple | None:
    """(epoch, eval_loss) that a BestTracker keeps after these (epoch, eval_loss) pairs, in order;
    threshold 0: the lowest loss (the first of equal ones). None when there are none."""
    tracker = BestTracker(threshold)
    for epoch, eval_loss in evaluations:
        tracker.update(epoch, eval_loss)
    return tracker.best
