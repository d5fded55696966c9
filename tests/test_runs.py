"""The run store: files, loading, listing, and crash safety under SIGKILL."""
import json
import re
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from nbkit import TrainConfig, list_runs, load_run, train
from nbkit.core.i18n import set_language
from nbkit.core.runs import RunWriter, new_run_dir, write_json_atomic

REPO = Path(__file__).resolve().parent.parent


def test_writer_roundtrip(tmp_path):
    w = RunWriter(new_run_dir(tmp_path, "demo"), {"learning_rate": 1e-3})
    w.log_step({"step": 1, "loss": 2.5})
    w.log_step({"step": 2, "loss": 2.25})
    w.log_eval({"epoch": 1, "eval_loss": 2.0})
    w.close(status="completed", best_epoch=1)
    run = load_run(w.path)
    assert run.status == "completed" and run.best_epoch == 1
    assert run.steps["loss"].tolist() == [2.5, 2.25]
    assert run.epochs["eval_loss"].tolist() == [2.0]
    assert run.config == {"learning_rate": 1e-3}


def test_atomic_json_leaves_no_temp_files(tmp_path):
    write_json_atomic(tmp_path / "a.json", {"x": 1})
    write_json_atomic(tmp_path / "a.json", {"x": 2})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_two_runs_same_name_get_two_folders(tmp_path):
    assert new_run_dir(tmp_path, "x") != new_run_dir(tmp_path, "x")


def test_two_processes_naming_a_run_at_once_get_two_folders(tmp_path, monkeypatch):
    """Worker processes start runs of the same name in the same second: the folder another process made
    between our look and our mkdir must not crash the run (seen: chapter 6, seed 85929)."""
    monkeypatch.setattr(Path, "exists", lambda self: False)  # every look says free, as in the race
    first, second = new_run_dir(tmp_path, "same"), new_run_dir(tmp_path, "same")
    assert first != second and first.is_dir() and second.is_dir()


def test_load_run_on_a_non_run_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        load_run(tmp_path)


def test_sigkill_mid_run_leaves_earlier_runs_readable_and_marks_itself_incomplete(tmp_path):
    out = tmp_path / "runs"
    done = train(TrainConfig(max_samples=64, num_train_epochs=1, predict_with_generate=False,
                             disable_tqdm=True, output_dir=str(out), run_name="done"))
    script = textwrap.dedent(f"""
        from nbkit import TrainConfig, train
        train(TrainConfig(num_train_epochs=50, predict_with_generate=False, disable_tqdm=True,
                          output_dir={str(out)!r}, run_name="killed"))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    try:
        deadline = time.time() + 120
        steps = None
        while time.time() < deadline:
            found = list(out.glob("*_killed/steps.csv"))
            if found and len(found[0].read_text().splitlines()) > 5:  # header + at least 5 steps
                steps = found[0]
                break
            assert proc.poll() is None, "the training subprocess ended early"
            time.sleep(0.2)
        assert steps is not None, "no steps recorded within 120 s"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()

    killed = load_run(steps.parent)
    assert killed.status == "incomplete"
    assert len(killed.steps) >= 5 and killed.steps["loss"].notna().all()
    again = load_run(done.path)
    assert again.status == "completed" and again.steps["loss"].tolist() == pytest.approx(done.steps["loss"].tolist())
    table = list_runs(out)
    assert isinstance(table, pd.DataFrame)
    assert sorted(table["status"]) == ["completed", "incomplete"]


def test_a_non_run_folder_is_refused_in_chinese(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "summary.json").write_text("{not json")
    set_language("zh")
    try:
        with pytest.raises(FileNotFoundError) as caught:
            load_run(tmp_path)
        assert str(caught.value) == f"{tmp_path} 不是运行文件夹（没有 summary.json）"
        assert list_runs(tmp_path)["status"][0].startswith("无法读取：")
    finally:
        set_language("en")


def test_a_status_is_shown_in_the_readers_language_and_kept_as_its_value():
    from nbkit.core.runs import STATUSES, status_shown

    assert [status_shown(s) for s in STATUSES] == list(STATUSES)  # English: the value itself
    set_language("zh")
    try:
        chinese = [status_shown(s) for s in STATUSES]
        unknown = status_shown("COMPLETE")
    finally:
        set_language("en")
    assert all(re.search(r"[\u4e00-\u9fff]", text) for text in chinese), dict(zip(STATUSES, chinese))
    assert len(set(chinese)) == len(STATUSES) and unknown == "COMPLETE"  # one word each; another value as it is
