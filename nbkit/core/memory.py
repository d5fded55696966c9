"""The memory planner: how many bytes one training step needs, by category, before you run it.

    shape = ModelShape.llama_7b()                      # or .from_registry("tiny"), .from_config(cfg)
    plan = plan_memory(shape, finetuning_type="lora", precision="bf16",
                       per_device_train_batch_size=4, max_seq_length=2048, gradient_checkpointing=True)
    print(plan)                                        # weights, gradients, optimizer state, activations
    largest_batch(shape, 24e9, finetuning_type="lora", precision="bf16", max_seq_length=2048)
    plan_for_effective_batch(shape, 80e9, effective_batch=128, ...)  # per-device batch + accumulation
    measure_peak_memory(TrainConfig(model="tiny"))     # the same categories, measured on the CPU

The total is the sum of the four categories: a slight over-estimate of the true peak, because
gradients and optimizer state are not all alive at the moment activations peak (end of the
forward pass). The tests check it against `measure_peak_memory` within 25%.

Precision (what each value assumes; LLaMA-Factory's names):
    "fp32"       everything in fp32 (the CPU default here)
    "bf16"/"fp16" mixed precision as HF Trainer / LLaMA-Factory run it: trainable weights keep an
                 fp32 master copy (+ fp32 gradients and fp32 optimizer moments) and autocast holds a
                 16-bit copy for the matmuls; frozen weights are stored in 16-bit; activations 16-bit
    "pure_bf16"  LLaMA-Factory's pure_bf16: weights, gradients and optimizer moments all in bf16
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass

import torch

from nbkit.core import notices
from nbkit.core.evaluate import autocast_context, token_loss_sum
from nbkit.core.i18n import N_, _, columns
from nbkit.core.models import fresh_model, pretrained_source
from nbkit.core.train import build_optimizer


def optimizer_state_bytes(optimizer) -> int:
    """Bytes of every tensor in optimizer.state: Adam's two moments, Lion's one, SGD's momentum,
    bitsandbytes' 8-bit codes (uint8) with their per-block absmax scales. A tensor that several
    parameters share (bitsandbytes' 256-entry quantisation map) is counted once."""
    seen, total = set(), 0
    for state in optimizer.state.values():
        for value in state.values():
            if torch.is_tensor(value) and value.untyped_storage().data_ptr() not in seen:
                seen.add(value.untyped_storage().data_ptr())
                total += value.numel() * value.element_size()
    return total


PRECISIONS = ("fp32", "bf16", "fp16", "pure_bf16")
LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

FP32_BYTES = 4
HALF_BYTES = 2  # bf16 and fp16 alike
INT8_BYTES = 1.0  # LLM.int8: one byte per weight; the per-row fp32 scales are negligible (4 / hidden)
# NF4 with double quantisation (the QLoRA recipe, our models._quantization_config): 4 bits per weight,
# one 8-bit absmax per block of 64, and one fp32 constant per 256 of those blocks
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)

# Bytes of optimizer state per trainable parameter, for fp32 moments. Matches what
# nbkit.core.train.measure_optimizer_state measures (tests/test_memory.py checks it).
OPTIMIZER_BYTES = {
    "adamw_torch": 8,  # two fp32 moments (exp_avg, exp_avg_sq)
    "adam_l2": 8,  # the same two moments
    "sgd": 4,  # one fp32 momentum buffer (our default momentum 0.9)
    "lion_32bit": 4,  # one fp32 moment: Lion keeps only the momentum
    "lion_8bit": 1 + 4 / 256,  # one 8-bit moment + an fp32 absmax per block of 256 (bitsandbytes)
    "adamw_8bit": 2 + 8 / 256,  # two 8-bit moments, each with an fp32 absmax per block of 256
}

# Saved activations per token per decoder layer, in elements, for a Llama block with SDPA attention
# (no seq x seq score matrix is kept). Counted from what autograd saves in HF's LlamaDecoderLayer:
#   2 RMSNorms x 2 hidden (input and normalised output)     4 h
#   q, k, v projections' outputs + q, k after RoPE           ~3 h + 2 h (k, v are h * kv/heads)
#   attention output (input to o_proj)                       1 h
#   MLP: gate, silu(gate), up, silu(gate) * up               4 i
# so about 10 h + 4 i. Korthikanti et al. 2022 count 34 h bytes (fp16, with dropout and a 4h MLP),
# the same order. The tests check the sum against the profiler on the tiny model.
LAYER_HIDDEN_FACTOR = 10
LAYER_INTERMEDIATE_FACTOR = 4
# Outside the layers: the embedding output and the final norm's input and output, per token
EDGE_HIDDEN_FACTOR = 3
# The logits dominate a small model with a large vocabulary. fp32 copies alive at the peak: the logits,
# the shifted contiguous copy the loss takes, log-softmax's output saved for backward, and its gradient.
LOGITS_COPIES = 4


# ---------------------------------------------------------------- the model's shape

@dataclass
class ModelShape:
    """What the planner needs from a Llama-like model (Hugging Face config names)."""
    num_params: int
    hidden_size: int
    num_layers: int
    intermediate_size: int
    vocab_size: int
    num_attention_heads: int
    num_key_value_heads: int
    tie_word_embeddings: bool = False  # input embedding and lm_head share one matrix

    @classmethod
    def from_config(cls, config) -> "ModelShape":
        """From a transformers config of a Llama-like model (Llama, Qwen2, SmolLM, Mistral...)."""
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        tied = bool(getattr(config, "tie_word_embeddings", False))
        return cls.from_dims(config.hidden_size, config.num_hidden_layers, config.intermediate_size,
                             config.vocab_size, heads, kv_heads, tied)

    @classmethod
    def from_dims(cls, hidden_size: int, num_layers: int, intermediate_size: int, vocab_size: int,
                  num_attention_heads: int, num_key_value_heads: int, tie_word_embeddings: bool = False):
        """A shape whose num_params is counted from its dimensions (biases, if any, left out)."""
        shape = cls(0, hidden_size, num_layers, intermediate_size, vocab_size, num_attention_heads,
                    num_key_value_heads, tie_word_embeddings)
        shape.num_params = (shape.linear_params() + shape.embedding_params(tie_word_embeddings)
                            + shape.norm_params())
        return shape

    @classmethod
    def from_registry(cls, model: str = "tiny") -> "ModelShape":
        """From a model name of nbkit.core.models ("tiny", "smollm2-135m") or an HF id / folder."""
        from transformers import AutoConfig

        source, extra = pretrained_source(model)
        return cls.from_config(AutoConfig.from_pretrained(source, **extra))

    @classmethod
    def llama_7b(cls) -> "ModelShape":
        """LLaMA-2 7B as published: Touvron et al. 2023 (arXiv:2307.09288), and the config.json of
        meta-llama/Llama-2-7b-hf (hidden 4096, 32 layers, intermediate 11008, vocab 32000, 32 heads)."""
        return cls(num_params=6_740_000_000, hidden_size=4096, num_layers=32, intermediate_size=11008,
                   vocab_size=32000, num_attention_heads=32, num_key_value_heads=32)

    @classmethod
    def from_size(cls, num_params: float) -> "ModelShape":
        """A Llama-like shape of about num_params parameters, for a model you know only by its size:
        the published shape nearest in size (SIZE_ANCHORS), with as many layers as it takes to reach
        num_params (at least 1). Width sets the activations per layer, so expect the estimate to be
        coarser than one from the model's own config."""
        if not num_params >= 1e6:
            raise ValueError(_("num_params={num_params!r}: give a size of at least 1e6 parameters (e.g. 7e9)")
                             .format(num_params=num_params))
        anchor = min(SIZE_ANCHORS.values(), key=lambda a: abs(math.log(a.num_params / num_params)))
        fixed = anchor.embedding_params(anchor.tie_word_embeddings) + anchor.hidden_size
        per_layer = anchor.layer_linear_params() + 2 * anchor.hidden_size
        layers = max(1, round((num_params - fixed) / per_layer))
        return cls(int(num_params), anchor.hidden_size, layers, anchor.intermediate_size, anchor.vocab_size,
                   anchor.num_attention_heads, anchor.num_key_value_heads, anchor.tie_word_embeddings)

    @classmethod
    def parse(cls, model: str | float) -> "ModelShape":
        """"7b", "135M", 7e9 (a size: from_size), "llama-2-7b" (the published shape), or a model of
        the registry / an HF id / a folder (its config: from_registry)."""
        if isinstance(model, (int, float)):
            return cls.from_size(model)
        text = model.strip().lower()
        if text in SIZE_ANCHORS:
            return SIZE_ANCHORS[text]
        units = {"k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}
        number = text[:-1] if text[-1:] in units else text
        try:
            return cls.from_size(float(number) * units.get(text[-1:], 1))
        except ValueError as err:
            if "num_params" in str(err):
                raise
        return cls.from_registry(model)

    def kv_size(self) -> int:
        """Width of the k and v projections (smaller than hidden_size with grouped-query attention)."""
        return self.hidden_size * self.num_key_value_heads // self.num_attention_heads

    def lora_shapes(self) -> dict:
        """(in_features, out_features) of each linear layer in a decoder block, by PEFT name."""
        h, i, kv = self.hidden_size, self.intermediate_size, self.kv_size()
        return {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def layer_linear_params(self) -> int:
        return sum(a * b for a, b in self.lora_shapes().values())

    def linear_params(self) -> int:
        """The decoder's linear weights: what bitsandbytes quantises (not embeddings, lm_head, norms)."""
        return self.num_layers * self.layer_linear_params()

    def embedding_params(self, tied: bool) -> int:
        return self.vocab_size * self.hidden_size * (1 if tied else 2)

    def norm_params(self) -> int:
        return (2 * self.num_layers + 1) * self.hidden_size  # two RMSNorms a layer + the final one


# Published shapes (each model's config.json on the Hugging Face hub: HuggingFaceTB/SmolLM2-135M,
# Qwen/Qwen2.5-0.5B, meta-llama/Llama-3.2-1B and -3B, meta-llama/Llama-2-7b-hf, -13b-hf, -70b-hf),
# parameters counted from the dimensions; ModelShape.from_size scales the nearest by its layers.
SIZE_ANCHORS = {
    "smollm2-135m": ModelShape.from_dims(576, 30, 1536, 49152, 9, 3, tie_word_embeddings=True),
    "qwen2.5-0.5b": ModelShape.from_dims(896, 24, 4864, 151936, 14, 2, tie_word_embeddings=True),
    "llama-3.2-1b": ModelShape.from_dims(2048, 16, 8192, 128256, 32, 8, tie_word_embeddings=True),
    "llama-3.2-3b": ModelShape.from_dims(3072, 28, 8192, 128256, 24, 8, tie_word_embeddings=True),
    "llama-2-7b": ModelShape.llama_7b(),
    "llama-2-13b": ModelShape.from_dims(5120, 40, 13824, 32000, 40, 40),
    "llama-2-70b": ModelShape.from_dims(8192, 80, 28672, 32000, 64, 8),
}


# ---------------------------------------------------------------- the formulas

def trainable_params(shape: ModelShape, finetuning_type: str, lora_rank: int = 8, lora_target: str = "all",
                     freeze_trainable_layers: int = 2) -> int:
    """Parameters that get gradients and optimizer state."""
    if finetuning_type == "full":
        return shape.num_params
    if finetuning_type == "freeze":  # the last N decoder layers, with their two norms
        return freeze_trainable_layers * (shape.layer_linear_params() + 2 * shape.hidden_size)
    if finetuning_type == "lora":  # A (r x in) and B (out x r) on each targeted linear layer
        targets = LORA_MODULES if lora_target == "all" else [t.strip() for t in lora_target.split(",")]
        shapes = shape.lora_shapes()
        return shape.num_layers * sum(lora_rank * sum(shapes[t]) for t in targets if t in shapes)
    raise ValueError(_("finetuning_type={finetuning_type!r}: allowed: 'full', 'freeze', 'lora'").format(
        finetuning_type=finetuning_type))


def frozen_weight_bytes(shape: ModelShape, frozen: int, quantization_bit: int | None, precision: str) -> float:
    """Frozen weights are stored once, in the load dtype (16-bit under mixed precision, as
    LLaMA-Factory loads them), or quantised: bitsandbytes quantises the decoder's linear layers
    only, so embeddings, lm_head and norms stay in the load dtype."""
    dense = FP32_BYTES if precision == "fp32" else HALF_BYTES
    if quantization_bit is None:
        return frozen * dense
    per_weight = NF4_BYTES if quantization_bit == 4 else INT8_BYTES
    quantised = min(shape.linear_params(), frozen)
    return quantised * per_weight + (frozen - quantised) * dense


def trainable_weight_bytes(trainable: int, precision: str) -> float:
    """fp32: 4 bytes. Mixed precision: an fp32 master copy plus autocast's 16-bit copy (6 bytes;
    with fp32 gradients and moments that makes the 16 + 2 = 18 bytes/param of LLaMA-Factory's
    'Full (bf16 or fp16)' row). pure_bf16: the bf16 weights only."""
    if precision == "fp32":
        return trainable * FP32_BYTES
    if precision == "pure_bf16":
        return trainable * HALF_BYTES
    return trainable * (FP32_BYTES + HALF_BYTES)


def gradient_bytes(trainable: int, precision: str) -> float:
    """One gradient per trainable weight, in the dtype of the weight it updates (fp32 masters under
    mixed precision, bf16 under pure_bf16). Frozen weights get none."""
    return trainable * (HALF_BYTES if precision == "pure_bf16" else FP32_BYTES)


def optimizer_bytes(trainable: int, optim: str, precision: str) -> float:
    """OPTIMIZER_BYTES per trainable weight; pure_bf16 keeps 32-bit moments in bf16 (half)."""
    if optim not in OPTIMIZER_BYTES:
        raise ValueError(_("optim={optim!r}: allowed: {allowed}").format(optim=optim,
                                                                       allowed=", ".join(OPTIMIZER_BYTES)))
    per_param = OPTIMIZER_BYTES[optim]
    if precision == "pure_bf16" and per_param in (4, 8):  # 8-bit states are 8-bit in any precision
        per_param /= 2
    return trainable * per_param


def layers_keeping_activations(shape: ModelShape, finetuning_type: str, freeze_trainable_layers: int) -> int:
    """Layers whose activations autograd saves. Under freeze nothing before the first trainable layer
    needs a gradient, so the frozen layers below it save nothing (measured: the tiny model's freeze
    step needs about half of full's activations). LoRA puts trainable adapters in every layer."""
    if finetuning_type == "freeze":
        return min(freeze_trainable_layers, shape.num_layers)
    return shape.num_layers


def layer_activation_elements(shape: ModelShape) -> float:
    """Saved activations per token of one decoder layer, in elements."""
    return LAYER_HIDDEN_FACTOR * shape.hidden_size + LAYER_INTERMEDIATE_FACTOR * shape.intermediate_size


def activation_bytes(shape: ModelShape, batch: int, seq: int, precision: str,
                     gradient_checkpointing: bool, layers: int | None = None) -> float:
    """Activations alive at the step's peak, for `layers` layers that keep them: layer activations in
    the compute dtype, plus LOGITS_COPIES fp32 copies of the logits (batch x seq x vocab x 4 bytes each:
    the loss is always computed in fp32).

    Without checkpointing everything is alive at the end of the forward pass. With gradient
    checkpointing each layer keeps only its input, and the backward pass recomputes one layer at a
    time; by then the loss's logits copies are freed, so the peak is the checkpoints plus the larger of
    the two (the logits at the end of the forward pass, or one recomputed layer in the backward pass).
    Measured on the tiny model: tests/test_memory.py."""
    layers = shape.num_layers if layers is None else layers
    tokens = batch * seq
    dtype_bytes = FP32_BYTES if precision == "fp32" else HALF_BYTES
    edges = EDGE_HIDDEN_FACTOR * shape.hidden_size * dtype_bytes
    one_layer = layer_activation_elements(shape) * dtype_bytes
    logits = LOGITS_COPIES * shape.vocab_size * FP32_BYTES
    if gradient_checkpointing:
        return tokens * (layers * shape.hidden_size * dtype_bytes + edges + max(logits, one_layer))
    return tokens * (layers * one_layer + edges + logits)


# ---------------------------------------------------------------- the plan

# What print(plan) calls each row (MemoryPlan.categories()' keys, and the trainable parameters), shown through _()
PLAN_LABELS = {"weights": N_("weights"), "gradients": N_("gradients"), "optimizer_state": N_("optimizer_state"),
               "activations": N_("activations"), "total": N_("total"), "trainable": N_("trainable")}


def _padded(text: str, width: int) -> str:
    """`text` and spaces up to `width` columns, a wide (CJK) character taking two, as a terminal shows it."""
    return text + " " * max(0, width - columns(text))


@dataclass
class MemoryPlan:
    """Planned bytes by category for one training step on one device."""
    weights: float
    gradients: float
    optimizer_state: float
    activations: float
    trainable_params: int

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer_state + self.activations

    def categories(self) -> dict:
        return {"weights": self.weights, "gradients": self.gradients,
                "optimizer_state": self.optimizer_state, "activations": self.activations, "total": self.total}

    def to_frame(self):
        """A one-column pandas DataFrame: bytes and MB (or GB) per category."""
        import pandas as pd

        rows = self.categories()
        return pd.DataFrame({"bytes": rows, "readable": {k: readable_bytes(v) for k, v in rows.items()}})

    def __str__(self) -> str:
        lines = [f"{_padded(_(PLAN_LABELS[name]), 16)}{readable_bytes(value):>12}"
                 for name, value in self.categories().items()]
        return "\n".join(lines + [f"{_padded(_(PLAN_LABELS['trainable']), 16)}{self.trainable_params:>12,}"])



def readable_bytes(n: float) -> str:
    """GB above 1 GB, MB below (decimal units, as LLaMA-Factory's table and GPU specs use)."""
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def plan_memory(shape: ModelShape, finetuning_type: str = "full", quantization_bit: int | None = None,
                precision: str = "fp32", optim: str = "adamw_torch", per_device_train_batch_size: int = 16,
                max_seq_length: int = 64, gradient_checkpointing: bool = False, lora_rank: int = 8,
                lora_target: str = "all", freeze_trainable_layers: int = 2) -> MemoryPlan:
    """Planned memory of one training step (defaults: TrainConfig's). Every row at full length."""
    if precision not in PRECISIONS:
        raise ValueError(_("precision={precision!r}: allowed: {allowed}").format(precision=precision,
                                                                               allowed=", ".join(PRECISIONS)))
    if quantization_bit not in (None, 4, 8) or (quantization_bit and finetuning_type != "lora"):
        raise ValueError(_("quantization_bit={quantization_bit!r}: allowed: None, or 4 / 8 with "
                           "finetuning_type='lora'").format(quantization_bit=quantization_bit))
    trainable = trainable_params(shape, finetuning_type, lora_rank, lora_target, freeze_trainable_layers)
    frozen = 0 if finetuning_type == "full" else shape.num_params - (trainable if finetuning_type == "freeze" else 0)
    layers = layers_keeping_activations(shape, finetuning_type, freeze_trainable_layers)
    weights = (frozen_weight_bytes(shape, frozen, quantization_bit, precision)
               + trainable_weight_bytes(trainable, precision))
    return MemoryPlan(weights=weights, gradients=gradient_bytes(trainable, precision),
                      optimizer_state=optimizer_bytes(trainable, optim, precision),
                      activations=activation_bytes(shape, per_device_train_batch_size, max_seq_length,
                                                   precision, gradient_checkpointing, layers),
                      trainable_params=trainable)


def largest_batch(shape: ModelShape, memory_bytes: float, max_batch: int = 4096, **plan_kwargs) -> int:
    """The largest per_device_train_batch_size whose plan fits in memory_bytes (0: not even 1).
    Memory grows with the batch, so a binary search finds it."""
    def fits(batch):
        return plan_memory(shape, per_device_train_batch_size=batch, **plan_kwargs).total <= memory_bytes

    low, high = 0, max_batch
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits(mid) else (low, mid - 1)
    return low


def plan_for_effective_batch(shape: ModelShape, memory_bytes: float, effective_batch: int = 128,
                             **plan_kwargs) -> dict:
    """Per-device batch and gradient_accumulation_steps to reach effective_batch on one device: the
    largest power of two that fits and divides effective_batch (the article's "batch 4 to 32,
    effective 128"), and as many accumulation steps as it takes."""
    fits = largest_batch(shape, memory_bytes, max_batch=effective_batch, **plan_kwargs)
    if fits == 0:
        return {"per_device_train_batch_size": 0, "gradient_accumulation_steps": 0, "effective_batch": 0,
                "fits": False}
    batch = 1
    while batch * 2 <= fits and effective_batch % (batch * 2) == 0:
        batch *= 2
    steps = -(-effective_batch // batch)  # ceiling division
    return {"per_device_train_batch_size": batch, "gradient_accumulation_steps": steps,
            "effective_batch": batch * steps, "fits": True}


def plan_kwargs(cfg, gradient_checkpointing: bool = False) -> dict:
    """plan_memory's keyword arguments from a TrainConfig's fields, the batch size excepted (precision
    from bf16 / fp16): one mapping for every caller that plans a config or searches its batch size."""
    precision = "bf16" if cfg.bf16 else "fp16" if cfg.fp16 else "fp32"
    return dict(finetuning_type=cfg.finetuning_type, quantization_bit=cfg.quantization_bit, precision=precision,
                optim=cfg.optim, max_seq_length=cfg.max_seq_length, gradient_checkpointing=gradient_checkpointing,
                lora_rank=cfg.lora_rank, lora_target=cfg.lora_target,
                freeze_trainable_layers=cfg.freeze_trainable_layers)


def plan_for_config(cfg, shape: ModelShape | None = None, gradient_checkpointing: bool = False) -> MemoryPlan:
    """plan_memory with a TrainConfig's fields. Note: nbkit loads every base in fp32 and uses autocast,
    so under bf16 its frozen LoRA weights take 4 bytes, not the 2 the planner assumes (LLaMA-Factory's
    way); full fine-tuning is planned as nbkit runs it."""
    shape = shape or ModelShape.from_registry(cfg.model)
    return plan_memory(shape, per_device_train_batch_size=cfg.per_device_train_batch_size,
                       **plan_kwargs(cfg, gradient_checkpointing))


# ---------------------------------------------------------------- LLaMA-Factory's published table

# LLaMA-Factory README, "Hardware Requirement" (estimated GPU memory, 7B column), github.com/hiyouga/LLaMA-Factory
LLAMAFACTORY_7B_GB = {"full, bf16 (AMP)": 120, "full, pure_bf16": 60, "lora, 16-bit": 16,
                      "qlora, 8-bit": 10, "qlora, 4-bit": 6}
# The settings we read each row as. Batch 1 at 2048 tokens with gradient checkpointing: LLaMA-Factory's
# example configs (per_device_train_batch_size 1, cutoff_len 2048, checkpointing on by default).
LLAMAFACTORY_ROWS = {"full, bf16 (AMP)": dict(finetuning_type="full", precision="bf16"),
                     "full, pure_bf16": dict(finetuning_type="full", precision="pure_bf16"),
                     "lora, 16-bit": dict(finetuning_type="lora", precision="bf16"),
                     "qlora, 8-bit": dict(finetuning_type="lora", precision="bf16", quantization_bit=8),
                     "qlora, 4-bit": dict(finetuning_type="lora", precision="bf16", quantization_bit=4)}
LLAMAFACTORY_RUN = dict(per_device_train_batch_size=1, max_seq_length=2048, gradient_checkpointing=True)


def compare_llamafactory_7b():
    """Planned GB for LLaMA-2 7B next to LLaMA-Factory's published estimate, row by row."""
    import pandas as pd

    shape = ModelShape.llama_7b()
    rows = []
    for name, published in LLAMAFACTORY_7B_GB.items():
        planned = plan_memory(shape, **LLAMAFACTORY_ROWS[name], **LLAMAFACTORY_RUN).total / 1e9
        rows.append({"method": name, "planned_GB": round(planned, 1), "llamafactory_GB": published,
                     "ratio": round(planned / published, 2)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- measurement

# torch.profiler's memory timeline: index of each category in a row of sizes
# (torch/profiler/_memory_profiler.py: a leading 0, then PARAMETER, OPTIMIZER_STATE, INPUT,
# TEMPORARY, ACTIVATION, GRADIENT, AUTOGRAD_DETAIL, unknown)
TIMELINE_CATEGORIES = ("parameters", "optimizer_state", "inputs", "temporaries", "activations",
                       "gradients", "autograd_detail", "unknown")


def _training_step(model, optimizer, batch: int, seq: int, bf16: bool, fp16: bool, accumulation: int = 1) -> None:
    """One optimizer step over `accumulation` micro-batches of random full-length rows (the worst case:
    no padding), the loss as train.py takes it: each micro-batch's backward frees its activations."""
    device = next(model.parameters()).device
    for _micro_batch in range(accumulation):
        ids = torch.randint(2, model.config.vocab_size, (batch, seq), device=device)
        with autocast_context(device, bf16, fp16):
            logits = model(input_ids=ids).logits
        loss, n = token_loss_sum(logits, ids)
        (loss / (n * accumulation)).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@contextlib.contextmanager
def _kineto_lines_hidden():
    """The profiler's C++ side (kineto) writes "USDT ... profiler_start" / "profiler_stop" lines
    straight to the process's stderr, past Python (no setting turns them off): in a notebook they
    land in the chapter's output and teach nothing. Point file descriptor 2 at /dev/null while it
    starts and stops, then put it back (Python's own stderr is flushed first, so nothing is lost)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _step_to_measure(cfg, gradient_checkpointing: bool, device: str) -> tuple:
    """The arguments of _training_step for cfg: a fresh model in train mode (HF checkpoints only in
    train mode), its optimizer, the batch shape and precision."""
    model = fresh_model(cfg, device)[0]
    model.train()
    if gradient_checkpointing:  # transformers >= 5 names it activation_checkpointing_enable
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        # no KV cache in training (as HF Trainer sets it): else transformers says so on stderr
        model.config.use_cache = False
    optimizer = build_optimizer(cfg, model)
    return (model, optimizer, cfg.per_device_train_batch_size, cfg.max_seq_length, cfg.bf16, cfg.fp16,
            cfg.gradient_accumulation_steps)


def measure_peak_memory(cfg, gradient_checkpointing: bool = False) -> dict:
    """Measured CPU memory of one training step of cfg (per_device_train_batch_size x max_seq_length,
    gradient_accumulation_steps micro-batches), by category (DESIGN.md's recipe). With
    gradient_checkpointing, HF's checkpointing (non-reentrant) is switched on in the model.

    One step is taken first, unprofiled, so the optimizer state exists (it is created lazily at the
    first step) and the profiled step is a steady-state one. Returns bytes per category at the
    moment of the peak, the peak ("peak"), and each category's own maximum ("max_<category>")."""
    from torch.profiler import ProfilerActivity, profile

    step = _step_to_measure(cfg, gradient_checkpointing, "cpu")
    _training_step(*step)
    with _kineto_lines_hidden(), profile(activities=[ProfilerActivity.CPU], profile_memory=True,
                                         record_shapes=True, with_stack=True) as prof:
        _training_step(*step)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "memory_timeline.json")
        with notices.profiler_timeline_warning():
            prof.export_memory_timeline(path, device="cpu")
        with open(path) as f:
            sizes = json.load(f)[1]
    return _peak_by_category(sizes)


def measure_peak_memory_cuda(cfg, gradient_checkpointing: bool = False) -> dict:
    """Measured GPU memory of one steady-state training step of cfg: torch.cuda.max_memory_allocated
    over the second step (the first creates the optimizer state), weights and state included.
    Only the total is known on this route: {"peak": bytes}."""
    if not torch.cuda.is_available():
        raise ValueError(_("measure_peak_memory_cuda: no CUDA device here; use measure_peak_memory (CPU)"))
    step = _step_to_measure(cfg, gradient_checkpointing, "cuda")
    _training_step(*step)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    _training_step(*step)
    torch.cuda.synchronize()
    return {"peak": torch.cuda.max_memory_allocated()}


def _peak_by_category(sizes: list) -> dict:
    totals = [sum(row) for row in sizes]
    at_peak = sizes[totals.index(max(totals))]
    result = {name: at_peak[i + 1] for i, name in enumerate(TIMELINE_CATEGORIES)}
    result.update({f"max_{name}": max(row[i + 1] for row in sizes) for i, name in enumerate(TIMELINE_CATEGORIES)})
    result["peak"] = max(totals)
    return result


def planned_vs_measured(cfg, gradient_checkpointing: bool = False, device: str = "cpu") -> dict:
    """Planned total, measured peak (bytes) and the planner's error in percent of the measurement.
    device "cpu": the profiler's timeline; "cuda": torch.cuda.max_memory_allocated."""
    if device not in ("cpu", "cuda"):
        raise ValueError(_("device={device!r}: allowed: 'cpu', 'cuda'").format(device=device))
    planned = plan_for_config(cfg, gradient_checkpointing=gradient_checkpointing).total
    measure = measure_peak_memory_cuda if device == "cuda" else measure_peak_memory
    measured = measure(cfg, gradient_checkpointing)["peak"]
    return {"planned": planned, "measured": measured, "error_percent": 100 * (planned - measured) / measured}


def planned_vs_measured_table(configs: dict, gradient_checkpointing: bool = False, device: str = "cpu"):
    """{label: TrainConfig} -> a DataFrame: per config, planned and measured peak (MB) and the error (%)."""
    import pandas as pd

    rows = []
    for label, cfg in configs.items():
        result = planned_vs_measured(cfg, gradient_checkpointing, device)
        rows.append({"case": label, "batch_size": cfg.per_device_train_batch_size,
                     "accumulation": cfg.gradient_accumulation_steps, "planned_MB": result["planned"] / 1e6,
                     "measured_MB": result["measured"] / 1e6, "error_percent": result["error_percent"]})
    return pd.DataFrame(rows)
