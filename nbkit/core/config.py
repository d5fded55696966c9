"""TrainConfig: every knob of a fine-tune in one dataclass, checked before anything trains.

Field names are the ones people already know from Hugging Face ``TrainingArguments``, PEFT and
LLaMA-Factory, so a config reads the same here, in a notebook and in those tools' docs:

    cfg = TrainConfig(learning_rate=3e-4, lr_scheduler_type="cosine", warmup_ratio=0.1)
    cfg = TrainConfig.from_yaml("my_run.yaml")           # strings like "3e-4" are converted
    cfg.replace(finetuning_type="lora", lora_rank=16)     # a checked copy
    cfg.changed_fields()                                  # {"learning_rate": 0.0003, ...}

The same run in HF Trainer, TRL, PEFT and LLaMA-Factory: nbkit.core.export.

A bad value raises ``ConfigError`` (a ``ValueError``) that names the field, the value and what
is allowed, in the learner's language (nbkit.core.i18n: the English here, the Chinese in nbkit.po).
Strings are converted to the field's type everywhere (papermill passes ``-p flag true`` as the string
"true", and YAML reads ``3e-4`` as a string), so ``TrainConfig(bf16="true")`` works and
``TrainConfig(learning_rate="abc")`` fails with a clear message.

This module is the root of nbkit's import graph: the only nbkit module it imports is nbkit.core.i18n (the
language a learner reads, which imports nothing of nbkit).
"""

import ast
import dataclasses
import difflib
import inspect
import math
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from nbkit.core.i18n import N_, _

# Registry names. The loaders live in nbkit.core.models / nbkit.core.data; the names live here so that the
# config can be checked without importing them.
MODEL_NAMES = ("tiny", "smollm2-135m")
DATASET_NAMES = ("arithmetic", "reviews", "corpus", "facts")

# Every Hugging Face scheduler name (transformers.SchedulerType, in its order), plus our step decay (HF has
# none). Written out, not read from transformers: importing SchedulerType imports torch and peft (6 s), and
# checking a config must not wait for them. tests/test_config.py checks this list against the installed
# transformers, so it cannot drift.
HF_SCHEDULER_NAMES = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                      "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
                      "warmup_stable_decay", "greedy")
SCHEDULER_NAMES = HF_SCHEDULER_NAMES + ("step",)
# HF optimizer names where HF has one; "adam_l2" (Adam with coupled L2 decay) is ours.
OPTIMIZER_NAMES = ("adamw_torch", "adam_l2", "sgd", "lion_32bit", "lion_8bit", "adamw_8bit")
FINETUNING_TYPES = ("full", "freeze", "lora")

# Names people often type for our fields; only used to suggest the right one.
ALIASES = {
    "lr": "learning_rate",
    "batch_size": "per_device_train_batch_size",
    "epochs": "num_train_epochs",
    "num_epochs": "num_train_epochs",
    "rank": "lora_rank",
    "r": "lora_rank",
    "lora_r": "lora_rank",
    "alpha": "lora_alpha",
    "scheduler": "lr_scheduler_type",
    "optimizer": "optim",
    "warmup": "warmup_ratio",
    "patience": "early_stopping_patience",
    "grad_clip": "max_grad_norm",
    "cutoff_len": "max_seq_length",
    "model_name_or_path": "model",
}


class ConfigError(ValueError):
    """A config value that cannot be used. The message names the field, the value, what is allowed."""


def why(default, text: str, factory: bool = False):
    """A TrainConfig field's default and why it has it: `text`, marked N_() for the catalogue (a literal brace
    doubled), is what show-config prints after the value and the panel's tooltip (field_docs translates it).
    factory=True: `default` is called for each new config (a dict's default, as field(default_factory=...))."""
    if factory:
        return field(default_factory=default, metadata={"why": text})
    return field(default=default, metadata={"why": text})


@dataclass
class TrainConfig:
    # --- model and data ---
    model: str = why("tiny", N_("our embedded 1M-parameter Llama: a whole run takes seconds on a laptop CPU"))
    dataset: str = why("arithmetic", N_("exact answers make learning, over-fitting and accuracy easy to see"))
    max_seq_length: int = why(64, N_("fits every built-in example; longer rows are cut (LLaMA-Factory: cutoff_len)"))
    val_size: float = why(0.2, N_("held out for eval_loss: a fraction in (0, 1) or a count >= 1, as in LLaMA-Factory"))
    max_samples: int | None = why(None, N_("None = every example; a cap makes runs faster"))
    trust_remote_code: bool = why(False, N_("HF default; only for models whose code you have read"))

    # --- learning rate and its schedule ---
    learning_rate: float = why(1e-3, N_("a tiny model tolerates a large LR; 135M+ models want about 1e-5 to 2e-4"))
    lr_scheduler_type: str = why("linear", N_("HF default: decays to 0 at the last step"))
    lr_scheduler_kwargs: dict = why(dict, N_('scheduler extras, e.g. {{"num_cycles": 2}}'), factory=True)
    warmup_ratio: float = why(0.0, N_("HF default; 0.03-0.1 of the steps steadies a run whose LR is near its limit"))
    warmup_steps: int = why(0, N_("if > 0 it wins over warmup_ratio, as in HF"))

    # --- optimizer ---
    optim: str = why("adamw_torch", N_("HF's AdamW: Adam with decoupled weight decay, the usual LLM choice"))
    adam_beta1: float = why(0.9, N_("HF/PyTorch default; how long the gradient average remembers"))
    adam_beta2: float = why(0.999, N_("HF/PyTorch default; averaging of squared gradients (0.95 is common at scale)"))
    adam_epsilon: float = why(1e-8, N_("HF default; guards the division, rarely matters"))
    weight_decay: float = why(0.0, N_("HF default; 0.01-0.1 regularises longer fine-tunes"))
    sgd_momentum: float = why(0.9, N_('only for optim="sgd"; without momentum SGD is far slower'))

    # --- batch ---
    per_device_train_batch_size: int = why(16, N_("small enough to show batch noise, big enough to be quick on a CPU"))
    per_device_eval_batch_size: int = why(64, N_("evaluation keeps no gradients, so it can batch more"))
    gradient_accumulation_steps: int = why(1, N_("effective batch = per-device batch x this x devices"))

    # --- how long to train ---
    num_train_epochs: int = why(5, N_("long enough for the tiny model to fit the task and start to over-fit"))
    max_steps: int = why(-1, N_("HF: > 0 overrides num_train_epochs"))

    # --- evaluation ---
    eval_steps: int | None = why(None, N_("None = evaluate at epoch ends; N = also every N optimizer steps"))
    predict_with_generate: bool = why(
        True, N_("exact-match accuracy by greedy generation at epoch ends (tasks with a metric)"))
    max_new_tokens: int = why(16, N_("longest generated answer when scoring; arithmetic answers are a few tokens"))
    eval_generate_samples: int | None = why(200, N_("generation is slow: score at most this many rows (None = all)"))

    # --- early stopping ---
    early_stopping_patience: int | None = why(
        None, N_("None = off; N: stop at the Nth bad eval in a row (HF; Keras' 0 = 1)"))
    early_stopping_threshold: float = why(0.0, N_("HF default; eval_loss must fall by more than this to count"))
    load_best_model_at_end: bool = why(False, N_("HF default; True restores the weights of the best evaluation"))

    # --- fine-tuning method ---
    finetuning_type: str = why("full", N_("full | freeze | lora; full learns fastest on a tiny model"))
    freeze_trainable_layers: int = why(2, N_('LLaMA-Factory default; "freeze" trains only the last N layers'))
    lora_rank: int = why(8, N_("LLaMA-Factory/PEFT default r; the capacity of the LoRA update"))
    lora_alpha: float | None = why(None, N_("None = 2 x lora_rank (LLaMA-Factory); the update is scaled by alpha/rank"))
    lora_dropout: float = why(0.0, N_("LLaMA-Factory default; 0.05-0.1 can help on small datasets"))
    lora_target: str = why("all", N_('"all" = every linear layer (LLaMA-Factory), or a list like "q_proj,v_proj"'))
    use_rslora: bool = why(False, N_("scale by alpha/sqrt(rank) so high ranks do not learn slower"))
    use_dora: bool = why(False, N_("DoRA: learn magnitude and direction apart; slower per step"))
    quantization_bit: int | None = why(None, N_("4 or 8 = QLoRA: bitsandbytes quantises the base, LoRA trains on top"))

    # --- stability, precision, reproducibility ---
    max_grad_norm: float | None = why(
        1.0, N_("HF default; clips rare spikes, rarely binds on a healthy run (None/0 = off)"))
    seed: int = why(42, N_("HF default; same seed, same initialisation and data order"))
    full_determinism: bool = why(False, N_("HF default; True also forces deterministic kernels (slower)"))
    dataloader_num_workers: int = why(0, N_("HF default; load in the main process, the safe choice in notebooks"))
    bf16: bool = why(False, N_("bf16 autocast: fast on CPUs with AVX-512 BF16 and on recent GPUs"))
    fp16: bool = why(False, N_("fp16 autocast with loss scaling: for older GPUs (about 25x slower on a CPU)"))

    # --- logging and output ---
    logging_steps: int = why(10, N_("how often the progress bar / printed log updates; every step is still recorded"))
    disable_tqdm: bool = why(False, N_("HF default; True for papermill runs and log files"))
    output_dir: str = why("runs", N_("the run store: each run gets its own folder in here"))
    run_name: str | None = why(None, N_("None = the run store makes a name"))

    def __post_init__(self):
        for f in dataclasses.fields(self):
            setattr(self, f.name, coerce_value(f.name, getattr(self, f.name), f.type))
        self._check_model_and_data()
        self._check_schedule()
        self._check_optimizer()
        self._check_batches_and_length()
        self._check_evaluation()
        self._check_finetuning()
        self._check_other()

    # ------------------------------------------------------------------ validation

    def _check_model_and_data(self):
        if not _is_model_name(self.model):
            raise ConfigError(
                _("model={value!r} is not a registry name, an existing folder or a Hugging Face id "
                  "shaped like 'org/name'; registry names: {names}.").format(value=self.model,
                                                                          names=_quoted(MODEL_NAMES))
                + _did_you_mean(self.model, MODEL_NAMES))
        if self.dataset not in DATASET_NAMES and not _is_jsonl_file(self.dataset):
            raise ConfigError(
                _("dataset={value!r} is neither a built-in task nor an existing .jsonl file; "
                  "built-in tasks: {names}.").format(value=self.dataset, names=_quoted(DATASET_NAMES))
                + _did_you_mean(self.dataset, DATASET_NAMES))
        _require(self.max_seq_length >= 1, "max_seq_length", self.max_seq_length, N_("a whole number >= 1"))
        self.val_size = _checked_val_size(self.val_size)
        _require_optional_positive("max_samples", self.max_samples)

    def _check_schedule(self):
        lr = self.learning_rate
        _require(math.isfinite(lr) and lr > 0, "learning_rate", lr, N_("a finite number > 0, e.g. 3e-4"))
        _require_choice("lr_scheduler_type", self.lr_scheduler_type, SCHEDULER_NAMES)
        _check_scheduler_kwargs(self.lr_scheduler_type, self.lr_scheduler_kwargs)
        _require(0 <= self.warmup_ratio < 1, "warmup_ratio", self.warmup_ratio, N_("a fraction in [0, 1)"))
        _require(self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, N_("a whole number >= 0"))

    def _check_optimizer(self):
        _require_choice("optim", self.optim, OPTIMIZER_NAMES)
        for name in ("adam_beta1", "adam_beta2", "sgd_momentum"):
            value = getattr(self, name)
            _require(0 <= value < 1, name, value, N_("a number in [0, 1)"))
        eps = self.adam_epsilon
        _require(math.isfinite(eps) and eps > 0, "adam_epsilon", eps, N_("a small number > 0, e.g. 1e-8"))
        wd = self.weight_decay
        _require(math.isfinite(wd) and wd >= 0, "weight_decay", wd, N_("a number >= 0, e.g. 0.01"))

    def _check_batches_and_length(self):
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size",
                     "gradient_accumulation_steps", "num_train_epochs"):
            value = getattr(self, name)
            _require(value >= 1, name, value, N_("a whole number >= 1"))
        _require(self.max_steps == -1 or self.max_steps >= 1, "max_steps", self.max_steps,
                 N_("-1 (train for num_train_epochs) or a whole number >= 1"))

    def _check_evaluation(self):
        _require_optional_positive("eval_steps", self.eval_steps)
        _require(self.max_new_tokens >= 1, "max_new_tokens", self.max_new_tokens, N_("a whole number >= 1"))
        _require_optional_positive("eval_generate_samples", self.eval_generate_samples)
        _require(self.early_stopping_patience is None or self.early_stopping_patience >= 1, "early_stopping_patience",
                 self.early_stopping_patience, N_("None (off) or a whole number >= 1, counted as in Hugging Face: 1 "
                                                  "stops at the first evaluation without improvement (what Keras "
                                                  "calls patience=0)"))
        threshold = self.early_stopping_threshold
        _require(math.isfinite(threshold) and threshold >= 0, "early_stopping_threshold", threshold,
                 N_("a number >= 0 (how much eval_loss must fall to count as better)"))

    def _check_finetuning(self):
        _require_choice("finetuning_type", self.finetuning_type, FINETUNING_TYPES)
        _require(self.freeze_trainable_layers >= 1, "freeze_trainable_layers",
                 self.freeze_trainable_layers, N_("a whole number >= 1 (the last N layers train)"))
        _require(self.lora_rank >= 1, "lora_rank", self.lora_rank, N_("a whole number >= 1, e.g. 8"))
        alpha = self.lora_alpha
        _require(alpha is None or (math.isfinite(alpha) and alpha > 0), "lora_alpha", alpha,
                 N_("None (= 2 x lora_rank) or a number > 0"))
        _require(0 <= self.lora_dropout < 1, "lora_dropout", self.lora_dropout, N_("a probability in [0, 1)"))
        _require(_is_lora_target(self.lora_target), "lora_target", self.lora_target,
                 N_("'all' or comma-separated module names such as 'q_proj,v_proj'"))
        _require(self.quantization_bit in (None, 4, 8), "quantization_bit", self.quantization_bit,
                 N_("None, 4 or 8"))
        for name, off in (("use_rslora", False), ("use_dora", False), ("quantization_bit", None)):
            value = getattr(self, name)
            if value != off and self.finetuning_type != "lora":
                raise ConfigError(
                    _("{field}={value!r} only applies to LoRA, but finetuning_type={finetuning_type!r}; "
                      "allowed: set finetuning_type='lora', or {field}={off!r}.").format(
                        field=name, value=value, finetuning_type=self.finetuning_type, off=off))

    def _check_other(self):
        clip = self.max_grad_norm
        _require(clip is None or (math.isfinite(clip) and clip >= 0), "max_grad_norm", clip,
                 N_("None or 0 (no clipping) or a number > 0, e.g. 1.0"))
        if self.bf16 and self.fp16:
            raise ConfigError(_("fp16=True and bf16=True: allowed: at most one of them (bf16 is the better choice "
                                "where the hardware supports it)."))
        _require(self.seed >= 0, "seed", self.seed, N_("a whole number >= 0"))
        _require(self.dataloader_num_workers >= 0, "dataloader_num_workers", self.dataloader_num_workers,
                 N_("a whole number >= 0"))
        _require(self.logging_steps >= 1, "logging_steps", self.logging_steps, N_("a whole number >= 1"))
        _require(self.output_dir.strip() != "", "output_dir", self.output_dir, N_("a folder path"))

    # ------------------------------------------------------------------ derived values

    @property
    def resolved_lora_alpha(self) -> float:
        """lora_alpha as used: the field stays None when unset, so replace(lora_rank=16) still doubles it."""
        if self.lora_alpha is None:
            return 2 * self.lora_rank
        return _int_if_whole(self.lora_alpha)

    # ------------------------------------------------------------------ building and copying

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """A config from a plain dict (YAML, JSON, papermill); values given as strings are converted."""
        if not isinstance(d, dict):
            raise ConfigError(_("expected a mapping of field: value, got {type}.").format(type=type(d).__name__))
        check_field_names(d)
        return cls(**d)

    @classmethod
    def from_yaml(cls, path) -> "TrainConfig":
        text = Path(path).read_text()
        return cls.from_dict(yaml.safe_load(text) or {})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self, path=None) -> str:
        """The config as YAML (every field, in declaration order); also written to `path` if given."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    def replace(self, **changes) -> "TrainConfig":
        """A checked copy with some fields changed."""
        check_field_names(changes)
        return dataclasses.replace(self, **changes)

    def changed_fields(self) -> dict:
        """The fields that differ from the defaults, e.g. {"learning_rate": 0.0003}."""
        defaults = TrainConfig()
        return {name: value for name, value in self.to_dict().items() if getattr(defaults, name) != value}

    def diff(self, other: "TrainConfig") -> dict:
        """Fields that differ between two configs: {name: (value here, value in other)}."""
        theirs = other.to_dict()
        return {name: (value, theirs[name]) for name, value in self.to_dict().items() if theirs[name] != value}

    def label(self) -> str:
        """A short text for legends and run tables: the changed fields, or "defaults" (in the learner's language)."""
        changed = self.changed_fields()
        return ", ".join(f"{name}={value}" for name, value in changed.items()) or _("defaults")


# ---------------------------------------------------------------------- helpers used by the class


def check_field_names(d: dict) -> None:
    """Raise ConfigError for a key that is not a TrainConfig field, suggesting the right one."""
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    for key in d:
        if key not in names:
            hint = _did_you_mean_this(ALIASES[key]) if key in ALIASES else _did_you_mean(key, names)
            raise ConfigError(_("{key!r} is not a TrainConfig field.").format(key=key)
                              + (hint or _(" Fields: {fields}.").format(fields=", ".join(names))))


def check_lora_rank(cfg: TrainConfig, hidden_size: int) -> None:
    """Called once the model is loaded: a LoRA rank above the hidden size adds nothing but cost."""
    if cfg.finetuning_type == "lora" and cfg.lora_rank > hidden_size:
        raise ConfigError(
            _("lora_rank={rank} is larger than the model's hidden size ({hidden_size}); "
              "allowed: lora_rank <= {hidden_size} (a rank above it cannot add capacity).").format(
                rank=cfg.lora_rank, hidden_size=hidden_size))


# The headers of TrainConfig's sections ("# --- optimizer ---"), marked for the catalogue: show-config prints them
# translated. tests/test_config.py checks that they are the class's headers, in its order.
FIELD_SECTIONS = (N_("model and data"), N_("learning rate and its schedule"), N_("optimizer"), N_("batch"),
                  N_("how long to train"), N_("evaluation"), N_("early stopping"), N_("fine-tuning method"),
                  N_("stability, precision, reproducibility"), N_("logging and output"))


def field_docs() -> list:
    """[(section, field name, why)] for show-config and UIs, in field order: the section is the header above
    the field in TrainConfig's source, the why its why() text; both in the learner's language."""
    whys = {f.name: f.metadata["why"] for f in dataclasses.fields(TrainConfig)}
    docs, section = [], ""
    for line in inspect.getsource(TrainConfig).splitlines():
        header = re.match(r"    # --- (.+) ---$", line)
        if header:
            section = header[1]
        entry = re.match(r"    (\w+): ", line)
        if entry and entry[1] in whys:
            docs.append((_(section), entry[1], _(whys[entry[1]]).format()))
    return docs


def _require(ok: bool, name: str, value, allowed: str) -> None:
    """`allowed`: what the field takes, marked N_() by the caller; translated only when the value is refused."""
    if not ok:
        raise ConfigError(_("{field}={value!r} is invalid; allowed: {allowed}.").format(
            field=name, value=value, allowed=_(allowed)))


def _require_optional_positive(name: str, value) -> None:
    _require(value is None or value >= 1, name, value, N_("None or a whole number >= 1"))


def _require_choice(name: str, value: str, choices) -> None:
    if value not in choices:
        raise ConfigError(_("{field}={value!r} is not allowed; allowed: {allowed}.").format(
            field=name, value=value, allowed=_quoted(choices)) + _did_you_mean(value, choices))


def _did_you_mean(word, choices) -> str:
    """The sentence that follows a refusal when a choice is close to `word` (else "")."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.5)
    return _did_you_mean_this(close[0]) if close else ""


def _did_you_mean_this(suggestion: str) -> str:
    return _(" Did you mean {suggestion!r}?").format(suggestion=suggestion)


def _quoted(names) -> str:
    return ", ".join(repr(name) for name in names)


def _is_model_name(model: str) -> bool:
    if model in MODEL_NAMES:
        return True
    hf_id = re.fullmatch(r"[\w.-]+/[\w.-]+", model) is not None
    return hf_id or (model.strip() != "" and Path(model).expanduser().is_dir())


def _is_jsonl_file(path: str) -> bool:
    return path.endswith(".jsonl") and Path(path).expanduser().is_file()


def _is_lora_target(target: str) -> bool:
    return target == "all" or re.fullmatch(r"\s*[\w.]+\s*(,\s*[\w.]+\s*)*", target) is not None


def _checked_val_size(val_size: float):
    """A fraction in (0, 1) stays a float; a whole count >= 1 becomes an int (LLaMA-Factory's rule)."""
    if 0 < val_size < 1:
        return val_size
    _require(val_size >= 1 and float(val_size).is_integer(), "val_size", val_size,
             N_("a fraction in (0, 1) or a whole count >= 1"))
    return int(val_size)


def _int_if_whole(x: float):
    return int(x) if float(x).is_integer() else x


# Arguments that the training loop itself passes to a scheduler.
_SET_BY_LOOP = ("optimizer", "num_warmup_steps", "num_training_steps", "last_epoch", "kwargs")


def _scheduler_kwarg_names(scheduler: str):
    """Names lr_scheduler_kwargs may hold for a scheduler, read from its signature (None = any)."""
    if scheduler == "step":
        return ("step_size", "gamma")  # step_size counts epochs
    if scheduler == "greedy":
        return None  # its factory passes **kwargs through
    # imported here, not at the top: only a config that sets lr_scheduler_kwargs pays for torch
    import torch
    from transformers import SchedulerType
    from transformers.optimization import TYPE_TO_SCHEDULER_FUNCTION

    if scheduler == "reduce_lr_on_plateau":
        function = torch.optim.lr_scheduler.ReduceLROnPlateau
    else:
        function = TYPE_TO_SCHEDULER_FUNCTION.get(SchedulerType(scheduler))
    if function is None:
        return None
    return tuple(p for p in inspect.signature(function).parameters if p not in _SET_BY_LOOP)


def _check_scheduler_kwargs(scheduler: str, kwargs: dict) -> None:
    if not kwargs:  # nothing to check: spares the scheduler signatures' imports (torch, transformers)
        return
    allowed = _scheduler_kwarg_names(scheduler)
    if allowed is None:
        return
    for key in kwargs:
        if key not in allowed:
            if not allowed:
                raise ConfigError(
                    _("lr_scheduler_kwargs has {key!r}, which lr_scheduler_type={scheduler!r} does not take; "
                      "allowed: none.").format(key=key, scheduler=scheduler))
            raise ConfigError(
                _("lr_scheduler_kwargs has {key!r}, which lr_scheduler_type={scheduler!r} does not take; "
                  "allowed: {allowed}.").format(key=key, scheduler=scheduler, allowed=_quoted(allowed))
                + _did_you_mean(key, allowed))


# ---------------------------------------------------------------------- type conversion

_NONE_WORDS = ("none", "null", "~", "")
_TRUE_WORDS = ("true", "yes", "on", "1")
_FALSE_WORDS = ("false", "no", "off", "0")


def _to_bool(value):
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE_WORDS + _FALSE_WORDS:
        return value.strip().lower() in _TRUE_WORDS
    raise ValueError


def _to_int(value):
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, str):
        value = float(value) if re.search(r"[.eE]", value) else int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int):
        return value
    raise ValueError


def _to_float(value):
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError
    return float(value)


def _to_str(value):
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    raise ValueError


def _to_dict(value):
    if isinstance(value, str):
        value = yaml.safe_load(value) if value.strip() else {}  # YAML also reads JSON
    if isinstance(value, dict):
        return dict(value)
    raise ValueError


def _to_list(value):
    if isinstance(value, str):  # "[1e-3, 3e-3]": papermill passes a list it cannot type as its text
        try:
            value = ast.literal_eval(value)  # Python's reading: YAML would take 1e-3 for a string
        except (ValueError, SyntaxError):
            raise ValueError from None
    if isinstance(value, (list, tuple)):
        return list(value)
    raise ValueError


_CONVERTERS = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str, dict: _to_dict, list: _to_list}
# what a value of each type looks like, marked for the catalogue, translated where a value is refused
_TYPE_WORDS = {bool: N_("true or false"), int: N_("a whole number"), float: N_("a number such as 3e-4"),
               str: N_("a string"), dict: N_('a mapping such as {{"num_cycles": 2}}'),
               list: N_("a list such as [1e-3, 3e-3]")}


def _unpack(annotation):
    """(type, may be None) for an annotation such as `float` or `int | None`."""
    args = typing.get_args(annotation)
    if not args:
        return annotation, False
    kinds = [a for a in args if a is not type(None)]
    return kinds[0], len(kinds) < len(args)


def coerce_value(name: str, value, annotation):
    """`value` converted to the field's (or a chapter parameter's) type; strings such as "3e-4",
    "true", "none", "[1, 2]" are parsed."""
    kind, optional = _unpack(annotation)
    if optional and (value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS)):
        return None
    try:
        return _CONVERTERS[kind](value)
    except (ValueError, TypeError, yaml.YAMLError):
        allowed = _(_TYPE_WORDS[kind]).format()
        if optional:
            allowed = _("{kind} or None").format(kind=allowed)
        raise ConfigError(_("{field}={value!r} is invalid; allowed: {allowed}.").format(
            field=name, value=value, allowed=allowed)) from None


def read_yaml_mapping(path, what: str = "--config") -> dict:
    """A YAML file of `field: value` pairs ({} when empty); a ConfigError naming `what` and the file
    when it cannot be read, is not YAML, or is not a mapping (the CLI's --config, a study spec). `what`: an
    option's name, or a noun the caller has put in the learner's language (_("study spec"))."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as err:
        raise ConfigError(_("{what} {path}: cannot read it ({reason})").format(
            what=what, path=path, reason=err.strerror)) from None
    except yaml.YAMLError as err:
        raise ConfigError(_("{what} {path}: not valid YAML ({error})").format(
            what=what, path=path, error=err)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(_("{what} {path}: expected a mapping of field: value, got {type}").format(
            what=what, path=path, type=type(data).__name__))
    return data
