"""nbkit: a Jupyter-first lab for learning how fine-tuning hyperparameters behave.

    from nbkit import TrainConfig, train
    run = train(TrainConfig(model="tiny", learning_rate=3e-4, num_train_epochs=6))
    run.status, run.steps, run.epochs, run.best_epoch, run.path
"""
from nbkit.config import TrainConfig
from nbkit.runs import Run, list_runs, load_run
from nbkit.train import train

__all__ = ["TrainConfig", "Run", "train", "load_run", "list_runs"]
