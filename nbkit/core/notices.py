"""Third-party notices that teach a learner nothing, filtered in one place, each with its reason.

    install()                      the process-wide filters; `import nbkit` calls it once, before any run
                                   imports bitsandbytes, peft or transformers (a chapter's cells need nothing more)
    optuna_experimental()          a context: Optuna's ExperimentalWarning for the features nbkit relies on
    optuna_quiet()                 a context: Optuna's INFO log lines ("A new study created in ...")
    profiler_timeline_warning()    a context: torch's FutureWarning on the CPU memory timeline

Each filter drops one named message, never a category from a whole package: any other warning still shows.
"""
from __future__ import annotations

import contextlib
import logging
import warnings

# bitsandbytes (0.49) tries, at import, to fetch an optional fused CPU kernel from the Hub and logs a warning
# when it cannot (offline, or the repository not on a trust list), then uses its own CPU kernels, the ones
# nbkit's QLoRA runs use: the notice would open every chapter's output while teaching nothing
BNB_KERNEL_LOGGER, BNB_KERNEL_NOTICE = "bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward"
# bitsandbytes' 8-bit matmul says at every forward of an 8-bit QLoRA run that it casts fp32 inputs to fp16 (how
# LLM.int8() computes, expected on the CPU): dozens of identical lines, as a warning and as a log record
INT8_LOGGER = "bitsandbytes.autograd._functions"
INT8_NOTICE = "MatMul8bitLt: inputs will be cast from torch.float32 to float16"
# PEFT (0.21) reads transformers' deprecated names when it wraps a model for LoRA (`is_gradient_checkpointing`),
# and transformers warns about caching and activation checkpointing when chapter 3 measures memory with
# gradient checkpointing on: FutureWarnings about their code, not about the run
TRANSFORMERS_DEPRECATIONS = r".*(is_gradient_checkpointing|activation_checkpointing|use_cache).*"


class DropMessage(logging.Filter):
    """A logging filter that drops the records whose message starts with `message`, and only those."""

    def __init__(self, message: str):
        super().__init__()
        self.message = message

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.message)


LOG_FILTERS = {BNB_KERNEL_LOGGER: DropMessage(BNB_KERNEL_NOTICE), INT8_LOGGER: DropMessage(INT8_NOTICE)}


def install() -> None:
    """The process-wide filters (idempotent: a second call adds nothing)."""
    for name, drop in LOG_FILTERS.items():
        logging.getLogger(name).addFilter(drop)  # the logger named after bitsandbytes' module; adding twice is a no-op
    warnings.filterwarnings("ignore", message=INT8_NOTICE, category=UserWarning)
    warnings.filterwarnings("ignore", message=TRANSFORMERS_DEPRECATIONS, category=FutureWarning)


@contextlib.contextmanager
def optuna_experimental():
    """Optuna marks heartbeats, retries and QMC "experimental" at every use: nbkit uses them on purpose."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


@contextlib.contextmanager
def optuna_quiet():
    """Optuna logs "A new study created in ..." on stderr; a chapter's output (and the CLI's) says what
    happened in its own lines. Optuna's logging level is put back after."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


@contextlib.contextmanager
def profiler_timeline_warning():
    """torch deprecates export_memory_timeline in favour of a CUDA-only API; it is still the CPU's route."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield
