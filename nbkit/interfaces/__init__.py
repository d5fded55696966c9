"""The ways in: the chapter notebooks' helpers (chapter: results and figures; profiles: sizes per
model and device) and the command line (`python -m nbkit`). They may import everything below."""
