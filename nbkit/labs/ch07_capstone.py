"""The capstone's steps: pick the batch with the memory planner, the learning rate with the range
test, fine-tune by the method on every seed of the chapter, compare answers before and after, and
check that the exported configs are accepted by their tools (run sizes: nbkit.interfaces.profiles).

Each step is one short function so the notebook reads as the method of chapters 1 to 6:
batch (memory planner) -> epochs bound (validation curve, early stopping) -> LR range test
(lr_finder) -> method and rank (chapter 5) -> train -> before/after -> exports.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from nbkit.core.config import TrainConfig
from nbkit.core.evaluate import answers_table
from nbkit.core.i18n import N_, _

# Why the method runs each model as notebooks/sizes/07_capstone.toml says (the chapter prints it, through _()).
METHOD_REASONS = {
    "smollm2-135m": N_(
        "SmolLM2 already computes sums; what it lacks is the format (a bare number, not a sentence): a "
        "small LoRA rank is enough (chapter 5: a simple task needs little rank). A range-test step costs "
        "about a second and an epoch about a minute on two cores: 40 steps (6 a decade) find the order of "
        "magnitude; 3 epochs bound the run, and its validation curve turns once: stop at the first epoch "
        "that is not better."),
    "tiny": N_(
        "the tiny model has never seen a sum: for it the task is knowledge to store, not a format, and "
        "chapter 5 found that a knowledge task needs rank and that full fine-tuning learns it furthest; "
        "LoRA at rank 8 learns the sums on most seeds but can stall for good on some, and the planner "
        "says full fine-tuning of this model fits memory_gb many times over. Steps cost milliseconds, so "
        "fastai's 100-step range test (14 points a decade). Under the linear schedule the epochs bound "
        "also sets how fast the LR decays, so a tight bound starves the late epochs: 40, far above where "
        "early stopping ends these runs. The validation loss can stall for an epoch or two before the "
        "sums click (chapter 4: patience must outlast a plateau): patience 3."),
}
METHOD_TYPES = ("lora", "full")  # the two ways the method fine-tunes (chapter 5's rule picks one per model)


def check_method(p) -> None:
    """The method's settings in the chapter's parameters `p` (after sizing: "" and 0 became the
    model's own), checked: a bad one raises ValueError naming it, its value and what is allowed."""
    if p.finetuning_type not in METHOD_TYPES:
        raise ValueError(_("finetuning_type={finetuning_type!r} is not allowed: 'lora', 'full', or '' for the "
                           "model's own").format(finetuning_type=p.finetuning_type))
    for name in ("lr_test_steps", "max_epochs", "early_stopping_patience"):
        value = getattr(p, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(_("{name}={value!r} is not allowed: a whole number, 0 for the model's own")
                             .format(name=name, value=value))


def why_these_settings(model: str) -> str:
    """Why the method runs `model` as it does (another model: SmolLM2's reasons)."""
    known = model if model in METHOD_REASONS else "smollm2-135m"
    return f"{known}: {_(METHOD_REASONS[known])}"


def chosen_learning_rate(finder) -> float:
    """The range test's suggestion, to two significant digits: a number to write in a config."""
    return float(f"{finder.suggestion:.1e}")


@dataclass
class MethodRun:
    """One seed's pass through the method: the range test, the run it chose, and the validation loss
    of the weights the run kept (re-evaluated right after training, while they are in memory)."""
    finder: object
    run: object
    kept_loss: float


def fine_tune_by_the_method(cfg: TrainConfig, lr_test_steps: int) -> MethodRun:
    """cfg's seed through the method: the LR range test picks the learning rate, then the fine-tune
    (cfg's epochs bound, early stopping, best epoch restored). Only the curves come back."""
    from nbkit.core.lr_finder import lr_range_test
    from nbkit.core.train import train, validation_loss

    finder = lr_range_test(cfg, num_steps=lr_test_steps)
    run = train(cfg.replace(learning_rate=chosen_learning_rate(finder)))
    kept_loss = validation_loss(run)
    run.drop_weights()  # a real LLM's weights are not kept for every seed
    return MethodRun(finder, run, kept_loss)


def method_on_seeds(cfg: TrainConfig, seeds: list[int], lr_test_steps: int, workers: int = 1) -> list[MethodRun]:
    """The whole method again at each seed (its own range test, its own run), side by side in
    `workers` processes (nbkit.core.workers) or one after another."""
    cfgs = [cfg.replace(seed=seed, run_name=f"{cfg.run_name or 'method'}-seed{seed}") for seed in seeds]
    from nbkit.core.workers import run_side_by_side

    return run_side_by_side(fine_tune_by_the_method, [(c, lr_test_steps) for c in cfgs], workers,
                            name="method_on_seeds", what=N_("seeds"))


def pick_batch(cfg: TrainConfig, memory_gb: float, effective_batch: int) -> dict:
    """Chapter 3's planner: the largest per-device batch whose planned memory fits in memory_gb,
    then the power-of-two micro-batch and accumulation that reach effective_batch within it."""
    from nbkit.core.memory import ModelShape, largest_batch, plan_for_config, plan_for_effective_batch, plan_kwargs

    shape = ModelShape.from_registry(cfg.model)
    fits = largest_batch(shape, memory_gb * 1e9, **plan_kwargs(cfg))
    if fits == 0:
        raise ValueError(_("memory_gb={memory_gb}: not even one row of {model} fits; the plan for one row is "
                           "{gb:.2f} GB").format(memory_gb=memory_gb, model=cfg.model,
                                                 gb=plan_for_config(cfg.replace(per_device_train_batch_size=1),
                                                                    shape).total / 1e9))
    choice = plan_for_effective_batch(shape, memory_gb * 1e9, effective_batch, **plan_kwargs(cfg))
    chosen = cfg.replace(per_device_train_batch_size=choice["per_device_train_batch_size"],
                         gradient_accumulation_steps=choice["gradient_accumulation_steps"])
    return dict(largest_fitting_batch=fits, plan=plan_for_config(chosen, shape), **choice)


def before_and_after(run, examples: list[dict], n: int = 8, max_new_tokens: int = 16) -> pd.DataFrame:
    """Greedy answers of the base and of the fine-tuned model, side by side. After LoRA the base is the
    same weights with the adapters switched off; after full fine-tuning it is loaded again."""
    from nbkit.core.models import load_base_model

    model, tokenizer = run.model, run.tokenizer
    after = answers_table(model, tokenizer, examples, n, max_new_tokens)
    if hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            before = answers_table(model, tokenizer, examples, n, max_new_tokens)
    else:
        base = load_base_model(TrainConfig.from_dict(run.config), next(model.parameters()).device)
        before = answers_table(base, tokenizer, examples, n, max_new_tokens)
    return pd.DataFrame({"question": before["question"], "reference": before["reference"],
                         "base_answer": before["answer"], "fine_tuned_answer": after["answer"],
                         "base_correct": before["correct"], "fine_tuned_correct": after["correct"]})


def exports_accepted(paths: dict) -> dict:
    """Load each exported file with its own tool: TRL builds SFTConfig (and LoraConfig; None after full
    fine-tuning) from the script, transformers builds TrainingArguments from the JSON, and the
    LLaMA-Factory YAML parses to a mapping with the keys llamafactory-cli needs. Returns {format: what
    was built}."""
    from transformers import TrainingArguments

    namespace = {"__name__": "nbkit_exported"}  # not "__main__": builds the configs, does not train
    exec(compile(Path(paths["trl"]).read_text(), str(paths["trl"]), "exec"), namespace)
    args = TrainingArguments(**json.loads(Path(paths["training_args"]).read_text()))
    lf = yaml.safe_load(Path(paths["llamafactory"]).read_text())
    needed = {"model_name_or_path", "stage", "finetuning_type", "dataset", "template", "output_dir"}
    if not needed <= set(lf):
        raise ValueError(_("{path}: missing LLaMA-Factory keys {keys}").format(path=paths["llamafactory"],
                                                                               keys=sorted(needed - set(lf))))
    peft_config = namespace["peft_config"]  # None for full fine-tuning
    return {"trl": (type(namespace["training_args"]).__name__, type(peft_config).__name__ if peft_config else None),
            "training_args": type(args).__name__, "llamafactory": f"{len(lf)} keys, stage={lf['stage']}"}
