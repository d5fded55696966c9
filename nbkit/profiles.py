"""Run sizes: how big a run each (model, device) affords, so every chapter runs on the tiny model,
on SmolLM2-135M on a laptop CPU, or on a bigger model on a GPU by changing one parameter.

Two tables, two levels:
  RUN_SIZES       one run: rows, sequence length, evaluation size (TrainConfig fields), via sized()
  CHAPTER_SIZES   one chapter: its own parameters (how many runs, how many steps, which LRs around a
                  real LLM's), via chapter_parameters(); a chapter's parameters cell holds the tiny
                  model's values, and this table says what another model runs instead, and why

    base = sized(TrainConfig(model=model, ...), device)
"""
from __future__ import annotations

# Rows, sequence length and evaluation size per (model, device). Why these numbers:
#   tiny, cpu           TrainConfig's defaults: a whole run takes seconds
#   smollm2-135m, cpu   LoRA trains about 140 tokens/s on two cores (bench/llm_finetune.py), so an
#                       epoch of 192 rows of ~45 tokens takes about a minute: 240 rows keep runs short
#   any model, cuda     the task at full size, longer rows, bf16 (every recent GPU has it)
RUN_SIZES = {
    ("tiny", "cpu"): dict(max_samples=None, eval_generate_samples=200, max_seq_length=64),
    ("smollm2-135m", "cpu"): dict(max_samples=240, eval_generate_samples=48, max_seq_length=64, max_new_tokens=8),
    ("*", "cuda"): dict(max_samples=None, eval_generate_samples=200, max_seq_length=128, bf16=True),
}


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'."""
    import torch

    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device={device!r} is not allowed; allowed: 'auto', 'cpu', 'cuda'")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def run_size(model: str, device: str) -> dict:
    """TrainConfig overrides that size a run for this model on this device (RUN_SIZES)."""
    device = resolve_device(device)
    for key in ((model, device), ("*", device)):
        if key in RUN_SIZES:
            return dict(RUN_SIZES[key])
    # an HF model on a CPU: as SmolLM2 (anything bigger will be slow on a CPU anyway)
    return dict(RUN_SIZES[("smollm2-135m", "cpu")])


def sized(cfg, device: str = "auto"):
    """cfg with its model's run size on this device, for the fields cfg leaves at TrainConfig's
    defaults: what a chapter sets on purpose wins. For the tiny model on a CPU it changes nothing."""
    from nbkit.config import TrainConfig

    defaults = TrainConfig()
    size = {k: v for k, v in run_size(cfg.model, device).items() if getattr(cfg, k) == getattr(defaults, k)}
    return cfg.replace(**size) if size else cfg


# ---------------------------------------------------------------- chapter sizes

# Per chapter: ("tiny", "*") repeats the notebook's own defaults (a test keeps the two equal), the other
# keys say what replaces them on that model and device. SmolLM2-135M on two CPU cores trains about
# 140 tokens/s with LoRA and 80 with full fine-tuning (bench/llm_finetune.py): a step of 16 rows takes
# 5 to 9 s, so a chapter there runs fewer runs of fewer steps. A real LLM also wants smaller learning
# rates than the tiny model (its weights already sit in a good minimum). Any other model on a CPU runs
# SmolLM2's size; ("*", "cuda") is for any model but the tiny one on a GPU.
CHAPTER_SIZES: dict[str, dict[tuple[str, str], dict]] = {
    # ---- 00_quickstart
    "00_quickstart": {
        ("tiny", "*"): dict(learning_rate=1e-3, num_train_epochs=5),
        # full fine-tuning, 12 steps an epoch of the 240-row run size: about 4 minutes on two cores
        ("smollm2-135m", "cpu"): dict(learning_rate=5e-5,  # HF TrainingArguments' default, made for full fine-tuning of pretrained models
                                      num_train_epochs=2),  # two, so the training loss can fall from the first epoch to the last
        ("*", "cuda"): dict(learning_rate=5e-5),  # untested here (no GPU): a real LLM's full fine-tuning LR; epochs are cheap on a GPU
    },

    # ---- 01_learning_rate
    "01_learning_rate": {
        ("tiny", "*"): dict(learning_rate=1e-3, sweep_learning_rates=[1e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 1.0],
                            sweep_epochs=2, schedule_learning_rate=3e-3, schedule_epochs=3, warmup_learning_rate=0.1,
                            warmup_ratio=0.25, warmup_max_steps=60, max_samples=0, range_test_steps=100),
        # full fine-tuning, ~9 s a step on two cores: 10 runs of at most 8 steps + a 20-step range test, ~95 steps
        # per seed, three times that for the seed set (one worker: a real LLM uses every core in one run).
        # LRs: published full fine-tunes of small LLMs use 1e-5 to 1e-4; SmolLM2-135M was pretrained at a peak
        # of 3e-3 (nbkit.models.pretraining_card), so LR2's rule gives 3e-5 to 3e-4
        ("smollm2-135m", "cpu"): dict(
            max_samples=80,  # 64 rows to train on: 4 steps an epoch, 8 a run (2 epochs: step decay needs two)
            learning_rate=1e-4,  # the first run: the top of published full fine-tuning practice, inside LR2's rule
            sweep_learning_rates=[1e-5, 1e-4, 1e-3, 3e-3, 1.0],  # too small, practice, 10x it, the pretraining LR, diverges
            schedule_learning_rate=1e-3,  # 10x practice: the decay matters there (in the sweep: its linear run is reused)
            schedule_epochs=2,  # the sweep's: its linear run is reused (8 steps; step decay needs two epochs)
            warmup_learning_rate=1e-3,  # 10x practice: near the edge (tiny's 0.1 is a tenth of its diverging 1.0)
            warmup_ratio=0.25,  # 2 of the 8 steps (0.1 rounds up to 1: a first step at LR 0, no ramp)
            warmup_max_steps=8,  # two epochs of 4 steps: the first steps are what warmup is about
            range_test_steps=20,  # 1e-7 to 1 in 20 steps, ~3 a decade: enough for the order of magnitude
        ),
        # any model but tiny on a GPU: the tiny sizes (every row, the 100-step range test), LRs of a real LLM
        # (as on SmolLM2, spread over the same number of runs as tiny). Untested here: no GPU in this lab's CI
        ("*", "cuda"): dict(
            learning_rate=1e-4,  # published full fine-tuning practice for small LLMs: 1e-5 to 1e-4
            sweep_learning_rates=[1e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 1.0],  # tiny's seven runs, 10-30x lower; 1.0 diverges
            schedule_learning_rate=3e-4,  # 3x practice, as tiny's 3e-3 is 3x its default
            warmup_learning_rate=1e-3,  # 10x practice: near the edge
        ),
    },

    # ---- 02_optimizer
    "02_optimizer": {
        ("tiny", "*"): dict(learning_rate=3e-3, compare_samples=480, adamw_learning_rates=[1e-3, 3e-3, 1e-2],
                            adam_l2_learning_rates=[3e-4, 1e-3, 3e-3], sgd_learning_rates=[1e-2, 3e-2, 1e-1],
                            lion_learning_rates=[3e-4, 1e-3, 3e-3], grid_learning_rates=[3e-4, 3e-3],
                            grid_weight_decays=[0.0, 0.1, 1.0], grid_epochs=3, beta1_values=[0.8, 0.9, 0.95],
                            beta2_values=[0.99, 0.999, 0.9999], decay_values=[0.0, 0.01, 0.1, 1.0, 10.0, 100.0],
                            decay_epochs=8, decay_learning_rate=1e-3),
        # full fine-tuning, ~9 s a step on two cores (8-bit AdamW ~4x that: bitsandbytes' CPU update): every
        # experiment, one or two LRs per optimizer, ~21 runs of 4 (arithmetic) or 6 (reviews) steps, ~108 steps per seed,
        # three times that for the seed set (one worker: a real LLM uses every core in one run).
        # LRs: published full fine-tunes of small LLMs use 1e-5 to 1e-4 with AdamW
        ("smollm2-135m", "cpu"): dict(
            learning_rate=1e-4,  # the first run, AdamW at the top of that practice (chapter 1's first run too)
            compare_samples=80,  # 64 rows to train on: 4 steps a run for the comparison and the betas
            adamw_learning_rates=[1e-4],  # one LR (8-bit AdamW runs at learning_rate, and each of its steps is slow)
            adam_l2_learning_rates=[1e-4],  # at AdamW's: the decay (0.01) is too small to need its own scale here
            sgd_learning_rates=[1e-2, 1e-1],  # its step is the clipped gradient (norm <= 1) whatever the model: tiny's range
            lion_learning_rates=[3e-5, 1e-4],  # 3x below AdamW's, as the Lion paper advises, and AdamW's own
            grid_learning_rates=[3e-5, 1e-4],  # two LRs: keeping one decay across LRs still has a cost to measure
            grid_weight_decays=[0.0, 1.0],  # none and tiny's middle value: 0 must be there, a cell per decay is 2 runs
            grid_epochs=1,  # 6 steps of reviews (96 rows to train on); 8 runs
            beta1_values=[0.8, 0.9],  # the default and the start of tiny's grid
            beta2_values=[0.95, 0.999],  # SmolLM2's own pretraining beta2 (its nanotron config) and the default
            decay_values=[0.0, 0.01, 0.1, 100.0],  # none, the article's two (the checks read them), tiny's largest
            decay_epochs=1,  # 6 steps: over-fitting cannot show in so few; the decay's mechanism still does
            decay_learning_rate=1e-4,  # AdamW's LR above; lr x wd x steps at 100: 0.06 (tiny: 10% a step)
        ),
        # any model but tiny on a GPU: the tiny sizes, AdamW's LRs 10-30x lower as for a real LLM, the others
        # moved with them. Untested here: no GPU in this lab's CI
        ("*", "cuda"): dict(
            learning_rate=1e-4,  # published full fine-tuning practice for small LLMs: 1e-5 to 1e-4
            adamw_learning_rates=[3e-5, 1e-4, 3e-4],  # around that practice
            adam_l2_learning_rates=[1e-5, 3e-5, 1e-4],  # a step lower, as tiny's coupled L2 did best lower
            lion_learning_rates=[1e-5, 3e-5, 1e-4],  # 3-10x below AdamW's middle, as the Lion paper advises
            grid_learning_rates=[3e-5, 1e-4, 3e-4],  # AdamW's grid
            decay_learning_rate=1e-4,  # AdamW's middle LR
        ),
    },

    # ---- 03_batch_size
    "03_batch_size": {
        ("tiny", "*"): dict(max_samples=600, num_train_epochs=2, learning_rate=1e-3, batch_sizes=[4, 8, 16, 32, 64, 128],
                            spread_batch_sizes=[4, 8, 16, 32, 64], spread_draws=6, loss_draws=32,
                            noise_repeats=4, speed_repeats=5,
                            memory_batch_sizes=[4, 16, 64], accumulation=[[32, 1], [8, 4], [4, 8]]),
        ("smollm2-135m", "cpu"): dict(
            max_samples=120,  # 96 training rows: batch 32 still makes 3 steps, batch 4 makes 24
            num_train_epochs=1,  # every batch size sees the same 96 samples; 7 sweep runs a seed + 3 accumulated ones
            learning_rate=1e-4,  # full fine-tuning of small LLMs: 1e-5..1e-4, at base_batch 16 (scaled with the batch)
            batch_sizes=[4, 8, 16, 32],  # 64 and 128 would make 2 and 1 steps of 96 rows
            spread_batch_sizes=[4, 8, 16, 32],  # 1/B still predicts 8x from smallest to largest
            spread_draws=3,  # a draw is a forward + backward of B rows, and 3 full gradients of 135M floats are 1.6 GB
            loss_draws=8,  # forward passes only (up to 32 rows): 8 per size and seed
            noise_repeats=2,  # an estimate is 8 gradients of 4 rows: 2 at the base model and 2 at each seed's end
            speed_repeats=2,  # timed steps per batch size after the warm-up; a step of 32 rows takes seconds
            memory_batch_sizes=[4, 16],  # a profiled step of SmolLM2 costs ~45 CPU s (seen here): two of them
            accumulation=[[16, 1], [8, 2], [4, 4]],  # effective 16: cheaper profiled steps, the same exactness test
        ),
        # a GPU affords the tiny sizes; only the LR moves to a real LLM's full fine-tuning scale (untested: no GPU here)
        ("*", "cuda"): dict(learning_rate=1e-4),
    },

    # ---- 04_epochs_early_stopping
    "04_epochs_early_stopping": {
        ("tiny", "*"): dict(max_samples=120, val_size=60, long_epochs=16, patiences=[1, 2, 3], learning_rate=5e-4,
                            lora_learning_rates=[1e-3, 3e-3]),
        # every run below is made at each of the chapter's three seeds, one after another (one worker)
        ("smollm2-135m", "cpu"): dict(
            max_samples=40,  # 32 training rows = 2 steps of 16 an epoch (a SmolLM2 review row is ~54 tokens), 8 validation
            val_size=8,  # the 8 of 40 that val_size 0.2 held out before: tiny's 60 is more than the 40 rows
            long_epochs=5,  # 10 steps: past a minimum at epoch 1-2 and still room for patience 2 to stop early
            patiences=[1, 2],  # each patience is a run; 3 would stop at or after the long run's last epoch
            learning_rate=1e-4,  # full fine-tuning of small LLMs: 1e-5..1e-4; the top of it, to over-fit in 10 steps
            lora_learning_rates=[3e-4, 1e-3, 3e-3],  # LoRA ~10x full's LR (1e-4..1e-3 common), 3x either side of 1e-3
        ),
        # a GPU affords the tiny sizes (120 rows, half held out, 16 epochs, 3 patiences); only the LRs move to a
        # real LLM's scale, as on the CPU above (untested: no GPU here)
        ("*", "cuda"): dict(learning_rate=1e-4, lora_learning_rates=[3e-4, 1e-3, 3e-3]),
    },

    # ---- 05_peft_lora_qlora
    "05_peft_lora_qlora": {
        ("tiny", "*"): dict(max_samples=120, num_train_epochs=4, knowledge_epochs=24, full_learning_rates=[3e-4, 1e-3],
                            freeze_learning_rates=[3e-3], lora_learning_rates=[1e-3, 3e-3],
                            qlora_learning_rates=[3e-3], same_learning_rate=1e-3, rank_learning_rate=3e-3,
                            ranks=[1, 8, 64], rslora_steps=6),
        # SmolLM2: a step of 16 rows takes 10-12 CPU-seconds for LoRA, QLoRA 8 and 4 bit alike (measured here, one
        # thread), about as much again for evaluating and generating: so 2 steps a run, 4 on facts; about 25 runs a
        # seed on three seeds, one at a time (default_workers): untested at three seeds
        ("smollm2-135m", "cpu"): dict(
            max_samples=40,  # 32 training rows (2 steps of 16), 8 held out, on reviews and facts alike
            num_train_epochs=1,  # one pass over reviews: a real LLM learns the format in a few steps
            knowledge_epochs=2,  # facts: twice as long, the ranks need steps to differ
            full_learning_rates=[1e-4],  # full fine-tuning of small LLMs: 1e-5 to 1e-4 (top: 2 steps)
            freeze_learning_rates=[3e-4],  # fewer weights train: 3x full, the tiny chapter's ratio
            lora_learning_rates=[1e-3, 3e-3],  # LoRA: 1e-4 to 1e-3 in practice (Hu et al. 2021, QLoRA's 2e-4),
            # the top for 2 steps, and 3x it as the too-high probe the forgetting-follows-the-LR check needs
            qlora_learning_rates=[1e-3],  # QLoRA: LoRA's LR
            same_learning_rate=1e-4,  # full's LR: LoRA also trains at it (one run a seed) for the same-LR forgetting check
            rank_learning_rate=1e-3,  # one of lora_learning_rates: the rank-8 run is reused
            ranks=[1, 8, 64],  # 1 to 64 (hidden size 576), as on the tiny model
            rslora_steps=1,  # the update's norm after Adam's first step already shows the alpha/r scaling
        ),
        # untested here (no GPU): a GPU affords the tiny sizes; only the LRs move to a real LLM's
        # (e.g. Qwen2.5-0.5B: full 1e-5 to 2e-5 as in LLaMA-Factory's examples, LoRA 1e-4 to 3e-4, QLoRA's 2e-4)
        ("*", "cuda"): dict(
            full_learning_rates=[1e-5, 3e-5],  # full fine-tuning of 0.5B-7B models
            freeze_learning_rates=[3e-5, 1e-4],  # fewer weights train: 3x full
            lora_learning_rates=[3e-5, 1e-4, 3e-4],  # LoRA and QLoRA: about 3-10x full, and full's top LR
            qlora_learning_rates=[1e-4],  # QLoRA: LoRA's usual LR (QLoRA's paper: 1e-4 to 2e-4)
            same_learning_rate=3e-5,  # full's top LR, where LoRA also trains: the same-LR forgetting check
            rank_learning_rate=1e-4,  # one of lora_learning_rates: the rank-8 run is reused
        ),
    },

    # ---- 06_stability_reproducibility_speed
    "06_stability_reproducibility_speed": {
        ("tiny", "*"): dict(max_samples=400, num_train_epochs=2, batch_size=16, learning_rate=1e-3,
                            spike_learning_rate=0.3, adam_learning_rate=0.05, band_size=5,
                            precision_steps=8, demo_rows=4, dist_samples=160, dist_batch=8),
        # about 50 runs with the seed set: each is 8 steps of 4 rows over 32 training rows (the cost of 2 steps of 16),
        # 8 held out
        ("smollm2-135m", "cpu"): dict(
            max_samples=40,  # 32 training rows, 8 held out: evaluation is a third of a run's cost
            num_train_epochs=1,  # one pass: the chapter compares runs step by step, not epochs
            batch_size=4,  # 8 steps an epoch: enough steps for a spike or a divergence at a quarter of the rows
            learning_rate=1e-4,  # full fine-tuning of small LLMs: 1e-5 to 1e-4 (top: few steps); tiny's 1e-3 is 10x that
            spike_learning_rate=1.2,  # tiny's 0.3 moves the weights 4.2% of their norm in one step (0.3 x 13.1 / 92.6);
            # the same relative step here: 0.042 x 2120 (SmolLM2's weight norm) / 73.8 (its first gradient norm)
            adam_learning_rate=0.1,  # Adam's first step moves every weight by lr: tiny's 0.05 is 0.57 of its weights'
            # RMS (0.088); 0.57 of SmolLM2's 0.183 is 0.1
            band_size=3,  # the chapter's three seeds are the band: the paired tests at 15 runs instead of 23
            precision_steps=1,  # bf16 and fp16 are emulated here (no avx512_bf16): 16x and more per step
            demo_rows=1,  # one row: an emulated fp16 backward of 135M parameters takes tens of seconds
            dist_samples=40,  # 32 training rows: 8 batches of 4 split evenly over 2 processes, 2 steps
            dist_batch=4,  # two SmolLM2 processes on two cores: the smallest batch the split allows
        ),
        # untested here (no GPU): a GPU affords the tiny sizes; the LRs are SmolLM2's by the same reasoning
        # (a hub model's weight norm and first gradient differ: measure them). The fp16 demos and the
        # several-process run stay on the CPU (nbkit.stability, nbkit.distributed), so they stay small.
        ("*", "cuda"): dict(
            learning_rate=2e-5,  # full fine-tuning of 0.5B-7B models: 1e-5 to 2e-5 (Alpaca, LLaMA-Factory examples)
            spike_learning_rate=1.2,  # SmolLM2's relative-step value; recompute for another model
            adam_learning_rate=0.01,  # 500x a healthy LR: Adam's first step moves every weight by 0.01
            demo_rows=1,  # CPU fp16 autocast, emulated: one row
            dist_samples=40,  # the launch forces the processes onto the CPU (ACCELERATE_USE_CPU)
            dist_batch=4,  # as on a CPU
        ),
    },

}


def chapter_size(chapter: str, model: str, device: str) -> dict:
    """The parameters CHAPTER_SIZES changes for this chapter on this model and device ({}: none)."""
    if chapter not in CHAPTER_SIZES:
        raise ValueError(f"chapter={chapter!r} has no entry in CHAPTER_SIZES; allowed: {', '.join(CHAPTER_SIZES)}")
    device = resolve_device(device)
    if model == "tiny":
        return {}
    sizes = CHAPTER_SIZES[chapter]
    for key in ((model, device), ("*", device), ("smollm2-135m", device)):
        if key in sizes:
            return dict(sizes[key])
    return {}


def chapter_parameters(chapter: str, model: str, device: str, **values) -> dict:
    """values, with this model's chapter size swapped in for each parameter left at the notebook's
    default (the tiny model's value): a value the learner set with -p wins, as in sized()."""
    defaults = CHAPTER_SIZES[chapter][("tiny", "*")] if chapter in CHAPTER_SIZES else {}
    size = chapter_size(chapter, model, device)
    unknown = sorted(set(size) - set(values))
    if unknown:
        raise ValueError(f"chapter_parameters({chapter!r}) needs the values of {unknown}: CHAPTER_SIZES sizes them "
                         f"for model={model!r}")
    return {k: size[k] if k in size and v == defaults.get(k) else v for k, v in values.items()}
