"""The trainer: what every chapter shares. Config, data, models, the training loop, evaluation,
the run store, and the tools built on the loop (sweeps, the LR range test, the memory planner,
worker processes, multi-process launches, exports to other tools).

Imports go down only: core imports nothing from nbkit.labs, nbkit.views or nbkit.interfaces
(tests/test_layout.py checks it).
"""
