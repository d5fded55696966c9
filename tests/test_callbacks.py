"""nbkit.core.callbacks: the one "best evaluation so far" rule the trainer, the panel and the doctor share."""
import math

from nbkit.core.callbacks import EVENTS, BestTracker, EarlyStopping, best_of


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


def test_the_events_are_named_once():
    assert EVENTS == ("train_begin", "step", "epoch_end", "run_end")
