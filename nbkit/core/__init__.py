"""The trainer: what every chapter shares. Config, data, models, the training loop, evaluation,
the run store, and the tools built on the loop (sweeps, studies, the LR range test, the memory
planner, worker processes, multi-process launches, exports to other tools).

Imports go down only: core imports nothing from nbkit.labs, nbkit.views or nbkit.interfaces. Inside
the core they go back only, in this order (a comma: the same level, which import nothing of each
other), so the core has no import cycle and each module's first lines say what it builds on:

    config, callbacks -> data, runs, peft_mapping -> models, export, pretrain -> evaluate -> train
    -> lr_finder, memory, workers, distributed -> sweep, optuna_private, study_spec
    -> study_analysis, study_storage, study_trials -> study_queue -> study_workers -> study -> study_export, classroom

A module imports nbkit modules at its top; one inside a function is there only to keep a heavy package
(torch, ...) off a light path, such as the CLI's, and says so in a comment. tests/test_layout.py
declares the order (CORE_ORDER) and checks all of it.
"""
