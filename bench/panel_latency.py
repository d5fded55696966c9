"""How long after pressing Train does the panel show its first plotted point?

    .venv/bin/python bench/panel_latency.py [--repeats 5]

Builds chapter 1's panel (the tiny model, arithmetic, 2 epochs; no browser: ipywidgets run
without a front end), presses Train the way a click does, and reads the panel's own
measurement: seconds from the click to the first redraw of the live plot with a point on it
(TrainPanel.first_plot_seconds). Each press loads the model and starts a fresh run, as in the
notebook. The first press in a fresh process also pays for lazy imports and first-call set-up;
in a chapter that is already paid by its headless runs, which come before the panel. So the
first press is reported apart ("cold"), and the target applies to the rest ("warm", median):
<= 3 s on 2 CPU cores (issue: chapter harness). The browser test prints the number it sees in
real Chromium too.
"""
import argparse
import statistics
import tempfile

from nbkit import TrainConfig
from nbkit.views.ui import panel

TARGET_SECONDS = 3.0  # first plotted point after pressing Train


def press_train_once(out: str) -> float:
    cfg = TrainConfig(num_train_epochs=2, predict_with_generate=False, disable_tqdm=True, output_dir=out)
    p = panel(cfg, ["learning_rate", "lr_scheduler_type", "warmup_ratio", "num_train_epochs"])
    p.train_button.click()
    p.join()
    if p.last_error is not None:
        raise p.last_error
    return p.first_plot_seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nbkit-latency-") as out:
        cold = press_train_once(out)
        seconds = [press_train_once(out) for _ in range(args.repeats)]
    median = statistics.median(seconds)
    print(f"cold (first press in a fresh process): {cold:.2f} s")
    print("warm, as in a chapter (s):", ", ".join(f"{s:.2f}" for s in seconds))
    print(f"median {median:.2f} s   target <= {TARGET_SECONDS:.0f} s   "
          f"{'pass' if median <= TARGET_SECONDS else 'FAIL'}")


if __name__ == "__main__":
    main()
