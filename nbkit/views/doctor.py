"""The curve doctor: what a run's loss curves show, with the evidence, and what to change.

    from nbkit.views.doctor import diagnose, report
    for d in diagnose(run):
        print(d.name, d.message, d.advice)    # e.g. "over-fitting", "validation loss lowest at epoch 2 ..."
    print(report(run))                        # the same, as lines of text
    verdicts(runs)                            # a table: a row per run, its diagnoses and advice

Pure functions of run.steps (a row per optimizer step), run.epochs (a row per evaluation,
epoch 0 = the base model) and run.summary; nothing trains. Works on a finished run and on one
still in flight (the panel asks after every epoch). The diagnoses, checked in this order:

- diverged        the trainer stopped the run because the loss blew up (or a loss is not finite)
- flat            the loss has hardly moved from where it started: the steps are too small
- over-fitting    validation loss turned up after its minimum while the training loss kept falling
- still improving the last evaluation is the best one and still clearly better than the one before
- noisy           the step losses scatter widely around their trend in the second half of the run
- healthy         none of the above

A run can have several (over-fitting and noisy, say); "healthy" only comes alone, and so do
"diverged" and "flat" (nothing else can be read from such curves). The thresholds are module
constants with the reason for each; they were chosen for what the words mean, not fitted to runs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from nbkit.core.callbacks import best_of
from nbkit.core.i18n import N_, _
from nbkit.core.runs import status_shown

# "Flat": less than 5% of the starting loss gone. A run that learns anything at all removes far
# more in its first epoch (the tiny model drops the chat format's loss by over half in a few steps).
FLAT_FRACTION = 0.05
# "Over-fitting": validation loss ended more than 2% above its minimum while the training loss
# fell. Smaller rises are within the wobble of one evaluation to the next on a small split.
OVERFIT_RISE = 0.02
# "Still improving": the last evaluation beat the one before by more than 1%: one more epoch at
# that pace is worth its cost. Below that the curve has levelled off.
IMPROVING_FALL = 0.01
# "Noisy": around a straight-line trend, the step losses of the second half of the run scatter
# with a standard deviation above 10% of all the loss the run has removed so far (first steps'
# mean minus the second half's mean): one step's loss then says little about progress, and the
# updates push the weights about by a sizeable part of what they have learned. Measured against
# the fall, not the loss level: a task with noisy labels keeps a big scatter at a low loss.
NOISY_SCATTER = 0.10
NOISE_MIN_STEPS = 8  # fewer steps than this in the second half: too few to tell scatter from trend
FIRST_STEPS = 3  # the starting loss = the mean of the first few steps (one step alone is itself noisy)


# What a learner reads for each diagnosis's name (the name itself is a key code compares: never translated).
LABELS = {"diverged": N_("diverged"), "flat": N_("flat"), "over-fitting": N_("over-fitting"),
          "still improving": N_("still improving"), "noisy": N_("noisy"), "healthy": N_("healthy")}


@dataclass
class Diagnosis:
    name: str  # "diverged", "flat", "over-fitting", "still improving", "noisy" or "healthy"
    message: str  # what the curves show, with the epochs/steps and values (in the language set when diagnosed)
    advice: str  # what to change next (ditto)
    # The epochs the message names, for code that checks them (the words may be Chinese): the epoch of the
    # lowest validation loss (over-fitting, healthy) and the first epoch past it (over-fitting: "from epoch").
    best_epoch: float | int | None = None
    from_epoch: float | int | None = None

    @property
    def label(self) -> str:
        """The name in the language set (what a learner reads; `name` stays the English key)."""
        return _(LABELS[self.name]) if self.name in LABELS else self.name

    def __str__(self) -> str:
        return _("{name}: {message} → {advice}").format(name=self.label, message=self.message, advice=self.advice)


# ---------------------------------------------------------------- the evidence

def _evals(run) -> pd.DataFrame:
    """The evaluations with a finite eval_loss, epoch 0 (the base model) included."""
    epochs = run.epochs if run.epochs is not None else pd.DataFrame()
    if "eval_loss" not in epochs:
        return pd.DataFrame(columns=["epoch", "eval_loss", "train_loss"])
    return epochs[np.isfinite(epochs["eval_loss"].astype(float))]


def _step_losses(run) -> np.ndarray:
    steps = run.steps if run.steps is not None else pd.DataFrame()
    return steps["loss"].to_numpy(dtype=float) if "loss" in steps else np.array([])


def _epoch(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _pct(new: float, old: float) -> str:
    return f"{100 * (new - old) / old:+.0f}%"


def best_evaluation(run) -> tuple | None:
    """(epoch, eval_loss) of the lowest validation loss so far, or None before any evaluation."""
    evals = _evals(run)
    return best_of(zip(evals["epoch"], evals["eval_loss"].astype(float)))


def scatter(losses) -> float:
    """Standard deviation of the second half's step losses around their straight-line trend, as
    a fraction of the loss removed so far (NaN when there are too few steps or nothing was removed)."""
    losses = np.asarray(losses, dtype=float)
    half = losses[len(losses) // 2:]
    if len(half) < NOISE_MIN_STEPS or not np.all(np.isfinite(losses)):
        return math.nan
    fall = losses[:FIRST_STEPS].mean() - half.mean()
    if fall <= 0:
        return math.nan
    x = np.arange(len(half))
    trend = np.polyval(np.polyfit(x, half, 1), x)
    return float(np.std(half - trend) / fall)


# ---------------------------------------------------------------- one check per diagnosis

def _diverged(run) -> Diagnosis | None:
    losses = _step_losses(run)
    step = run.summary.get("diverged_at_step")
    if step is None and len(losses) and not np.all(np.isfinite(losses)):
        step = int(np.flatnonzero(~np.isfinite(losses))[0]) + 1
    if run.summary.get("status") != "diverged" and step is None:
        return None
    loss = losses[int(step) - 1] if step is not None and 0 < int(step) <= len(losses) else math.nan
    start = losses[0] if len(losses) else math.nan
    lr = run.config.get("learning_rate")
    message = _("the loss blew up at step {step}: {loss:.4g}, against {start:.4g} at step 1").format(
        step=step, loss=loss, start=start)
    advice = (_("lower the learning rate (it was {lr:g}), or add warmup (warmup_ratio 0.05-0.1) or gradient "
                "clipping (max_grad_norm 1.0)").format(lr=lr) if lr else
              _("lower the learning rate, or add warmup (warmup_ratio 0.05-0.1) or gradient clipping "
                "(max_grad_norm 1.0)"))
    return Diagnosis("diverged", message, advice)


def _flat(run) -> Diagnosis | None:
    losses, evals = _step_losses(run), _evals(run)
    if len(losses) < 2 * FIRST_STEPS:
        return None
    start, end = losses[:FIRST_STEPS].mean(), losses[-FIRST_STEPS:].mean()
    if start <= 0 or (start - end) / start >= FLAT_FRACTION:
        return None
    message = _("the training loss went from {start:.4g} (first steps) to {end:.4g} (last steps) in {steps} steps"
                " — flat from the start").format(start=start, end=end, steps=len(losses))
    if len(evals) >= 2:
        base, best = float(evals["eval_loss"].iloc[0]), float(evals["eval_loss"].min())
        if (base - best) / base >= FLAT_FRACTION:
            return None  # validation loss did move: slow training, not a flat one
        message = _("the training loss went from {start:.4g} (first steps) to {end:.4g} (last steps) in {steps} "
                    "steps; validation loss {base:.4g} before training, {best:.4g} at best — flat from the start"
                    ).format(start=start, end=end, steps=len(losses), base=base, best=best)
    lr = run.config.get("learning_rate")
    return Diagnosis("flat", message, _("raise the learning rate (it was {lr:g}); try 10x").format(lr=lr) if lr
                     else _("raise the learning rate"))


def _overfitting(run) -> Diagnosis | None:
    evals, best = _evals(run), best_evaluation(run)
    if best is None:
        return None
    best_epoch, best_loss = best
    after = evals[evals["epoch"] > best_epoch]
    if after.empty:
        return None
    last = after.iloc[-1]
    last_loss = float(last["eval_loss"])
    if last_loss <= best_loss * (1 + OVERFIT_RISE):
        return None
    train_at = evals.set_index("epoch")["train_loss"] if "train_loss" in evals else pd.Series(dtype=float)
    train_best = float(train_at.get(best_epoch, math.nan))
    train_last = float(last.get("train_loss", math.nan))
    if best_epoch > 0 and not (train_last < train_best):  # validation up, training not down: not over-fitting
        return None
    first_bad = after.iloc[0]["epoch"]
    words = dict(best=_epoch(best_epoch), best_loss=best_loss, last_loss=last_loss, last=_epoch(last["epoch"]),
                 change=_pct(last_loss, best_loss), train_best=train_best, train_last=train_last,
                 first_bad=_epoch(first_bad))
    message = (_("validation loss was lowest at epoch {best} ({best_loss:.4g}) and rose to {last_loss:.4g} by epoch "
                 "{last} ({change}), while the training loss fell to {train_last:.4g}: over-fitting from epoch "
                 "{first_bad}") if best_epoch == 0 else
               _("validation loss was lowest at epoch {best} ({best_loss:.4g}) and rose to {last_loss:.4g} by epoch "
                 "{last} ({change}), while the training loss fell from {train_best:.4g} to {train_last:.4g}: "
                 "over-fitting from epoch {first_bad}")).format(**words)
    message += _accuracy_note(evals, best_epoch)
    epochs = dict(best_epoch=best_epoch, from_epoch=first_bad)
    if run.summary.get("status") == "early_stopped":
        return Diagnosis("over-fitting",
                         message + _("; early stopping ended the run at epoch {last}").format(last=words["last"]),
                         _after_early_stop(run, best_epoch)
                         + _("; to over-fit later, add regularisation (weight_decay, lora_dropout) or more data"),
                         **epochs)
    return Diagnosis("over-fitting", message,
                     _("stop at epoch {best} (num_train_epochs={best}, or early_stopping_patience=2 with "
                       "load_best_model_at_end=True), or add regularisation (weight_decay, lora_dropout) or more data"
                       ).format(best=words["best"]), **epochs)


def _after_early_stop(run, best_epoch) -> str:
    """Advice for a run early stopping already ended: are the returned weights the best epoch's?"""
    kept = run.summary.get("best_epoch")  # the trainer's best: it counts only gains above early_stopping_threshold
    threshold = run.config.get("early_stopping_threshold")
    if not run.summary.get("restored_best"):
        return _("set load_best_model_at_end=True: the returned weights are the last epoch's, not the best one's")
    if kept is not None and kept != best_epoch:
        return _("the returned weights are epoch {kept}'s, not those of the minimum at epoch {best}: "
                 "early_stopping_threshold={threshold} did not count that gain; lower it").format(
                     kept=_epoch(kept), best=_epoch(best_epoch), threshold=threshold)
    return _("nothing to change: early stopping caught it, and the returned weights are epoch {kept}'s").format(
        kept=_epoch(kept))


def _accuracy_note(evals, best_epoch) -> str:
    """Where accuracy peaked, if not at the epoch of the lowest validation loss."""
    if "eval_accuracy" not in evals or not evals["eval_accuracy"].notna().any():
        return ""
    acc = evals.set_index("epoch")["eval_accuracy"].astype(float)
    if acc.get(best_epoch, math.nan) >= acc.max():
        return ""
    return _("; accuracy peaked later, at epoch {peak} ({peak_accuracy:.3g} against {accuracy:.3g} at the loss "
             "minimum): loss and accuracy disagree on the best epoch").format(
                 peak=_epoch(acc.idxmax()), peak_accuracy=acc.max(), accuracy=acc.get(best_epoch, math.nan))


def _still_improving(run) -> Diagnosis | None:
    evals = _evals(run)
    if len(evals) < 2:
        return None
    last, before = evals.iloc[-1], evals.iloc[-2]
    last_loss, before_loss = float(last["eval_loss"]), float(before["eval_loss"])
    if last_loss > float(evals["eval_loss"].min()) or last_loss >= before_loss * (1 - IMPROVING_FALL):
        return None
    message = _("validation loss still falling at the last evaluation: {before_loss:.4g} at epoch {before} → "
                "{last_loss:.4g} at epoch {last} ({change}); best epoch so far: the last one").format(
                    before_loss=before_loss, before=_epoch(before["epoch"]), last_loss=last_loss,
                    last=_epoch(last["epoch"]), change=_pct(last_loss, before_loss))
    if run.summary.get("status") == "running":
        return Diagnosis("still improving", message, _("let it run; if it is still improving at the end, train longer"),
                         best_epoch=last["epoch"])
    if run.summary.get("status") == "interrupted":
        return Diagnosis("still improving", message, _("it was still improving when it was stopped: let it finish"),
                         best_epoch=last["epoch"])
    epochs = run.config.get("num_train_epochs")
    return Diagnosis("still improving", message, _("train longer (num_train_epochs above {epochs})").format(
        epochs=epochs) if epochs else _("train longer"), best_epoch=last["epoch"])


def _noisy(run) -> Diagnosis | None:
    losses = _step_losses(run)
    spread = scatter(losses)
    if not spread > NOISY_SCATTER:
        return None
    half = len(losses) // 2
    batch = run.config.get("per_device_train_batch_size")
    fall = losses[:FIRST_STEPS].mean() - losses[half:].mean()
    message = _("from step {step} on, the step losses scatter around their trend by {scatter:.3g} (standard "
                "deviation), {percent:.0f}% of the {fall:.3g} the loss has fallen since the first steps").format(
                    step=half + 1, scatter=spread * fall, percent=100 * spread, fall=fall)
    return Diagnosis("noisy", message,
                     _("a bigger batch (it was {batch}) or gradient accumulation, or a lower learning rate").format(
                         batch=batch) if batch else _("a bigger batch, or a lower learning rate"))


def _healthy(run) -> Diagnosis:
    best = best_evaluation(run)
    evals = _evals(run)
    if best is None or len(evals) < 2:
        return Diagnosis("healthy", _("no sign of trouble yet (no evaluation after training so far)"),
                         _("let it run"))
    base = float(evals["eval_loss"].iloc[0])
    return Diagnosis("healthy", _("validation loss fell from {base:.4g} to {best_loss:.4g}, lowest at epoch {best}, "
                                  "and has levelled off there").format(base=base, best_loss=best[1],
                                                                       best=_epoch(best[0])),
                     _("nothing to fix; to do better, try the next knob (learning rate, batch size, or more data)"),
                     best_epoch=best[0])


def diagnose(run) -> list[Diagnosis]:
    """What the curves of `run` show, most serious first; always at least one Diagnosis."""
    for alone in (_diverged, _flat):
        found = alone(run)
        if found:
            return [found]
    found = [d for d in (_overfitting(run), _still_improving(run), _noisy(run)) if d]
    return found or [_healthy(run)]


def report(run) -> str:
    """diagnose(run) as text, a line per diagnosis."""
    return "\n".join(str(d) for d in diagnose(run))


def verdicts(runs) -> pd.DataFrame:
    """A row per run (Run objects): its name, status, best epoch, the diagnoses, and the first diagnosis's
    evidence and advice (the most serious one); a table to read, so in the reader's language."""
    rows = []
    for run in runs:
        found = diagnose(run)
        rows.append({"run": run.config.get("run_name") or run.name, "status": status_shown(run.status),
                     "best_epoch": run.best_epoch, "diagnosis": ", ".join(d.label for d in found),
                     "evidence": found[0].message, "advice": found[0].advice})
    return pd.DataFrame(rows)
