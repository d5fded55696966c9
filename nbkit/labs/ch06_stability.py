"""Chapter 6's measurements: gradient clipping, seeds, data-loader workers, mixed precision.

    clipping_table(runs)                 # per run: share of steps clipped, grad-norm percentiles
    playbook_threshold(run)              # the tuning playbook's clip: ~90th percentile of unclipped norms
    same_curves(run_a, run_b)            # bit-identical per-step losses and grad norms?
    seed_band(runs)                      # spread of a metric over seeds: is a difference real?
    paired_rule(differences)             # a change paired over seeds: same sign everywhere, mean > 3 SE?
    runs_by(runs, "max_grad_norm", "seed")  # {(1.0, 43): run}: a sweep's runs by their knob values
    train_many(configs, workers=2)       # several configs side by side in worker processes
    clipped_fraction(run), max_relative_difference(a, b)  # one run's share clipped; two curves' largest gap
    clipping_evidence(sweep), paired_differences(runs, reference_runs), ...  # the checks' evidence: a row per seed
    LazyTokenizedDataset(path, tok, 64)  # reads and tokenises a JSONL row in __getitem__
    loader_throughput(dataset, workers)  # tokens/s of a DataLoader with that many workers
    number_formats(), autocast_dtypes()  # what fp16 / bf16 hold, which ops autocast keeps in fp32
    fp16_gradient_demo(cfg)              # fp16 gradients underflow; loss scaling keeps them
    grad_scaler_trace(cfg)               # fp16 overflow: the scaler skips the step, halves the scale

Everything here measures; nothing draws (figures come from nbkit.views.plots and the chapter).
"""
from __future__ import annotations

import json
import math
import os
import time
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from nbkit.core.data import _parse_row, collate, tokenize_example
from nbkit.core.i18n import N_, _
from nbkit.core.runs import as_runs

PLAYBOOK_PERCENTILE = 90  # Godbole et al. 2023: clip at about the 90th percentile of unclipped norms
MOSTLY_CLIPPED = 0.5  # the playbook's warning sign: more than half the steps clipped


# ---------------------------------------------------------------- gradient clipping

def clipping_table(runs) -> pd.DataFrame:
    """A row per run: its max_grad_norm and seed, status, the share of its steps that were clipped, the
    median / 90th percentile / largest gradient norm before clipping, and its final eval loss."""
    rows = []
    for run in as_runs(runs):
        s = run.steps
        clipped = s["clipped"].astype(str).str.lower() == "true"
        rows.append({"max_grad_norm": run.config.get("max_grad_norm"), "seed": run.config.get("seed"),
                     "status": run.status, "steps": len(s),
                     "clipped_fraction": float(clipped.mean()) if len(s) else math.nan,
                     "grad_norm_p50": s["grad_norm"].median(),
                     f"grad_norm_p{PLAYBOOK_PERCENTILE}": s["grad_norm"].quantile(PLAYBOOK_PERCENTILE / 100),
                     "grad_norm_max": s["grad_norm"].max(), "max_loss": s["loss"].max(),
                     "final_eval_loss": run.summary.get("final_eval_loss"), "path": str(run.path)})
    return pd.DataFrame(rows)


def playbook_threshold(run, percentile: float = PLAYBOOK_PERCENTILE) -> float:
    """The clip the tuning playbook suggests: the given percentile of the gradient norms measured
    BEFORE clipping (nbkit records the pre-clip norm on every step, clipped or not)."""
    if not 0 < percentile < 100:
        raise ValueError(_("percentile={percentile!r} is invalid; allowed: a number in (0, 100)")
                         .format(percentile=percentile))
    norms = as_runs(run)[0].steps["grad_norm"]
    norms = norms[np.isfinite(norms)]
    if not len(norms):
        raise ValueError(_("the run has no finite gradient norm: train at least one step"))
    return float(np.percentile(norms, percentile))


# ---------------------------------------------------------------- seeds

def same_curves(a, b, columns=("loss", "grad_norm"), steps: int | None = None) -> bool:
    """True when two runs took the same number of steps with bit-identical values in `columns`. steps: compare
    only each run's first `steps` steps (both must have taken them): a short run against the start of a long one
    at a constant LR, where the schedule does not depend on the run's length (chapter 6's workers exercise)."""
    a, b = as_runs([a, b])
    if steps is not None:
        if min(len(a.steps), len(b.steps)) < steps:
            return False
        a_steps, b_steps = a.steps.iloc[:steps], b.steps.iloc[:steps]
    elif len(a.steps) != len(b.steps):
        return False
    else:
        a_steps, b_steps = a.steps, b.steps
    return all(np.array_equal(a_steps[c].to_numpy(), b_steps[c].to_numpy()) for c in columns)


def seed_band(runs, metric: str = "final_eval_loss") -> dict:
    """The spread of summary[metric] over runs that differ only by their seed: mean, standard
    deviation, min, max and width (max - min). A change of config that moves the metric by less
    than this width could be the seed alone."""
    values = np.array([r.summary[metric] for r in as_runs(runs)], dtype=float)
    if len(values) < 2:
        raise ValueError(_("seed_band needs at least 2 runs, got {n}").format(n=len(values)))
    return {"runs": len(values), "mean": values.mean(), "std": values.std(ddof=1), "min": values.min(),
            "max": values.max(), "width": values.max() - values.min()}


def step_band(runs, metric: str = "loss") -> pd.DataFrame:
    """Per step: min, mean and max of run.steps[metric] over the runs (the seeds' band)."""
    table = pd.concat([r.steps.set_index("step")[metric] for r in as_runs(runs)], axis=1)
    return pd.DataFrame({"min": table.min(axis=1), "mean": table.mean(axis=1), "max": table.max(axis=1)})


# ---------------------------------------------------------------- data-loader workers

def write_jsonl(examples: list, path: str | Path) -> Path:
    """Examples ({"messages": [...]}) as a JSONL file, one per line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(e) + "\n" for e in examples))
    return path


class LazyTokenizedDataset(Dataset):
    """Rows of a JSONL file, read from disk, parsed and tokenised (chat template, labels masked)
    only when a row is asked for, as streaming pipelines do. That is the work that DataLoader
    workers take off the training process. Only the byte offsets of the lines are kept."""

    def __init__(self, path: str | Path, tokenizer, max_seq_length: int = 64):
        self.path, self.tokenizer, self.max_seq_length = str(path), tokenizer, max_seq_length
        self.offsets, offset = [], 0
        with open(self.path, "rb") as f:
            for line in f:
                if line.strip():
                    self.offsets.append(offset)
                offset += len(line)

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i: int) -> dict:
        with open(self.path, "rb") as f:
            f.seek(self.offsets[i])
            example = {"messages": _parse_row(json.loads(f.readline()))}
        return tokenize_example(example, self.tokenizer, self.max_seq_length)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which containers and CI limit)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def loader_throughput(dataset, num_workers: int, batch_size: int = 16, pad_token_id: int = 0) -> dict:
    """Iterate a DataLoader over the whole dataset once: tokens per second (non-padding tokens),
    wall seconds (worker start-up included: it is paid every epoch unless persistent_workers),
    the CPU seconds the MAIN process spent (what is left for training), and PyTorch's own warning
    when the worker count exceeds what it suggests for this machine."""
    if num_workers < 0:
        raise ValueError(_("num_workers={num_workers!r} is invalid; allowed: a whole number >= 0")
                         .format(num_workers=num_workers))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                            collate_fn=partial(collate, pad_token_id=pad_token_id))
        start, cpu_start, tokens = time.perf_counter(), time.process_time(), 0
        for batch in loader:
            tokens += int(batch["attention_mask"].sum())
        seconds, main_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    said = [str(w.message).split(".")[0] for w in caught if "worker" in str(w.message)]
    return {"num_workers": num_workers, "tokens": tokens, "seconds": seconds, "tokens_per_second": tokens / seconds,
            "main_process_cpu_seconds": main_cpu, "torch_warning": said[0] if said else ""}


def cpu_has_bf16() -> bool:
    """Does this CPU have bf16 instructions (AVX-512 BF16 or AMX)? Without them bf16 is emulated."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: unknown, say no
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


# ---------------------------------------------------------------- mixed precision

FORMATS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def number_formats(values=(70000.0, 1.0 + 2 ** -9, 1e-4, 1e-6, 1e-8)) -> pd.DataFrame:
    """Each value as each format stores it (round-trip to fp32): fp16 overflows to inf above
    65504 and flushes to 0 below about 6e-8; bf16 keeps fp32's range with 8 bits of precision."""
    rows = [{"value": v, **{name: float(torch.tensor(v).to(dtype).float()) for name, dtype in FORMATS.items()}}
            for v in values]
    return pd.DataFrame(rows)


def format_limits() -> pd.DataFrame:
    """Largest value, smallest normal and subnormal value, and machine epsilon of each format."""
    rows = []
    for name, dtype in FORMATS.items():
        info = torch.finfo(dtype)
        rows.append({"format": name, "bits": info.bits, "max": info.max, "smallest_normal": info.smallest_normal,
                     "smallest_subnormal": info.smallest_normal * info.eps, "eps": info.eps})
    return pd.DataFrame(rows)


def autocast_dtypes(device_type: str = "cpu", dtype: torch.dtype = torch.bfloat16) -> pd.DataFrame:
    """The dtype each common operation returns under torch.autocast, given fp32 inputs: matmuls
    run in the low precision; ops autocast keeps in fp32 (or leaves as they are) show fp32."""
    x, w = torch.randn(4, 8), torch.randn(8, 8)
    target = torch.randint(0, 8, (4,))
    ops = {"matmul": lambda: x @ w, "linear": lambda: torch.nn.functional.linear(x, w),
           "softmax": lambda: torch.softmax(x @ w, -1), "log_softmax": lambda: torch.log_softmax(x @ w, -1),
           "layer_norm": lambda: torch.nn.functional.layer_norm(x @ w, (8,)),
           "cross_entropy": lambda: torch.nn.functional.cross_entropy(x @ w, target),
           "sum": lambda: (x @ w).sum(), "exp": lambda: torch.exp(x @ w),
           "mse_loss": lambda: torch.nn.functional.mse_loss(x @ w, x)}
    rows = []
    with torch.autocast(device_type=device_type, dtype=dtype):
        for name, op in ops.items():
            rows.append({"op": name, "output_dtype": str(op().dtype).replace("torch.", "")})
    return pd.DataFrame(rows)


def _one_batch(cfg, tokenizer, n: int):
    from nbkit.core.train import build_datasets

    features = build_datasets(cfg, tokenizer)[0][:n]
    return collate(features, tokenizer.pad_token_id)


def _mean_loss(model, batch, fp16: bool) -> torch.Tensor:
    """The mean loss per response token of one batch, the forward in fp16 autocast or in fp32."""
    from nbkit.core.evaluate import token_loss_sum

    with torch.autocast("cpu", dtype=torch.float16, enabled=fp16):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    loss_sum, n = token_loss_sum(logits, batch["labels"])
    return loss_sum / n


def _gradients(model, batch, loss_factor: float, fp16: bool, scale: float = 1.0) -> torch.Tensor:
    """All gradients of (loss_factor x the mean token loss) as one flat fp32 vector; divided by
    `scale` after a backward of the scaled loss, as GradScaler.unscale_ does."""
    model.zero_grad(set_to_none=True)
    (_mean_loss(model, batch, fp16) * loss_factor * scale).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]) / scale


def fp16_gradient_demo(cfg, loss_factor: float = 1e-5, scale: float = 2.0 ** 16, batch_size: int = 4) -> pd.DataFrame:
    """One batch, three backward passes of the same loss, shrunk by loss_factor (as a stand-in for
    the small gradients of large models, Micikevicius et al. 2018, Fig. 3): in fp32 (the
    reference), in fp16 autocast, and in fp16 with the loss multiplied by `scale` before backward
    and the gradients divided by it after (loss scaling). Per pass: the share of gradient entries
    that are exactly zero, and the relative error of the gradient against fp32."""
    from nbkit.core.models import fresh_model

    model, tokenizer = fresh_model(cfg)
    batch = _one_batch(cfg, tokenizer, batch_size)
    reference = _gradients(model, batch, loss_factor, fp16=False)
    rows = []
    for name, fp16, s in (("fp32", False, 1.0), ("fp16", True, 1.0), (f"fp16, loss x {scale:g}", True, scale)):
        grad = _gradients(model, batch, loss_factor, fp16, s)
        rows.append({"backward": name, "zero_fraction": float((grad == 0).float().mean()),
                     "relative_error": float((grad - reference).norm() / reference.norm())})
    return pd.DataFrame(rows)


def grad_scaler_trace(cfg, init_scale: float = 2.0 ** 40, max_steps: int = 16, steps_after_fit: int = 2,
                      batch_size: int = 4) -> pd.DataFrame:
    """fp16 overflow, and the dynamic loss scaler curing it: a scale too large makes the scaled
    gradients overflow fp16 (inf); GradScaler then skips the optimizer step and halves the scale,
    until the gradients fit. It stops `steps_after_fit` steps after the first finite one, or after
    `max_steps` (a model whose largest gradient entry is g fits once scale x g < 65504: SmolLM2's
    embeddings, g = 15.7, fit at 4096, 8 halvings below 2^20; the tiny model sooner). A row per step: the scale used,
    whether gradients were finite, whether the weights changed."""
    from nbkit.core.models import fresh_model
    from nbkit.core.train import build_optimizer

    model, tokenizer = fresh_model(cfg)
    batch = _one_batch(cfg, tokenizer, batch_size)
    optimizer = build_optimizer(cfg, model)
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    rows = []
    for step in range(1, max_steps + 1):
        scale = scaler.get_scale()
        before = next(model.parameters()).detach().clone()
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(_mean_loss(model, batch, fp16=True)).backward()
        scaler.unscale_(optimizer)
        finite = all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        scaler.step(optimizer)
        scaler.update()
        rows.append({"step": step, "scale": scale, "gradients_finite": bool(finite),
                     "weights_changed": not torch.equal(before, next(model.parameters()).detach())})
        if sum(r["gradients_finite"] for r in rows) >= steps_after_fit:
            break
    return pd.DataFrame(rows)


def step_seconds(run) -> float:
    """Median seconds per optimizer step of a run (from its per-step tokens and tokens/s)."""
    s = as_runs(run)[0].steps
    return float((s["tokens"] / s["tokens_per_second"]).median())


# ---------------------------------------------------------------- seed sets

PAIRED_STANDARD_ERRORS = 3  # the paired rule: a mean this many standard errors from zero is not luck


def paired_rule(differences, standard_errors: float = PAIRED_STANDARD_ERRORS) -> dict:
    """Is a change real? `differences`: per seed, the metric with the change minus without it,
    both runs at that seed (same split, same data order: paired). The rule: every difference
    has the sign of their mean, and the mean is more than `standard_errors` standard errors
    (std / sqrt(n)) from zero. per_seed[i]: seed i goes the mean's way and the mean passes (a
    seed going the other way is the one that spoils it); real: all of per_seed."""
    d = np.asarray(differences, dtype=float)
    if len(d) < 2:
        raise ValueError(_("paired_rule needs at least 2 paired differences, got {n}").format(n=len(d)))
    mean, se = float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d)))
    beyond = abs(mean) > standard_errors * se
    per_seed = [bool(beyond and np.sign(x) == np.sign(mean) and x != 0) for x in d]
    return {"mean": mean, "standard_error": se, "standard_errors_from_zero": abs(mean) / se if se else math.inf,
            "per_seed": per_seed, "real": all(per_seed)}


def runs_by(runs, *knobs) -> dict:
    """The runs (Runs, folders or a sweep table) keyed by their config's values of `knobs`:
    runs_by(clips, "max_grad_norm", "seed")[1.0, 43]; with one knob the key is the value itself."""
    if not knobs:
        raise ValueError(_("runs_by needs at least one knob, e.g. runs_by(df, 'seed')"))
    out = {}
    for run in as_runs(runs):
        key = tuple(run.config.get(k) for k in knobs)
        out[key[0] if len(knobs) == 1 else key] = run
    return out


def train_many(configs, workers: int = 1) -> list:
    """train(cfg, keep_model=False) for each config, in order: configs that are no grid (each
    seed's own clipping threshold, say). workers > 1: side by side in nbkit.core.workers' processes."""
    from nbkit.core.workers import run_side_by_side, train_in_worker

    return run_side_by_side(train_in_worker, [(c, False) for c in configs], workers, name="train_many", what=N_("runs"))


def max_relative_difference(a, b) -> float:
    """The largest |a_i / b_i - 1| of two aligned sequences (the per-step losses of two runs)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or not len(a):
        raise ValueError(_("max_relative_difference needs two non-empty sequences of one length, got {a}, {b}")
                         .format(a=a.shape, b=b.shape))
    return float(np.max(np.abs(a / b - 1)))


def clipped_fraction(run) -> float:
    """The share of a run's steps whose gradient norm was clipped (clipping_table's column, for one run)."""
    s = as_runs(run)[0].steps
    return float((s["clipped"].astype(str).str.lower() == "true").mean()) if len(s) else math.nan


# ---------------------------------------------------------------- the evidence of the chapter's checks
# A row per seed (index "seed"); where a check reads one value per clip value or per pass, those
# values are a column group: evidence["final_eval_loss"] is a row per seed and a column per clip value.

def clipping_evidence(runs) -> pd.DataFrame:
    """A row per seed of a sweep over max_grad_norm x seed: the unclipped run's status_without,
    diverged_at_step (None if it did not diverge) and base_eval_loss; then clipping_table's status,
    final_eval_loss, clipped_fraction and grad_norm_p50 of the clipped runs as column groups, a column
    per max_grad_norm: evidence["final_eval_loss"][1.0] is the run clipped at 1.0 on each seed."""
    runs = as_runs(runs)
    unclipped = [r for r in runs if r.config.get("max_grad_norm") is None]
    seeds = pd.Index([r.config["seed"] for r in unclipped], name="seed")
    out = {"status_without": pd.Series([r.status for r in unclipped], index=seeds),
           "diverged_at_step": pd.Series([r.summary.get("diverged_at_step") for r in unclipped], index=seeds,
                                         dtype=object),  # a step, or None: no NaN in its place
           "base_eval_loss": pd.Series([r.summary["base_eval_loss"] for r in unclipped], index=seeds)}
    out = {name: column.to_frame("") for name, column in out.items()}  # one column, read as evidence[name]
    clipped = clipping_table([r for r in runs if r.config.get("max_grad_norm") is not None])
    for column in ("status", "final_eval_loss", "clipped_fraction", "grad_norm_p50"):
        out[column] = clipped.pivot(index="seed", columns="max_grad_norm", values=column)
    return pd.concat(out, axis=1)


def loss_jump_table(runs, clip: float = 1.0) -> pd.DataFrame:
    """A row per seed of a sweep over max_grad_norm in (None, clip) x seed: the unclipped run's first
    step loss (first_loss); the loss after the first update and the highest step loss, without
    clipping and clipped (loss_after_first_update_without, ..._clipped, max_loss_without, ..._clipped)."""
    by = runs_by(runs, "max_grad_norm", "seed")
    rows = []
    for seed in sorted({seed for _clip, seed in by}):
        without, clipped = by[None, seed].steps["loss"], by[clip, seed].steps["loss"]
        rows.append({"seed": seed, "first_loss": without.iloc[0], "loss_after_first_update_without": without.iloc[1],
                     "loss_after_first_update_clipped": clipped.iloc[1], "max_loss_without": without.max(),
                     "max_loss_clipped": clipped.max()})
    return pd.DataFrame(rows).set_index("seed")


def paired_differences(runs, reference_runs, metric: str = "final_eval_loss") -> pd.DataFrame:
    """A row per run (by its seed, in the runs' order), paired with the reference run of the same
    seed: summary[metric] of each (metric, reference_<metric>) and difference_to_reference (the
    run's minus the reference's), what paired_rule reads."""
    reference = runs_by(reference_runs, "seed")
    rows = []
    for run in as_runs(runs):
        seed = run.config["seed"]
        mine, theirs = run.summary[metric], reference[seed].summary[metric]
        rows.append({"seed": seed, metric: mine, f"reference_{metric}": theirs,
                     "difference_to_reference": mine - theirs})
    return pd.DataFrame(rows).set_index("seed")


def curve_repeats(runs, column: str = "loss") -> pd.DataFrame:
    """A row per run (by its seed): runs_with_this_curve, how many of the runs (itself included) have
    its per-step curve of `column`, rounded to 12 decimals: 1 is a curve of its own."""
    runs = as_runs(runs)
    curves = [tuple(r.steps[column].round(12)) for r in runs]
    return pd.DataFrame({"runs_with_this_curve": [curves.count(c) for c in curves]},
                        index=pd.Index([r.config["seed"] for r in runs], name="seed"))


UNDERFLOW_PASSES = ("fp32", "fp16", "fp16_scaled")  # fp16_gradient_demo's rows, in its order


def underflow_table(demos: dict) -> pd.DataFrame:
    """A row per seed of {seed: fp16_gradient_demo(...)}: the column groups zero_fraction and
    relative_error, each with the passes fp32, fp16 and fp16_scaled (fp16 with the loss scaled)."""
    rows = {seed: {(column, name): demo[column].iloc[i] for column in ("zero_fraction", "relative_error")
                   for i, name in enumerate(UNDERFLOW_PASSES)}
            for seed, demo in demos.items()}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("seed")


def scaler_table(traces: dict) -> pd.DataFrame:
    """A row per seed of {seed: grad_scaler_trace(...)}: overflow_steps (the steps before the first
    one with finite gradients; None if none had them), steps_skipped_exactly (the weights moved on the
    finite steps only), halved_each_overflow (the scale halved after each overflowing step), and the
    trace's scales and gradients_finite as lists."""
    rows = []
    for seed, trace in traces.items():
        finite = trace["gradients_finite"]
        overflows = int(finite.idxmax()) if finite.any() else None
        scale = trace["scale"]
        rows.append({"seed": seed, "overflow_steps": overflows,
                     "steps_skipped_exactly": bool((trace["weights_changed"] == finite).all()),
                     "halved_each_overflow": overflows is not None
                     and all(scale.iloc[i + 1] == scale.iloc[i] / 2 for i in range(overflows)),
                     "scales": scale.tolist(), "gradients_finite": finite.tolist()})
    return pd.DataFrame(rows).set_index("seed")


def loss_curve_gaps(runs, reference_runs) -> pd.DataFrame:
    """paired_differences of final_eval_loss, with max_relative_loss_difference: the largest relative
    gap between a run's per-step losses and its seed's reference run's, over the steps the reference took."""
    table = paired_differences(runs, reference_runs)
    reference = runs_by(reference_runs, "seed")
    table["max_relative_loss_difference"] = [
        max_relative_difference(run.steps["loss"].iloc[:len(reference[seed].steps)], reference[seed].steps["loss"])
        for seed, run in zip(table.index, as_runs(runs))]
    return table

