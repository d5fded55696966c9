"""Chapter labs: one module per chapter that measures more than the trainer does, named after it
(ch03_batch_size.py serves notebooks/03_batch_size.ipynb). A lab computes; it does not draw
(nbkit.views draws) and imports only nbkit.core, never another lab (tests/test_layout.py)."""
