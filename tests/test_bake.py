"""Baked runs (nbkit.interfaces.bake, `python -m nbkit bake`): a chapter run headless once, its runs kept beside
its results.json and the executed notebook; the panel's table and overlay, and the board, read them as they read
live ones. Bad input is one line and writes nothing. A whole chapter baked for real is in make test-extended."""
import json
import re
import subprocess
import sys

import pytest

from conftest import tiny_config
from nbkit import train
from nbkit.core.classroom import class_runs, leaderboard
from nbkit.core.config import ConfigError
from nbkit.core.i18n import set_language
from nbkit.interfaces.bake import BAKED_STUDENT, bake, baked_board, baked_class, baked_runs, varied_knobs
from nbkit.views.ui import panel

pytestmark = pytest.mark.usefixtures("one_torch_thread")
RATES = [1e-3, 3e-3, 1e-2]


@pytest.fixture(scope="module")
def baked_folder(tmp_path_factory):
    """A folder laid out as a baked chapter: three runs at three learning rates, and its results.json."""
    folder = tmp_path_factory.mktemp("baked") / "tiny" / "01_learning_rate"
    for rate in RATES:
        train(tiny_config(folder, learning_rate=rate, num_train_epochs=2))
    (folder / "results.json").write_text(json.dumps({"chapter": "01_learning_rate", "checks": []}))
    return folder


def test_baked_runs_feed_the_panels_table_and_overlay(baked_folder, tmp_path):
    runs = baked_runs(baked_folder)
    assert [r.config["learning_rate"] for r in runs] == RATES  # in the order they started
    assert varied_knobs(runs) == ["learning_rate"]
    restarts = train(tiny_config(tmp_path, num_train_epochs=2, lr_scheduler_type="cosine_with_restarts",
                                 lr_scheduler_kwargs={"num_cycles": 2}))
    assert varied_knobs([*runs, restarts]) == ["learning_rate", "lr_scheduler_type"]  # a dict is no axis
    p = panel(tiny_config(tmp_path), ["learning_rate"], runs=runs)
    assert list(p.runs_table()["learning_rate"]) == RATES
    p._on_overlay()
    assert any("image/png" in o.get("data", {}) for o in p.overlay_output.outputs)


def test_the_board_draws_a_baked_chapter_as_a_class(baked_folder):
    study = baked_class(baked_folder)
    rows = class_runs(study)
    assert sorted(r["params"]["learning_rate"] for r in rows) == RATES
    board = leaderboard(rows)
    assert set(board["student"]) == {BAKED_STUDENT} and list(board["best_eval_loss"]) == sorted(board["best_eval_loss"])
    assert study.user_attrs["nbkit_spec"]["base"]["num_train_epochs"] == 2  # the budget the runs share
    live = baked_board(baked_folder)
    try:
        assert live.last_error is None and live.redraws >= 1
        assert len(live.shown_at) == len(RATES)
    finally:
        live.close()


def test_a_folder_that_is_not_baked_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="has no results.json"):
        baked_runs(tmp_path)


def test_bakes_refusals_speak_chinese(tmp_path):
    """The real catalogue (nbkit/locale/zh_CN/LC_MESSAGES/nbkit.po)."""
    set_language("zh")
    try:
        refused = "中没有 results.json；允许的值：由 `python -m nbkit bake` 生成的文件夹"
        with pytest.raises(ConfigError, match=re.escape(refused)):
            baked_runs(tmp_path)
        refused = "-p output_dir：由 bake 决定（--output-dir 设置烘焙好的文件夹存放的位置）"
        with pytest.raises(ConfigError, match=re.escape(refused)):
            bake("1", {"output_dir": "x"}, tmp_path)
        assert not list(tmp_path.iterdir())
    finally:
        set_language("en")


@pytest.mark.parametrize("args, says", [
    (["bake", "99"], "chapter='99' is not a chapter"),
    (["bake", "1", "-p", "learning_rat", "1e-3"], "'learning_rat' is not a parameter"),
    (["bake", "1", "-p", "output_dir", "x"], "-p output_dir: bake chooses it"),
    (["bake", "1", "-p", "sweep_epochs", "two"], "-p sweep_epochs two"),
])
def test_bad_bake_input_is_one_line_and_writes_nothing(tmp_path, args, says):
    result = subprocess.run([sys.executable, "-m", "nbkit", *args], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and result.stderr.startswith("nbkit: error: ") and says in result.stderr, result
    assert "Traceback" not in result.stderr and not list(tmp_path.iterdir())


@pytest.mark.extended  # a whole chapter run: make test-extended (test-all)
def test_bake_runs_a_chapter_and_keeps_its_runs_results_and_executed_notebook(tmp_path):
    folder = bake("04", {"seed": "7"}, tmp_path / "baked")
    assert folder == (tmp_path / "baked" / "tiny" / "04_epochs_early_stopping").resolve()
    results = json.loads((folder / "results.json").read_text())
    assert results["checks"] and all(c["holds"] is not None for c in results["checks"])
    executed = json.loads((folder / "04_epochs_early_stopping.ipynb").read_text())
    assert any("image/png" in o.get("data", {}) for c in executed["cells"] for o in c.get("outputs", []))
    runs = baked_runs(folder)
    assert runs and all(r.config["seed"] in (7, 8, 9) for r in runs)
    assert class_runs(baked_class(folder))
