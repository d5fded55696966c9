"""What the benchmarks share: HF Trainer on an nbkit config with its extras off, and interleaved rounds.

Imported by the scripts beside it (`python bench/<script>.py` puts this folder on the path).
"""
import statistics
import tempfile

from nbkit import TrainConfig
from nbkit.core.export import training_args_kwargs
from nbkit.core.train import build_datasets


def hf_trainer(cfg: TrainConfig, model, tokenizer, data_collator, callbacks=()):
    """transformers.Trainer on cfg's training set with evaluation, saving and logging off: it times
    the training loop, as nbkit's is timed."""
    from transformers import Trainer, TrainingArguments

    features, _, _ = build_datasets(cfg, tokenizer)
    kwargs = training_args_kwargs(cfg)
    kwargs.update(eval_strategy="no", save_strategy="no", logging_strategy="no", report_to=[],
                  load_best_model_at_end=False, disable_tqdm=True, output_dir=tempfile.mkdtemp())
    return Trainer(model=model, args=TrainingArguments(**kwargs), train_dataset=features,
                   data_collator=data_collator, callbacks=list(callbacks))


def interleaved_medians(contenders: dict, rounds: int, unit: str) -> dict:
    """Run each contender (name -> function returning one measurement) once per round, round after
    round (a noisy machine drifts; interleaving keeps the drift out of the ratios), print each round
    and return each contender's median."""
    values = {name: [] for name in contenders}
    for r in range(rounds):
        for name, measure in contenders.items():
            values[name].append(measure())
        print(f"round {r + 1}: " + "  ".join(f"{n} {v[-1]:.2f} {unit}" for n, v in values.items()), flush=True)
    return {name: statistics.median(v) for name, v in values.items()}
