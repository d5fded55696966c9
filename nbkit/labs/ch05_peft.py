"""Parameter-efficient fine-tuning, measured: chapter 5's tools.

    METHODS, method_config(base, "qlora-4bit")     full / freeze / LoRA / QLoRA 8-bit / QLoRA 4-bit
    training_memory(cfg)                            weights + gradients + optimizer state, measured
    seconds_per_step(run), forgetting(run, ...)     cost and damage of a finished run
    lora_update_norm(model)                         ||scaling * B @ A|| summed over the adapted layers
    quantization_error(model, bits)                 how far the quantised base's weights are from fp32
    save_adapter(run), reload_in_fresh_process(...) the adapter as an artifact, reloaded by plain PEFT
    method_sweeps, compare_methods, by_seed(...)    the chapter's tables over a seed set
    curve_distance(run_a, run_b), shortfall(...)    how far two runs' curves, or a loss from the best, are
    learned_table, forgetting_table, rank_fit_table  the checks' evidence: a row per seed, named columns

Everything is real: PEFT adapters, bitsandbytes NF4 / int8 weights (both work on the CPU), tensors
measured as allocated. Nothing is simulated or estimated here (the planner is nbkit.core.memory's job).
"""
from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from functools import partial
from pathlib import Path

import pandas as pd
import torch

from nbkit.core.config import TrainConfig
from nbkit.core.evaluate import heldout_text_loss
from nbkit.core.i18n import _
from nbkit.core.memory import optimizer_state_bytes
from nbkit.core.models import count_parameters, fresh_model, load_base_model, memory_footprint, quiet_loading
from nbkit.core.runs import as_runs
from nbkit.core.train import build_optimizer

# The chapter's methods, as TrainConfig fields (LLaMA-Factory's names). QLoRA = LoRA on a base
# quantised by bitsandbytes: 8-bit (LLM.int8) or 4-bit NF4 with double quantisation.
METHODS = {
    "full": dict(finetuning_type="full"),
    "freeze": dict(finetuning_type="freeze"),
    "lora": dict(finetuning_type="lora"),
    "qlora-8bit": dict(finetuning_type="lora", quantization_bit=8),
    "qlora-4bit": dict(finetuning_type="lora", quantization_bit=4),
}
ADAPTER_DIR = "adapter"  # save_adapter's folder inside the run folder
MEMORY_PROBE_TOKENS = 16  # one short row is enough: weights, gradients and optimizer state do not depend on it


def method_config(base: TrainConfig, method: str) -> TrainConfig:
    """base with one of METHODS applied (LoRA fields of base are kept; quantization_bit is set)."""
    if method not in METHODS:
        raise ValueError(_("method: {method!r} is not allowed; allowed: {methods}").format(
            method=method, methods=", ".join(METHODS)))
    fields = {"quantization_bit": None, **METHODS[method]}
    return base.replace(**fields)


def method_of(config: dict) -> str:
    """The METHODS name of a run's config dict."""
    if config["finetuning_type"] != "lora":
        return config["finetuning_type"]
    bits = config.get("quantization_bit")
    return f"qlora-{bits}bit" if bits else "lora"


def _grad_bytes(model) -> int:
    return sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)


def training_memory(cfg: TrainConfig) -> dict:
    """Bytes of the weights (as stored: 4-bit, 8-bit or fp32), of the gradients and of the
    optimizer state, measured on the tensors of a fresh model after ONE real training step
    (gradients exist after backward; the optimizer creates its state at its first step).
    Activations are left out: they depend on batch and length, not on the method."""
    model, _ = fresh_model(cfg, quiet=cfg.disable_tqdm)
    optimizer = build_optimizer(cfg, model)
    tokens = torch.arange(2, 2 + MEMORY_PROBE_TOKENS).unsqueeze(0)
    model(input_ids=tokens).logits.float().pow(2).mean().backward()
    gradients = _grad_bytes(model)
    optimizer.step()
    out = dict(count_parameters(model), weights_bytes=memory_footprint(model), gradient_bytes=gradients,
               optimizer_bytes=optimizer_state_bytes(optimizer))
    out["total_bytes"] = out["weights_bytes"] + out["gradient_bytes"] + out["optimizer_bytes"]
    return out


def preview(cfg: TrainConfig) -> str:
    """One line for the panel, before training: what trains and what it costs in memory."""
    m = training_memory(cfg)
    share = m["trainable_params"] / m["total_params"]
    return _("{trainable:,} of {total:,} parameters train ({share:.1%}); "
             "weights {weights:.2f} MB + gradients {gradients:.2f} MB + "
             "optimizer state {optimizer:.2f} MB = {memory:.2f} MB").format(
        trainable=m["trainable_params"], total=m["total_params"], share=share, weights=m["weights_bytes"] / 1e6,
        gradients=m["gradient_bytes"] / 1e6, optimizer=m["optimizer_bytes"] / 1e6, memory=m["total_bytes"] / 1e6)


def seconds_per_step(run) -> float:
    """Median wall seconds of one optimizer step (forward, backward, optimizer), from the step log."""
    steps = run.steps
    return float((steps["tokens"] / steps["tokens_per_second"]).median())


def forgetting(run, base_heldout_loss: float) -> dict:
    """Loss on held-out pretraining-style text of the fine-tuned model (run.model) against the
    base's: a rise means the model forgot some of what it was pretrained on."""
    if run.model is None:
        raise ValueError(_("{run}: run.model is None: keep the model (sweep(..., keep_models=True))")
                         .format(run=run.name))
    after = heldout_text_loss(run.model, run.tokenizer)
    return {"heldout_loss_before": base_heldout_loss, "heldout_loss_after": after,
            "forgetting": after - base_heldout_loss}


def lora_update_norm(model) -> float:
    """Frobenius norm of the whole LoRA update: every adapted layer's delta W = scaling * B @ A,
    with PEFT's scaling (lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora)."""
    squares = 0.0
    for module in model.modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
            delta = module.scaling["default"] * (b.detach().double() @ a.detach().double())
            squares += float(delta.pow(2).sum())
    if squares == 0.0 and not any(hasattr(m, "lora_A") for m in model.modules()):
        raise ValueError(_("lora_update_norm: the model has no LoRA layers (finetuning_type='lora' makes them)"))
    return squares ** 0.5


def _linear_weights(model) -> dict:
    """{name: fp32 weight} of every linear layer inside the decoder (what quantisation touches)."""
    from peft.utils.integrations import dequantize_bnb_weight

    out = {}
    for name, module in model.named_modules():
        if ".layers." not in f".{name}" or not hasattr(module, "weight") or module.weight.ndim != 2:
            continue
        weight = module.weight
        state = getattr(weight, "quant_state", None)
        if weight.__class__.__name__ in ("Params4bit", "Int8Params"):
            weight = dequantize_bnb_weight(weight, state=state if state is not None else module.state)
        out[name] = weight.detach().float()
    return out


def quantization_error(cfg: TrainConfig, bits: int) -> dict:
    """How far the base's decoder weights move when bitsandbytes quantises them: the relative error
    ||W_q - W|| / ||W|| over all linear layers, and the stored bytes of the model, fp32 vs quantised."""
    if bits not in (4, 8):
        raise ValueError(_("bits: {bits!r} is not allowed; allowed: 4 (NF4) or 8 (int8)").format(bits=bits))
    plain_cfg = cfg.replace(finetuning_type="lora", quantization_bit=None)
    with quiet_loading(cfg.disable_tqdm):
        plain = load_base_model(plain_cfg)
        quantised = load_base_model(plain_cfg.replace(quantization_bit=bits))
    exact, approx = _linear_weights(plain), _linear_weights(quantised)
    diff = sum(float((approx[n] - w).pow(2).sum()) for n, w in exact.items())
    norm = sum(float(w.pow(2).sum()) for w in exact.values())
    return {"bits": bits, "relative_error": (diff / norm) ** 0.5, "layers": len(exact),
            "model_bytes_fp32": memory_footprint(plain), "model_bytes_quantised": memory_footprint(quantised)}


def save_adapter(run, folder: str | Path | None = None) -> Path:
    """Save run.model with save_pretrained into <run folder>/adapter (a LoRA run saves only its
    adapter: adapter_config.json + adapter_model.safetensors; full and freeze save the whole model)."""
    if run.model is None:
        raise ValueError(_("{run}: run.model is None: keep the model (sweep(..., keep_models=True))")
                         .format(run=run.name))
    folder = Path(folder) if folder is not None else Path(run.path) / ADAPTER_DIR
    run.model.save_pretrained(folder)
    return folder


def adapter_validation_loss(run_path: str | Path, merge: bool = False) -> float:
    """The validation loss of a saved LoRA adapter, loaded the plain way: the base with
    transformers, the adapter with peft.PeftModel.from_pretrained (merged into the base with
    merge_and_unload if asked), evaluated on the run's own validation split."""
    from peft import PeftModel
    from torch.utils.data import DataLoader

    from nbkit.core.data import collate
    from nbkit.core.evaluate import evaluate_loss
    from nbkit.core.models import load_tokenizer
    from nbkit.core.runs import load_run
    from nbkit.core.train import build_datasets

    run = load_run(run_path)
    cfg = TrainConfig.from_dict(run.config)
    with quiet_loading(True):
        model = PeftModel.from_pretrained(load_base_model(cfg), str(Path(run_path) / ADAPTER_DIR))
    if merge:
        model = model.merge_and_unload()
    tokenizer = load_tokenizer(cfg)
    _, val_features, _ = build_datasets(cfg, tokenizer)
    loader = DataLoader(val_features, batch_size=cfg.per_device_eval_batch_size,
                        collate_fn=partial(collate, pad_token_id=tokenizer.pad_token_id))
    return evaluate_loss(model, loader, torch.device("cpu"))


def reload_in_fresh_process(run_path: str | Path) -> dict:
    """adapter_validation_loss in a new Python process (nothing shared with this one): the loss
    of the adapter as loaded, and merged into the base."""
    code = ("import json, sys; from nbkit.labs.ch05_peft import adapter_validation_loss as f; "
            "print(json.dumps({'adapter': f(sys.argv[1]), 'merged': f(sys.argv[1], merge=True)}))")
    out = subprocess.run([sys.executable, "-c", code, str(run_path)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- tables and figures of the chapter

@contextlib.contextmanager
def tiny_model_threads(model: str):
    """One torch thread while this process evaluates or trains the tiny model, then the setting as it
    was: its matrices are too small for a second thread to help, and when the cores are busy (runs in
    worker processes beside it) a second thread waiting for its turn made heldout_text_loss 40x slower
    (0.4 s against 15 s, measured on two shared cores). Any other model keeps every thread."""
    before = torch.get_num_threads()
    if model == "tiny":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def base_heldout_loss(cfg: TrainConfig) -> float:
    """heldout_text_loss of the base model as cfg loads it (quantised if cfg.quantization_bit is set)."""
    from nbkit.core.models import load_tokenizer

    with quiet_loading(cfg.disable_tqdm):
        model = load_base_model(cfg)
    with tiny_model_threads(cfg.model):
        return heldout_text_loss(model, load_tokenizer(cfg))


def run_of(table, **knobs):
    """The Run of the one row of a sweep table whose columns equal knobs, e.g.
    run_of(table, learning_rate=3e-3, seed=42)."""
    mask = (table[list(knobs)] == pd.Series(knobs)).all(axis=1)
    if mask.sum() != 1:
        raise ValueError(_("run_of: {rows} rows of the table have {knobs}; give knob values that pick one")
                         .format(rows=int(mask.sum()), knobs=knobs))
    return as_runs(table[mask])[0]


def runs_by_seed(table) -> dict:
    """{seed: Run} of a sweep table that varied only the seed (or a one-value slice of one)."""
    if table["seed"].duplicated().any():
        raise ValueError(_("runs_by_seed: the table has several rows per seed; slice it to one knob value first"))
    return {int(seed): run for seed, run in zip(table["seed"], as_runs(table))}


def by_seed(table, column: str, knob: str | None = None):
    """A column of a sweep table that varied the seed, as knob values x seeds (a Series by seed if
    knob is None): the shape a per-seed check reads, one column per seed."""
    if knob is None:
        return table.set_index("seed")[column]
    return table.pivot(index=knob, columns="seed", values=column)


def seed_rows(table, column: str, knob: str):
    """A column of a sweep table as a row per seed and a column per value of knob (by_seed turned
    around): the shape of a per-seed evidence table, e.g. seed_rows(table, "best_eval_loss", "name")."""
    return by_seed(table, column, knob).T


def add_forgetting(table, heldout_before: float, keep_seed: int | None = None):
    """Columns heldout_loss_after and forgetting (its rise over the base's) for every run of a sweep
    made with keep_models=True; then each run's weights are let go (a real LLM's would fill the
    memory), except those of the runs at keep_seed, if given."""
    after = []
    for run in as_runs(table):
        with tiny_model_threads(run.config["model"]):
            after.append(forgetting(run, heldout_before)["heldout_loss_after"])
        if keep_seed is None or run.config["seed"] != keep_seed:
            run.drop_weights()
    table["heldout_loss_after"] = after
    table["forgetting"] = table["heldout_loss_after"] - heldout_before
    return table


def _measured_sweep(cfg: TrainConfig, grid: dict, seeds, workers: int, measure):
    """sweep(cfg, grid x seeds, keep_models=True), then measure(table) adds its columns and lets the
    weights go. With one worker (a real LLM) seed by seed, so only one seed's models are ever held:
    three seeds of SmolLM2 models would not fit a laptop's memory. One table either way."""
    from nbkit.core.sweep import RunList, sweep

    if workers > 1:
        return measure(sweep(cfg, {**grid, "seed": list(seeds)}, keep_models=True, workers=workers, progress=False))
    parts = [measure(sweep(cfg, {**grid, "seed": [s]}, keep_models=True, workers=1, progress=False)) for s in seeds]
    table = pd.concat(parts, ignore_index=True)
    table.attrs["knobs"] = list(parts[0].attrs["knobs"])
    table.attrs["runs"] = RunList(run for part in parts for run in as_runs(part))  # where as_runs finds the kept models
    return table


def method_sweeps(base: TrainConfig, learning_rates: dict, seeds, workers: int, heldout_before: float,
                  keep_seed: int | None = None) -> dict:
    """{method: sweep table}: each method of learning_rates ({method: [LRs]}, names of METHODS)
    trained at its LRs on every seed, models kept until add_forgetting has measured them (those of
    keep_seed's LoRA runs stay). Runs train in `workers` processes side by side, except QLoRA
    8-bit's: its int8 matmuls log a notice at every step, which a worker process would print into
    the notebook; here they train in this process with the notice silenced."""
    tables = {}
    for method, lrs in learning_rates.items():
        cfg = method_config(base, method).replace(run_name=method)
        keep = keep_seed if method == "lora" else None

        def measure(table, keep=keep):
            return add_forgetting(table, heldout_before, keep_seed=keep)
        if METHODS[method].get("quantization_bit") == 8:
            with tiny_model_threads(base.model):  # (its per-matmul int8 notice: nbkit.core.notices)
                tables[method] = _measured_sweep(cfg, {"learning_rate": lrs}, seeds, 1, measure)
        else:
            tables[method] = _measured_sweep(cfg, {"learning_rate": lrs}, seeds, workers, measure)
    return tables


def scaling_sweep(cfg: TrainConfig, ranks, seeds, workers: int):
    """use_rslora off and on at each rank, on every seed: the sweep table with column update_norm
    (add_update_norms), each run's weights let go once measured."""
    return _measured_sweep(cfg, {"use_rslora": [False, True], "lora_rank": list(ranks)}, seeds, workers,
                           add_update_norms)


def chosen_learning_rate(table) -> float:
    """The LR of a sweep over learning_rate x seed whose best validation loss is lowest on average
    over the seeds: one LR per method, not a different lucky one per seed."""
    return float(table.groupby("learning_rate")["best_eval_loss"].mean().idxmin())


def chosen_rows(tables: dict):
    """A row per (method, seed): each method's runs at its chosen_learning_rate, with the median
    seconds per step of each run."""
    parts = []
    for method, table in tables.items():
        rows = table[table["learning_rate"] == chosen_learning_rate(table)].copy()
        rows["seconds_per_step"] = [seconds_per_step(run) for run in as_runs(rows)]
        parts.append(rows.assign(method=method))
    return pd.concat(parts, ignore_index=True)


def compare_methods(tables: dict):
    """A row per method (indexed by its name) at its chosen LR: what trains and the memory it costs
    (measured once: no seed changes them), and the mean over the seeds of its best validation
    loss, accuracy and forgetting (if add_forgetting was called): the chapter's PE1 table."""
    rows = chosen_rows(tables)
    out = []
    for method, mine in rows.groupby("method", sort=False):
        memory = training_memory(TrainConfig.from_dict(as_runs(tables[method])[0].config))
        row = dict(method=method, learning_rate=float(mine["learning_rate"].iloc[0]), seeds=len(mine),
                   trainable_params=memory["trainable_params"],
                   trainable_share=memory["trainable_params"] / memory["total_params"],
                   weights_MB=memory["weights_bytes"] / 1e6, gradients_MB=memory["gradient_bytes"] / 1e6,
                   optimizer_MB=memory["optimizer_bytes"] / 1e6, memory_MB=memory["total_bytes"] / 1e6,
                   seconds_per_step=float(mine["seconds_per_step"].median()),
                   best_eval_loss=float(mine["best_eval_loss"].mean()),
                   best_accuracy=float(mine["best_eval_accuracy"].mean()))
        if "forgetting" in mine:
            row["forgetting"] = float(mine["forgetting"].mean())
        out.append(row)
    return pd.DataFrame(out).set_index("method")


def curve_distance(a, b, column: str = "loss") -> float:
    """Mean absolute difference of two runs' per-step curves (training loss by default) over the
    steps both made: 0 for the same curve. Two runs of one seed see the same batches in the same
    order, so what is left is what their knobs changed."""
    x, y = a.steps.set_index("step")[column], b.steps.set_index("step")[column]
    steps = x.index.intersection(y.index)
    return float((x[steps] - y[steps]).abs().mean())


def add_update_norms(table):
    """Column update_norm (lora_update_norm) for every run of a sweep made with keep_models=True;
    then the runs' weights are let go."""
    norms = []
    for run in as_runs(table):
        if run.model is None:
            raise ValueError(_("{run}: run.model is None: keep the model (sweep(..., keep_models=True))")
                             .format(run=run.name))
        norms.append(lora_update_norm(run.model))
        run.drop_weights()
    table["update_norm"] = norms
    return table


def final_train_loss(run) -> float:
    """The training loss of a run's last epoch (the mean over its steps)."""
    return float(run.epochs["train_loss"].dropna().iloc[-1])


def lowest_train_loss(run) -> float:
    """The lowest training loss of any epoch (the mean over its steps): how far the run memorised its
    training rows, whatever a late spike of a run at a constant LR did to its last epoch."""
    return float(run.epochs["train_loss"].min())


def add_lowest_train_loss(table):
    """Column lowest_train_loss (lowest_train_loss of each row's run) of a sweep table."""
    table["lowest_train_loss"] = [lowest_train_loss(run) for run in as_runs(table)]
    return table


def first_eval_loss(run) -> float:
    """The validation loss after the first epoch (epoch 0 is the base model)."""
    epochs = run.epochs.set_index("epoch")
    return float(epochs.loc[1, "eval_loss"])


def per_seed_table(tables: dict, reference=None):
    """A row per (name, seed) of several sweep tables that each varied only the seed: learning
    rate, lora_alpha, trainable parameters, validation loss after the first epoch and at its best,
    final and lowest training loss; with reference (a table of the same seeds), the curve_distance of each
    run to the reference run of its seed."""
    ref = runs_by_seed(reference) if reference is not None else {}
    rows = []
    for name, table in tables.items():
        for seed, run in runs_by_seed(table).items():
            cfg = TrainConfig.from_dict(run.config)
            row = dict(name=name, seed=seed, learning_rate=cfg.learning_rate,
                       lora_alpha=cfg.resolved_lora_alpha if cfg.finetuning_type == "lora" else None,
                       trainable_params=run.summary.get("trainable_params"), first_eval_loss=first_eval_loss(run),
                       best_eval_loss=run.best_eval_loss, final_train_loss=final_train_loss(run),
                       lowest_train_loss=lowest_train_loss(run), path=str(run.path))
            if ref:
                row["curve_distance"] = curve_distance(run, ref[seed])
            rows.append(row)
    return pd.DataFrame(rows)


def shortfall(losses, best, base):
    """How far short of `best` each loss stops, as a fraction of the whole way from the base
    model's loss down to `best`: 0 = as good as the best, 1 = no better than the base."""
    return (losses - best) / (base - best)


# ---------------------------------------------------------------- the evidence of the chapter's checks
# A row per seed (index "seed"); where a check reads one value per method, LR or rank, those values
# are a column group: table["shortfall"] is a row per seed and a column per method.

def learned_table(tables: dict, reference: str = "full"):
    """A row per seed, each method at its chosen LR (chosen_rows): base_eval_loss (the reference
    method's base model: fp32, before any training), best_method, and the column groups
    best_eval_loss and shortfall (how far short of the seed's best method each stops, as a share of
    the way down from the base model's loss: 0 = the best, 1 = no better than the base)."""
    best = by_seed(chosen_rows(tables), "best_eval_loss", "method").loc[list(tables)]  # methods in the given order
    base = by_seed(tables[reference].drop_duplicates("seed"), "base_eval_loss")
    short = shortfall(best, best.min(), base)
    return pd.concat({"base_eval_loss": base.to_frame(""), "best_method": best.idxmin().to_frame(""),
                      "best_eval_loss": best.T, "shortfall": short.T}, axis=1)


def forgetting_table(tables: dict, methods=("full", "lora")):
    """A row per seed, a column per (method, learning_rate): the forgetting (add_forgetting) of each
    method's runs at each LR it was trained at."""
    return pd.concat({m: seed_rows(tables[m], "forgetting", "learning_rate") for m in methods}, axis=1,
                     names=["method"])


def forgetting_rise(forgetting):
    """A row per seed, a column per method of forgetting_table tried at more than one LR: its
    forgetting at its highest LR minus at its lowest."""
    rise = {}
    for method in forgetting.columns.unique("method"):
        by_lr = forgetting[method]
        if by_lr.shape[1] > 1:
            rise[method] = by_lr[by_lr.columns.max()] - by_lr[by_lr.columns.min()]
    return pd.DataFrame(rise)


def params_by_rank(table):
    """Trainable parameters by lora_rank, from a sweep over lora_rank (no seed changes them)."""
    return table.drop_duplicates("lora_rank").set_index("lora_rank")["trainable_params"]


def rank_shortfall_table(tables: dict, rank: int):
    """A row per seed, a column shortfall_<task> per {task: sweep over lora_rank x seed}: how far
    `rank`'s best validation loss stops short of the best rank's, as a share of the way down from the
    base model's loss (shortfall)."""
    out = {}
    for task, table in tables.items():
        best = by_seed(table, "best_eval_loss", "lora_rank")
        base = by_seed(table.drop_duplicates("seed"), "base_eval_loss")
        out[f"shortfall_{task}"] = shortfall(best.loc[rank], best.min(), base)
    return pd.DataFrame(out)


def rank_fit_table(table):
    """A row per seed of a sweep over lora_rank x seed, the column groups lowest_train_loss (how far
    each rank memorised its training rows) and best_eval_loss, a column per rank."""
    fit = add_lowest_train_loss(table.copy())  # the caller's table keeps its columns
    return pd.concat({"lowest_train_loss": seed_rows(fit, "lowest_train_loss", "lora_rank"),
                      "best_eval_loss": seed_rows(fit, "best_eval_loss", "lora_rank")}, axis=1)


def update_norm_ratios(table):
    """A row per seed of a scaling_sweep: the update norm at its largest rank over the norm at its
    smallest, with the standard alpha / r scaling (standard_ratio) and with rsLoRA's (rslora_ratio)."""
    norms = table.pivot(index="seed", columns=["use_rslora", "lora_rank"], values="update_norm")
    lo, hi = table["lora_rank"].min(), table["lora_rank"].max()
    return pd.DataFrame({"standard_ratio": norms[False, hi] / norms[False, lo],
                         "rslora_ratio": norms[True, hi] / norms[True, lo]})


def bits_table(base: TrainConfig, methods):
    """A row per bit width (32: LoRA, 8 and 4: QLoRA), indexed by bits: the stored model's MB and the
    best validation loss (from compare_methods' table), the relative weight error of the quantised
    base (quantization_error) and the quantised base's held-out text loss (base_heldout_loss)."""
    rows = []
    for method, bits in (("lora", None), ("qlora-8bit", 8), ("qlora-4bit", 4)):
        error = quantization_error(base, bits) if bits else {"relative_error": 0.0}
        rows.append(dict(bits=bits or 32, model_MB=methods.loc[method, "weights_MB"],
                         weight_error=error["relative_error"],
                         base_heldout_loss=base_heldout_loss(base.replace(finetuning_type="lora",
                                                                          quantization_bit=bits)),
                         best_eval_loss=methods.loc[method, "best_eval_loss"]))
    return pd.DataFrame(rows).set_index("bits")
