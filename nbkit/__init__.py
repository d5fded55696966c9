"""nbkit: a Jupyter-first lab for fine-tuning hyperparameters."""
