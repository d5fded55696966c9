"""nbkit: a Jupyter-first lab for learning how fine-tuning hyperparameters behave.

    from nbkit import TrainConfig, train
    run = train(TrainConfig(model="tiny", learning_rate=3e-4, num_train_epochs=6))
    run.status, run.steps, run.epochs, run.best_epoch, run.path
"""
import logging
import warnings


def _drop_bitsandbytes_kernel_notice(record: logging.LogRecord) -> bool:
    """bitsandbytes (0.49) tries, at import, to fetch an optional fused CPU kernel from the Hub and
    logs a warning when it cannot (offline, or the repository not on a trust list), then uses its
    own CPU kernels, the ones nbkit's QLoRA runs use. Every chapter and `python -m nbkit` imports
    it (through peft), so the notice would open every output while teaching nothing: it is
    dropped, and only it (any other bitsandbytes warning still shows)."""
    return not record.getMessage().startswith("Failed to load CPU gemm_4bit_forward")


# set before transformers/peft import bitsandbytes (a run imports them later, through nbkit.core.train): the
# logger named after that module is the one it logs to
logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_drop_bitsandbytes_kernel_notice)

# bitsandbytes' 8-bit matmul warns on every forward of an 8-bit QLoRA run that it casts fp32 inputs to
# fp16 (how LLM.int8() computes): dozens of identical lines in a chapter's output, teaching nothing new
warnings.filterwarnings("ignore", message="MatMul8bitLt: inputs will be cast from torch.float32 to float16",
                        category=UserWarning)

from nbkit.core.config import TrainConfig  # noqa: E402
from nbkit.core.runs import Run, list_runs, load_run  # noqa: E402

__all__ = ["TrainConfig", "Run", "train", "load_run", "list_runs"]


def __getattr__(name):
    """`nbkit.train` (and `from nbkit import train`), imported on first use (PEP 562). nbkit.core.train
    imports torch, transformers and peft (6 s or more); importing it here at the top would make every
    `import nbkit`, and so every `python -m nbkit` command, wait for them, even one that only checks a
    config or prints a table."""
    if name == "train":
        from nbkit.core.train import train

        return train
    raise AttributeError(f"module 'nbkit' has no attribute {name!r}")
