"""nbkit.core.callbacks: the one "best evaluation so far" rule the trainer, the panel and the doctor share."""
import ast
import math
from pathlib import Path

from nbkit.core.callbacks import EVENTS, STEP, BestTracker, EarlyStopping, best_of


def test_the_best_is_the_first_lowest_and_nan_never_is():
    assert best_of([(0, 2.0), (1, 1.0), (2, 1.0), (3, math.nan), (4, 1.5)]) == (1, 1.0)
    assert best_of([]) is None
    assert best_of([(0, math.nan)]) is None


def test_a_gain_within_the_threshold_does_not_count():
    tracker = BestTracker(threshold=0.1)
    assert tracker.update(0, 1.0) and not tracker.update(1, 0.95) and tracker.update(2, 0.85)
    assert tracker.best == (2, 0.85)
    assert best_of([(0, 1.0), (1, 0.95)], threshold=0.1) == (0, 1.0)


def test_early_stopping_is_the_tracker_plus_a_count_of_evaluations_without_gain():
    stopper, tracker = EarlyStopping(patience=2, threshold=0.0), BestTracker()
    for epoch, loss in enumerate([3.0, 2.0, 2.5, 1.5, 1.6, 1.7]):
        assert stopper.update(epoch, loss) == tracker.update(epoch, loss)
    assert stopper.best == tracker.best == (3, 1.5)
    assert stopper.bad_epochs == 2 and stopper.should_stop
    assert not EarlyStopping(patience=None).should_stop


def event_literals(path: Path) -> list[str]:
    """Where a file writes an event's name as a string instead of its constant: any literal "train_begin",
    "epoch_end" or "run_end", and a literal "step" compared with a callback's event argument (named `event` or
    `e` in every callback here; elsewhere "step" is a column, a scheduler type or a word in a status line)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and node.value in EVENTS and node.value != STEP:
            found.append(f"{path.name}:{node.lineno} {node.value!r}")
        if isinstance(node, ast.Compare) and isinstance(node.ops[0], (ast.Eq, ast.NotEq)):
            sides = [node.left, *node.comparators]
            if any(isinstance(s, ast.Name) and s.id in ("event", "e") for s in sides):
                found += [f"{path.name}:{s.lineno} {s.value!r}" for s in sides
                          if isinstance(s, ast.Constant) and s.value == STEP]
    return found


def test_the_events_are_named_only_in_callbacks():
    """An event written as a literal elsewhere drifts silently when its name changes: use the constants."""
    root = Path(__file__).resolve().parent.parent
    files = ([p for p in (root / "nbkit").rglob("*.py") if p.name != "callbacks.py"]
             + list((root / "tests").glob("*.py")))
    literals = [hit for path in files if path.name != Path(__file__).name for hit in event_literals(path)]
    assert literals == [], literals
    assert len(set(EVENTS)) == len(EVENTS) == 4


def test_the_literal_check_finds_a_literal_event(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('if event == "step" or event == "epoch_end":\n    rows["step"] = scheduler == "step"\n')
    assert event_literals(sample) == ["sample.py:1 'step'", "sample.py:1 'epoch_end'"]
