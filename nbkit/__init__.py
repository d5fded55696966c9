"""nbkit: a Jupyter-first lab for learning how fine-tuning hyperparameters behave.

    from nbkit import TrainConfig, train
    run = train(TrainConfig(model="tiny", learning_rate=3e-4, num_train_epochs=6))
    run.status, run.steps, run.epochs, run.best_epoch, run.path

    from nbkit import classroom            # a workshop: classroom.create(...), .join(...), .board(...)
    from nbkit import exercises            # a chapter's exercises that check themselves
    nbkit.set_language("zh")               # every text in Chinese from here on (nbkit/core/i18n.py)
"""
from nbkit.core import notices

# third-party notices that teach nothing (bitsandbytes' kernel and int8 lines, PEFT's deprecated names), each
# dropped by name with its reason in nbkit/core/notices.py: set here, before any run imports those packages
notices.install()

from nbkit.core.config import TrainConfig  # noqa: E402
from nbkit.core.i18n import set_language  # noqa: E402
from nbkit.core.runs import Run, list_runs, load_run  # noqa: E402

__all__ = ["TrainConfig", "Run", "train", "load_run", "list_runs", "classroom", "exercises", "set_language"]


def __getattr__(name):
    """`nbkit.train` (and `from nbkit import train`), imported on first use (PEP 562). nbkit.core.train
    imports torch, transformers and peft (6 s or more); importing it here at the top would make every
    `import nbkit`, and so every `python -m nbkit` command, wait for them, even one that only checks a
    config or prints a table."""
    if name == "train":
        from nbkit.core.train import train

        return train
    if name == "classroom":  # the workshop's ways in (nbkit/interfaces/workshop.py), on first use as train is
        from nbkit.interfaces import workshop

        return workshop
    if name == "exercises":  # nbkit/interfaces/exercises.py
        from nbkit.interfaces import exercises

        return exercises
    raise AttributeError(f"module 'nbkit' has no attribute {name!r}")
