"""The training loop: one function, read top to bottom.

    train(cfg) -> Run

Order of one optimizer step (nanoGPT's, with gradient accumulation):
    read the LR -> forward each micro-batch -> loss summed and divided by the response tokens
    of the WHOLE accumulated batch -> backward -> clip (record the norm first) -> optimizer
    step -> scheduler step -> record -> (evaluate at epoch ends) -> early stop?

Library parts are used, not rewritten: transformers.get_scheduler, torch / bitsandbytes
optimizers, PEFT (via nbkit.core.models), Accelerate for the device and for several processes.
The loop never draws: it calls `callbacks(event, data)` with the events of nbkit.core.callbacks
(train_begin, step, epoch_end, run_end), which plots and widgets subscribe to.
"""
from __future__ import annotations

import contextlib
import math
import time
import warnings
from functools import partial

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from nbkit.core.callbacks import EPOCH_END, RUN_END, STEP, TRAIN_BEGIN, EarlyStopping, StopRun
from nbkit.core.config import TrainConfig
from nbkit.core.data import collate, load_split, task_metric, tokenize_example
from nbkit.core.evaluate import autocast_context, evaluate_loss, exact_match_accuracy, token_loss_sum
from nbkit.core.i18n import _
from nbkit.core.models import count_parameters, load_model, memory_footprint, quiet_loading
from nbkit.core.runs import Run, RunWriter, load_run, new_run_dir

UNSUPPORTED_LAUNCHES = ("DEEPSPEED", "FSDP", "MEGATRON_LM")  # they take over backward and clipping
DIVERGENCE_FACTOR = 3.0  # a step loss 3x the first one has left the basin; at this LR it won't return


# ---------------------------------------------------------------- building blocks

def step_plan(cfg: TrainConfig, batches_per_epoch: int) -> tuple[int, int]:
    """(optimizer steps per epoch, total optimizer steps): max_steps wins over epochs (HF)."""
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.gradient_accumulation_steps)
    total = cfg.max_steps if cfg.max_steps > 0 else steps_per_epoch * cfg.num_train_epochs
    return steps_per_epoch, total


def build_datasets(cfg: TrainConfig, tokenizer):
    """Examples -> train/validation split -> token ids with labels masked to the responses."""
    train_examples, val_examples = load_split(cfg)
    tokenize = partial(tokenize_example, tokenizer=tokenizer, max_seq_length=cfg.max_seq_length)
    train_features = [f for f in map(tokenize, train_examples) if _has_labels(f)]
    val_features = [f for f in map(tokenize, val_examples) if _has_labels(f)]
    if not train_features:
        raise ValueError(_("max_seq_length={max_seq_length} leaves no response token in any "
                           "training example of dataset={dataset!r}: raise max_seq_length").format(
            max_seq_length=cfg.max_seq_length, dataset=cfg.dataset))
    return train_features, val_features, val_examples


def _has_labels(feature) -> bool:
    return any(label != -100 for label in feature["labels"][1:])


def build_train_loader(cfg: TrainConfig, train_features, tokenizer) -> DataLoader:
    """Right-padded batches of per_device_train_batch_size, reshuffled every epoch by a
    generator seeded with cfg.seed (the same order on every run with that seed)."""
    pad = partial(collate, pad_token_id=tokenizer.pad_token_id)
    return DataLoader(train_features, batch_size=cfg.per_device_train_batch_size, shuffle=True,
                      collate_fn=pad, num_workers=cfg.dataloader_num_workers,
                      generator=torch.Generator().manual_seed(cfg.seed))


def check_process_split(cfg: TrainConfig, num_examples: int, num_processes: int, is_main: bool = True) -> None:
    """Under several processes Accelerate deals the batches out in turn (batch i to process
    i mod n), so n processes with accumulation k train on the same examples per step as one
    process with accumulation n*k. That needs a batch for every process; when the batches do not
    divide evenly, Accelerate repeats the first examples to fill the last round (said once)."""
    if num_processes == 1:
        return
    batch = cfg.per_device_train_batch_size
    if num_examples < batch * num_processes:
        raise ValueError(_("{examples} training examples cannot give each of {processes} processes a batch of "
                           "per_device_train_batch_size={batch}; allowed: per_device_train_batch_size <= "
                           "{most}, fewer processes, or more data").format(
            examples=num_examples, processes=num_processes, batch=batch, most=num_examples // num_processes))
    batches = math.ceil(num_examples / batch)
    if is_main and (batches % num_processes or num_examples % batch):
        message = _("{batches} batches of {batch} (last one {last} examples) do not "
                    "split evenly over {processes} processes: Accelerate repeats the first examples to even "
                    "them out, so the run differs slightly from one process with the accumulation multiplied")
        warnings.warn(message.format(batches=batches, batch=batch, last=num_examples - (batches - 1) * batch,
                                     processes=num_processes), stacklevel=2)


def uses_bf16(cfg: TrainConfig, device: torch.device) -> bool:
    """bf16 autocast when asked, or on a GPU that supports it (fp32 there only costs time and
    memory); on the CPU precision stays what the config says, so runs are exact."""
    return cfg.bf16 or (device.type == "cuda" and not cfg.fp16 and torch.cuda.is_bf16_supported())


def build_optimizer(cfg: TrainConfig, model) -> torch.optim.Optimizer:
    """The optimizer named by cfg.optim. As in HF Trainer, biases and norm weights (1-D
    parameters) get no weight decay: decaying them only hurts."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    betas = (cfg.adam_beta1, cfg.adam_beta2)
    if cfg.optim == "adamw_torch":  # decoupled decay: w -= lr * wd * w, outside the Adam update
        return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=betas, eps=cfg.adam_epsilon)
    if cfg.optim == "adam_l2":  # coupled: wd * w is added to the gradient, then rescaled by Adam
        return torch.optim.Adam(groups, lr=cfg.learning_rate, betas=betas, eps=cfg.adam_epsilon)
    if cfg.optim == "sgd":
        return torch.optim.SGD(groups, lr=cfg.learning_rate, momentum=cfg.sgd_momentum)
    import bitsandbytes as bnb

    if cfg.optim == "lion_32bit":
        return bnb.optim.Lion(groups, lr=cfg.learning_rate, betas=betas)
    if cfg.optim == "lion_8bit":
        return bnb.optim.Lion8bit(groups, lr=cfg.learning_rate, betas=betas)
    if cfg.optim == "adamw_8bit":
        return bnb.optim.AdamW8bit(groups, lr=cfg.learning_rate, betas=betas, eps=cfg.adam_epsilon)
    raise ValueError(_("optim={optim!r} is not allowed").format(optim=cfg.optim))  # config validation catches it first


def warmup_steps_for(cfg: TrainConfig, total_steps: int) -> int:
    """warmup_steps wins when set; otherwise warmup_ratio of all optimizer steps (HF rule)."""
    return cfg.warmup_steps if cfg.warmup_steps > 0 else math.ceil(cfg.warmup_ratio * total_steps)


def build_scheduler(cfg: TrainConfig, optimizer, total_steps: int, steps_per_epoch: int):
    """transformers.get_scheduler for its schedules; "step" (step decay) is ours: after
    warmup, the LR is multiplied by gamma every step_size epochs."""
    warmup = warmup_steps_for(cfg, total_steps)
    kwargs = dict(cfg.lr_scheduler_kwargs)
    if cfg.lr_scheduler_type == "step":
        step_size = kwargs.get("step_size", 1) * steps_per_epoch  # epochs -> optimizer steps
        gamma = kwargs.get("gamma", 0.5)  # halve the LR each period: a common default

        def factor(step):
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return gamma ** (step // step_size)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    from transformers import get_scheduler

    return get_scheduler(cfg.lr_scheduler_type, optimizer, num_warmup_steps=warmup,
                         num_training_steps=total_steps, scheduler_specific_kwargs=kwargs or None)


def accumulation_groups(loader, k: int):
    """Yield lists of k micro-batches (the last group of an epoch may be shorter)."""
    group = []
    for batch in loader:
        group.append(batch)
        if len(group) == k:
            yield group
            group = []
    if group:
        yield group


def forward_backward(model, micro_batches, accelerator, scaler, device, bf16: bool,
                     fp16: bool) -> tuple[float, int]:
    """Forward and backward over one optimizer step's micro-batches. The loss is summed and
    divided by the response tokens of the WHOLE accumulated batch, on all processes, so k
    micro-batches of b equal one batch of k*b exactly. Returns (that loss, the token count)."""
    local_tokens = sum(int((b["labels"][:, 1:] != -100).sum()) for b in micro_batches)
    n_tokens = int(accelerator.reduce(torch.tensor(local_tokens, device=device), "sum"))
    loss_sum = torch.zeros((), device=device)
    for i, batch in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        sync = contextlib.nullcontext() if last else accelerator.no_sync(model)
        with sync:
            with autocast_context(device, bf16, fp16):
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            micro_sum, _tokens = token_loss_sum(logits, batch["labels"])
            # DDP averages gradients over processes; the world-size factor undoes that
            scaler.scale(micro_sum * accelerator.num_processes / n_tokens).backward()
        loss_sum += micro_sum.detach()
    return float(accelerator.reduce(loss_sum, "sum")) / n_tokens, n_tokens


def clip_and_step(cfg: TrainConfig, model, optimizer, scaler) -> float:
    """Unscale the gradients, record their norm, clip them to max_grad_norm (when set), and
    step the optimizer. Returns the norm before clipping."""
    scaler.unscale_(optimizer)  # true gradients before measuring and clipping them
    trainable = [p for p in model.parameters() if p.requires_grad]
    if cfg.max_grad_norm:
        grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm))
    else:
        grad_norm = float(torch.nn.utils.get_total_norm([p.grad for p in trainable if p.grad is not None]))
    scaler.step(optimizer)
    scaler.update()
    return grad_norm


def trainable_state(model) -> dict:
    """A copy of the weights that train (all of them for full; the adapters for LoRA)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def validation_loss(run: Run) -> float:
    """eval_loss of the weights train() returned (run.model), on the run's own validation split,
    computed as train() computes it: e.g. to see that load_best_model_at_end restored the best epoch."""
    if run.model is None:
        raise ValueError(_("{run}: run.model is None (only a run trained in this process, and kept by "
                           "sweep(..., keep_models=True), has its weights in memory)").format(run=run.name))
    cfg = TrainConfig.from_dict(run.config)
    val_features = build_datasets(cfg, run.tokenizer)[1]
    loader = DataLoader(val_features, batch_size=cfg.per_device_eval_batch_size,
                        collate_fn=partial(collate, pad_token_id=run.tokenizer.pad_token_id))
    device = next(run.model.parameters()).device
    return evaluate_loss(run.model, loader, device, uses_bf16(cfg, device), cfg.fp16)


def restore_state(model, state: dict) -> None:
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in state:
                p.copy_(state[n])


def seed_everything(cfg: TrainConfig) -> None:
    from transformers import enable_full_determinism, set_seed

    if cfg.full_determinism:  # deterministic kernels: slower, bit-identical on GPUs too
        enable_full_determinism(cfg.seed)
    else:
        set_seed(cfg.seed)


# ---------------------------------------------------------------- the loop

def train(cfg: TrainConfig, callbacks=(), stop_event=None, keep_model=True) -> Run:
    """Fine-tune cfg.model on cfg.dataset; returns the Run (files under cfg.output_dir).

    callbacks: functions f(event, data) called on the events of nbkit.core.callbacks.EVENTS.
    stop_event: a threading.Event; setting it stops the run cleanly ("interrupted").
    A callback raising nbkit.core.callbacks.StopRun(status) ends the run with that status
    (nbkit.core.study: "pruned"), its curves kept.
    keep_model: return the weights and tokenizer in run.model / run.tokenizer (False: only the
    curves and files, so a chapter of real-LLM runs does not hold every model in memory).
    """
    from accelerate import Accelerator

    t_start = time.time()
    accelerator = Accelerator()  # picks CUDA when there is one; sets up DDP under `accelerate launch`
    device, is_main = accelerator.device, accelerator.is_main_process
    if accelerator.distributed_type.value in UNSUPPORTED_LAUNCHES:
        raise ValueError(_("accelerate launch with distributed_type={distributed_type} "
                           "is not supported by nbkit's loop (it calls backward and clips itself); "
                           "allowed: one process, or DDP (accelerate launch --multi_gpu / torchrun), on GPUs or CPUs"
                           ).format(distributed_type=accelerator.distributed_type.value))
    seed_everything(cfg)
    bf16 = uses_bf16(cfg, device)
    precision = "bf16" if bf16 else "fp16" if cfg.fp16 else "fp32"

    with quiet_loading(cfg.disable_tqdm):
        model, tokenizer = load_model(cfg, device)
    train_features, val_features, val_examples = build_datasets(cfg, tokenizer)
    check_process_split(cfg, len(train_features), accelerator.num_processes, is_main)
    train_loader = build_train_loader(cfg, train_features, tokenizer)
    # every process evaluates the whole validation set: exact, and cheap at these sizes
    val_loader = DataLoader(val_features, batch_size=cfg.per_device_eval_batch_size,
                            collate_fn=partial(collate, pad_token_id=tokenizer.pad_token_id))
    optimizer = build_optimizer(cfg, model)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)

    k = cfg.gradient_accumulation_steps
    steps_per_epoch, total_steps = step_plan(cfg, len(train_loader))
    num_epochs = math.ceil(total_steps / steps_per_epoch)
    scheduler = build_scheduler(cfg, optimizer, total_steps, steps_per_epoch)
    on_plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.fp16)  # loss scaling only for fp16
    metric = task_metric(cfg.dataset) if cfg.predict_with_generate else None
    generate_on = val_examples[:cfg.eval_generate_samples] if cfg.eval_generate_samples else val_examples
    raw_model = accelerator.unwrap_model(model)

    writer = RunWriter(new_run_dir(cfg.output_dir, cfg.run_name), cfg.to_dict()) if is_main else None
    params = count_parameters(raw_model)
    facts = dict(params, model_bytes=memory_footprint(raw_model), device=str(device), precision=precision,
                 world_size=accelerator.num_processes, num_train_examples=len(train_features),
                 num_val_examples=len(val_features), steps_per_epoch=steps_per_epoch,
                 total_steps=total_steps, warmup_steps=warmup_steps_for(cfg, total_steps),
                 effective_batch_size=cfg.per_device_train_batch_size * k * accelerator.num_processes)
    if writer:
        writer.update_summary(**facts)

    def emit(event, data):
        if is_main:
            for callback in callbacks:
                callback(event, data)

    eval_seconds = 0.0

    def evaluate(epoch, step, train_loss):
        nonlocal eval_seconds
        t_eval = time.time()
        row = {"epoch": epoch, "step": step, "train_loss": train_loss,
               "eval_loss": evaluate_loss(model, val_loader, device, bf16, cfg.fp16)}
        if metric:
            row["eval_accuracy"] = exact_match_accuracy(raw_model, tokenizer, generate_on, cfg.max_new_tokens,
                                                        cfg.per_device_eval_batch_size)
        row["learning_rate"] = optimizer.param_groups[0]["lr"]
        row["seconds"] = time.time() - t_start
        eval_seconds += time.time() - t_eval
        if writer:
            writer.log_eval(row)
        return row

    # the model and tokenizer too, for probes that measure it during the run (nbkit.labs.ch03_batch_size)
    emit(TRAIN_BEGIN, dict(facts, config=cfg, path=writer.path if writer else None, model=raw_model,
                             tokenizer=tokenizer))
    progress = tqdm(total=total_steps, disable=cfg.disable_tqdm or not is_main, desc=_("train"))
    status, step, diverged_at, first_loss = "completed", 0, None, None
    stopper = EarlyStopping(cfg.early_stopping_patience, cfg.early_stopping_threshold)
    best_state = None  # weights at the best epoch, kept only if load_best_model_at_end
    t_train = time.time()
    try:
        base = evaluate(0, 0, math.nan)  # epoch 0 = the base model, before any update
        stopper.update(0, base["eval_loss"])
        best_state = trainable_state(raw_model) if cfg.load_best_model_at_end else None
        emit(EPOCH_END, dict(base, last_epoch=False))
        for epoch in range(1, num_epochs + 1):
            model.train()
            epoch_loss_sum, epoch_tokens, step_in_epoch = 0.0, 0, 0
            for micro_batches in accumulation_groups(train_loader, k):
                t_step = time.time()
                lr = optimizer.param_groups[0]["lr"]  # what this step uses (set by the scheduler)
                loss, n_tokens = forward_backward(model, micro_batches, accelerator, scaler, device, bf16, cfg.fp16)
                grad_norm = clip_and_step(cfg, model, optimizer, scaler)
                skipped = cfg.fp16 and not math.isfinite(grad_norm)  # GradScaler skipped the step (overflow)
                if not on_plateau and not skipped:  # as HF: a skipped step does not advance the schedule
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                step_in_epoch += 1

                tokens = sum(int(b["attention_mask"].sum()) for b in micro_batches) * accelerator.num_processes
                row = {"step": step, "epoch": round(epoch - 1 + step_in_epoch / steps_per_epoch, 4),
                       "loss": loss, "learning_rate": lr, "grad_norm": grad_norm,
                       "clipped": bool(cfg.max_grad_norm and grad_norm > cfg.max_grad_norm),
                       "tokens": tokens, "tokens_per_second": tokens / max(time.time() - t_step, 1e-9),
                       "eval_loss": math.nan}
                epoch_loss_sum += loss * n_tokens
                epoch_tokens += n_tokens
                first_loss = loss if first_loss is None else first_loss
                if not math.isfinite(loss) or loss > DIVERGENCE_FACTOR * first_loss:
                    status, diverged_at = "diverged", step
                if cfg.eval_steps and step % cfg.eval_steps == 0 and status != "diverged":
                    t_eval = time.time()
                    row["eval_loss"] = evaluate_loss(model, val_loader, device, bf16, cfg.fp16)
                    eval_seconds += time.time() - t_eval
                if writer:
                    writer.log_step(row)
                emit(STEP, row)
                progress.update(1)
                if step % cfg.logging_steps == 0:
                    progress.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
                if status == "diverged" or step >= total_steps:
                    break
                if stop_event is not None and stop_event.is_set():
                    raise KeyboardInterrupt
            if status == "diverged":
                break

            row = evaluate(epoch, step, epoch_loss_sum / max(epoch_tokens, 1))
            # the best-epoch record first: a listener that ends the run here (a study's pruner) must not
            # leave this epoch out of best_epoch / best_eval_loss
            if stopper.update(epoch, row["eval_loss"]) and cfg.load_best_model_at_end:
                best_state = trainable_state(raw_model)
            emit(EPOCH_END, dict(row, last_epoch=step >= total_steps or stopper.should_stop))
            if on_plateau:
                scheduler.step(row["eval_loss"])
            if step >= total_steps:  # the end anyway: not an early stop
                break
            if stopper.should_stop:
                status = "early_stopped"
                break
    except KeyboardInterrupt:  # the kernel's stop button, or the panel's Stop
        status = "interrupted"
    except StopRun as stop:  # a callback ended the run, e.g. a study's pruner: "pruned"
        status = stop.status
    finally:
        progress.close()

    if best_state is not None:
        restore_state(raw_model, best_state)
    if cfg.full_determinism:  # leave no global switch behind for the next run in this kernel
        torch.use_deterministic_algorithms(False)

    run_path = writer.path if writer else None
    if writer:
        epochs_rows = writer.epoch_rows
        last = epochs_rows[-1] if epochs_rows else {}
        writer.close(status=status, best_epoch=stopper.best_epoch, best_eval_loss=stopper.best_loss,
                     base_eval_loss=epochs_rows[0]["eval_loss"] if epochs_rows else None,
                     base_eval_accuracy=epochs_rows[0].get("eval_accuracy") if epochs_rows else None,
                     final_eval_loss=last.get("eval_loss"), final_eval_accuracy=last.get("eval_accuracy"),
                     final_train_loss=last.get("train_loss"), epochs_completed=last.get("epoch", 0),
                     steps_completed=step, diverged_at_step=diverged_at,
                     restored_best=best_state is not None,
                     train_seconds=time.time() - t_train, eval_seconds=eval_seconds,
                     total_seconds=time.time() - t_start,
                     metric=metric)
        run = load_run(run_path)
    else:  # other processes of a multi-process run return a Run without files
        run = Run(path=None, config=cfg.to_dict(), steps=None, epochs=None, summary={"status": status})
    run.model, run.tokenizer = raw_model, tokenizer
    emit(RUN_END, {"run": run})
    if not keep_model:  # after run_end, whose callbacks may still read the weights
        run.drop_weights()
    return run
