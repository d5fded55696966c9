"""Tokens/s of a LoRA fine-tune of a real LLM: nbkit's loop vs HF Trainer on the same config, and the
model-FLOPs utilisation (MFU).

On a CUDA machine: SmolLM2-135M-Instruct (or --model), LoRA, bf16, batch 32 x 256 tokens.
On a CPU: the same model in fp32 with batch 8 x 64 tokens (what two cores can do), and the MFU against
this machine's own measured matmul throughput, since a CPU has no published peak to quote.

Tokens are real (non-padding) tokens. Model FLOPs per token follow the PaLM paper's convention
(Chowdhery et al. 2022, appendix B): 6 x parameters + 12 x layers x hidden x sequence for training,
i.e. what full fine-tuning would compute. LoRA skips the weight gradients of the frozen base (2N of
the 6N), so the FLOPs the hardware really does are fewer: both utilisations are printed.
Rounds interleave the two loops (noisy machines drift; ratios less so).

    python bench/llm_finetune.py [--model smollm2-135m] [--steps N] [--rounds 3]
"""
import argparse
import tempfile
import time
from functools import partial

import torch
from common import hf_trainer, interleaved_medians

from nbkit import TrainConfig, train
from nbkit.core.data import collate
from nbkit.core.models import count_parameters, load_model

# Dense bf16 tensor-core peaks from the vendors' datasheets (TFLOPS, without sparsity).
GPU_PEAK_TFLOPS = {"H200": 989, "H100": 989, "A100": 312, "L40S": 362, "L4": 121, "A10": 125, "4090": 165,
                   "3090": 71, "T4": 65, "V100": 125}


def bench_config(model: str, cuda: bool, steps: int, out: str) -> TrainConfig:
    size = dict(per_device_train_batch_size=32, max_seq_length=256, bf16=True) if cuda else \
        dict(per_device_train_batch_size=8, max_seq_length=64)
    return TrainConfig(model=model, dataset="corpus", finetuning_type="lora", learning_rate=2e-4, max_steps=steps,
                       predict_with_generate=False, disable_tqdm=True, output_dir=out, **size)


def nbkit_tokens_per_second(cfg: TrainConfig) -> float:
    """Real tokens over the time of the optimizer steps themselves (as HF's is timed below)."""
    steps = train(cfg).steps
    return float(steps["tokens"].sum() / (steps["tokens"] / steps["tokens_per_second"]).sum())


def hf_tokens_per_second(cfg: TrainConfig) -> float:
    """Real tokens of the batches the model trained on (counted at its forward: Accelerate's loader
    collates one batch ahead, so counting in the collator over-counts a batch) over the loop's time."""
    from transformers import TrainerCallback

    model, tokenizer = load_model(cfg)
    counted = {"tokens": 0}

    def count_tokens(module, args, kwargs):
        counted["tokens"] += int(kwargs["attention_mask"].sum())

    class Clock(TrainerCallback):  # time the steps only, not the set-up
        def on_train_begin(self, *args, **kwargs):
            counted["start"], counted["tokens"] = time.perf_counter(), 0

    model.register_forward_pre_hook(count_tokens, with_kwargs=True)
    collator = partial(collate, pad_token_id=tokenizer.pad_token_id)
    hf_trainer(cfg, model, tokenizer, collator, callbacks=[Clock()]).train()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return counted["tokens"] / (time.perf_counter() - counted["start"])


def flops_per_token(cfg: TrainConfig) -> tuple[float, float]:
    """(model FLOPs per trained token, PaLM convention; and the LoRA share actually computed)."""
    model, _ = load_model(cfg)
    n = count_parameters(model)["total_params"]
    c = model.get_base_model().config if hasattr(model, "get_base_model") else model.config
    full = 6 * n + 12 * c.num_hidden_layers * c.hidden_size * cfg.max_seq_length
    lora = full - 2 * n  # no weight gradients for the frozen base
    return full, lora


def peak_flops(cuda: bool) -> tuple[float, str]:
    if cuda:
        name = torch.cuda.get_device_name()
        for key, tflops in GPU_PEAK_TFLOPS.items():
            if key in name:
                return tflops * 1e12, f"{name}, datasheet bf16 dense peak {tflops} TFLOPS"
        return float("nan"), f"{name} (peak unknown: add it to GPU_PEAK_TFLOPS)"
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.matmul(a, b)
    start, reps = time.perf_counter(), 10
    for _ in range(reps):
        torch.matmul(a, b)
    flops = reps * 2 * 2048 ** 3 / (time.perf_counter() - start)
    return flops, f"CPU, {torch.get_num_threads()} threads, measured fp32 matmul {flops / 1e9:.0f} GFLOPS"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=None, help="default: 100 on a GPU, 10 on a CPU")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    steps = args.steps or (100 if cuda else 10)
    cfg = bench_config(args.model, cuda, steps, tempfile.mkdtemp())
    full_flops, lora_flops = flops_per_token(cfg)
    peak, peak_text = peak_flops(cuda)
    med = interleaved_medians({"nbkit": lambda: nbkit_tokens_per_second(cfg), "hf": lambda: hf_tokens_per_second(cfg)},
                              args.rounds, "tok/s")
    print(f"\n{args.model}, LoRA r={cfg.lora_rank}, batch {cfg.per_device_train_batch_size} x {cfg.max_seq_length} "
          f"tokens, {'bf16' if cfg.bf16 else 'fp32'}, {steps} steps x {args.rounds} rounds; {peak_text}")
    print("| loop  | tokens/s | MFU (6N) | LoRA FLOPs utilisation |")
    print("|-------|----------|----------|------------------------|")
    for k, v in med.items():
        print(f"| {k:<5} | {v:8.0f} | {100 * v * full_flops / peak:7.2f}% | {100 * v * lora_flops / peak:21.2f}% |")
    print(f"\nnbkit / hf tokens/s = {med['nbkit'] / med['hf']:.3f}")


if __name__ == "__main__":
    main()
