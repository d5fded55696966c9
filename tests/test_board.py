"""The instructor's board (nbkit.views.board) and its tables (nbkit.core.classroom: leaderboard, diverged_runs,
outside_budget, board_lines), on a real class in SQLite: two students train design configurations and runs of
their own (one at the class's budget, one that diverges, one with more epochs), and the board must rank, list,
draw and save them; a live Board must pick up a run that finishes after it started without being asked, stop
when closed, and say a database hiccup in its status line. Last, the instructor's notebook runs headless."""
import sqlite3
import time
from pathlib import Path
from types import SimpleNamespace

import nbformat
import papermill
import pytest
from study_helpers import TINY

from nbkit import TrainConfig, train
from nbkit.core.callbacks import EPOCH_END
from nbkit.core.classroom import (board_lines, class_knobs, class_runs, create_class, diverged_runs, join_class,
                                  leaderboard, outside_budget)
from nbkit.core.study_spec import StudySpec
from nbkit.core.study_trials import best_value
from nbkit.views.board import LEAST_PAUSE, RUN_GIDS, Board, board_figures, save_board

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: runs beside the board's thread

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LEARNING_RATES = [1e-3, 3e-3, 1e-2]
SHOWN_WITHIN = 10.0  # seconds a test waits for the board's thread; the bench measures the real latency (<= 2 s)


def make_class(path: Path, name: str, **base) -> SimpleNamespace:
    storage = f"sqlite:///{path}/classes.db"
    spec = StudySpec.from_dict(dict(study_name=name, base={**TINY, **base},
                                    scientific={"learning_rate": LEARNING_RATES}, sampler="grid", storage=storage,
                                    heartbeat_interval=1, grace_period=3))
    study = create_class(spec, "01_learning_rate")
    seats = {who: join_class(name, storage, who, identity=f"{who}@test", output_dir=str(path / "runs"))
             for who in ("ana", "bo")}
    return SimpleNamespace(study=study, storage=storage, path=path, **seats)


def own_run(seat, **values):
    """A student's own run (Train in the panel), recorded in the class."""
    cfg = TrainConfig.from_dict({**seat.spec.held(), "output_dir": seat.spec.output_dir, "disable_tqdm": True,
                                 **values})
    run = train(cfg)
    seat.record_own(run)
    return run


@pytest.fixture(scope="module")
def room(tmp_path_factory, one_torch_thread):
    """Class lr101: ana and bo each train a design configuration (one stays free); ana trains lr 5e-3 of her
    own at the class's budget; bo one at lr 10 (it diverges) and one at lr 3e-3 with 2 epochs instead of 1."""
    c = make_class(tmp_path_factory.mktemp("board"), "lr101")
    c.design = {}
    for seat in (c.ana, c.bo):
        trial = seat.take_next()
        run, line = seat.run(trial)
        assert run is not None and run.status == "completed", line
        c.design[seat.student] = (trial.number, seat.params(trial)["learning_rate"])
    c.at_budget = own_run(c.ana, learning_rate=5e-3)
    c.diverged = own_run(c.bo, learning_rate=10.0)
    assert c.diverged.status == "diverged", "lr 10 must blow the tiny model up; the diverged list needs one"
    c.longer = own_run(c.bo, learning_rate=3e-3, num_train_epochs=2)
    return c


@pytest.fixture()
def fresh(tmp_path):
    """A class nobody has trained in yet: 2 epochs a run, so a run in flight has a curve to show."""
    return make_class(tmp_path, "fresh", num_train_epochs=2)


def with_gids(fig, gids) -> list:
    return [a for ax in fig.axes for a in ax.lines + ax.texts if a.get_gid() in gids]


# ---------------------------------------------------------------- the tables

def test_the_leaderboard_ranks_design_and_own_runs_at_the_budget_by_value_with_names(room):
    board = leaderboard(class_runs(room.study), class_knobs(room.study))
    assert list(board.index) == [1, 2, 3]
    assert board["best_eval_loss"].is_monotonic_increasing
    ranked = {(r.kind, r.student, r.learning_rate) for r in board.itertuples()}
    assert ranked == {("design", who, lr) for who, (_, lr) in room.design.items()} | {("own", "ana", 5e-3)}
    trials = {t.number: t for t in room.study.get_trials()}
    for row in board[board.kind == "design"].itertuples():  # the loss and the name the class recorded
        assert trials[row.trial].value == row.best_eval_loss
        assert trials[row.trial].user_attrs["student"] == row.student
    mine = board[board.kind == "own"].iloc[0]
    assert mine.best_eval_loss == pytest.approx(best_value(room.at_budget))
    assert mine.best_epoch == 1 and mine.status == "completed"


def test_diverged_runs_are_listed_by_name_and_never_ranked(room):
    rows = class_runs(room.study)
    diverged = diverged_runs(rows, class_knobs(room.study))
    assert list(zip(diverged.student, diverged.kind, diverged.learning_rate)) == [("bo", "own", 10.0)]
    assert 10.0 not in set(leaderboard(rows).learning_rate)


def test_own_runs_at_another_budget_are_listed_apart_with_what_they_changed(room):
    rows = class_runs(room.study)
    other = outside_budget(rows, class_knobs(room.study))
    assert list(zip(other.student, other.learning_rate, other.changed)) == [("bo", 3e-3, "num_train_epochs=2")]
    assert other.best_eval_loss.iloc[0] == pytest.approx(best_value(room.longer))
    ranked = leaderboard(rows)
    assert not ((ranked.student == "bo") & (ranked.kind == "own")).any()


def test_board_lines_say_counts_leaderboard_diverged_and_outside_budget(room):
    lines = board_lines(room.study)
    text = "\n".join(lines)
    assert lines[0] == "class lr101: 2 of 3 configurations done, 0 running, 1 free, 0 failed"
    board = leaderboard(class_runs(room.study))
    ranked_lines = [line for line in lines if line.lstrip()[:2] in ("1.", "2.", "3.")]
    assert [line.split()[1] for line in ranked_lines] == list(board.student)
    assert "(own)" in ranked_lines[list(board.kind).index("own")]
    diverged = next(line for line in lines if line.startswith("diverged"))
    assert "bo (own)" in diverged and "learning_rate=10" in diverged
    outside = next(line for line in lines if line.startswith("own runs outside"))
    assert "bo" in outside and "num_train_epochs=2" in outside
    assert "num_train_epochs=1" in text  # the budget the leaderboard ranks at


# ---------------------------------------------------------------- the figures

def test_the_curves_draw_one_artist_per_run_each_kind_apart(room):
    rows = class_runs(room.study)
    figures = board_figures(room.study)
    assert set(figures) == {"curves", "isolation", "knobs"}
    runs = with_gids(figures["curves"], RUN_GIDS)
    assert len(runs) == len(rows) == 5
    gids = sorted(a.get_gid() for a in runs)
    assert gids == sorted(["best", "design", "own", "own", "diverged"])
    best = with_gids(figures["curves"], {"best"})[0]
    top = leaderboard(rows).iloc[0]
    at_budget = [r["value"] for r in rows if r["run_status"] == "completed" and not r["differs"]]
    assert min(best.get_ydata()) == pytest.approx(top.best_eval_loss) == pytest.approx(min(at_budget))
    assert with_gids(figures["curves"], {"best_name"})[0].get_text().startswith(top.student)
    assert all(a.get_linestyle() == "--" for a in with_gids(figures["curves"], {"own"}))
    assert all(a.get_linestyle() == "-" for a in with_gids(figures["curves"], {"design"}))
    assert with_gids(figures["curves"], {"diverged_name"})[0].get_text() == "bo (own)"
    for name in ("isolation", "knobs"):  # two design runs finished: drawn, not a note
        assert not with_gids(figures[name], {"note"}), name
    assert with_gids(figures["knobs"], {"completed"})


def test_save_board_writes_the_figures_as_png_files(room, tmp_path):
    for _ in range(2):  # again over the old files
        written = save_board(room.study, tmp_path / "plots")
    assert sorted(p.name for p in written) == ["curves.png", "isolation.png", "knobs.png"]
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(p.name for p in written)  # no temp left
    assert all(p.read_bytes()[:8] == PNG_MAGIC for p in written)


def test_a_class_with_no_finished_run_draws_notes_not_errors(fresh):
    for name, fig in board_figures(fresh.study).items():
        assert with_gids(fig, {"note"}), name
        assert not with_gids(fig, RUN_GIDS), name
    assert any("no finished run yet" in line for line in board_lines(fresh.study))
    board = Board(fresh.study, every=60)
    try:
        assert board.refresh() and board.last_error is None
        assert all(out.outputs and "image/png" in out.outputs[0]["data"] for out in board.figure_outputs.values())
    finally:
        assert board.close()


def test_board_rejects_a_wrong_every(room):
    with pytest.raises(ValueError, match="every=0"):
        Board(room.study, every=0)


# ---------------------------------------------------------------- the live board

def wait_for(condition, timeout: float = SHOWN_WITHIN) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_the_live_board_picks_up_a_run_in_flight_and_when_it_ends_then_stops_when_closed(fresh):
    board = Board(fresh.study, every=0.3)
    try:
        assert wait_for(lambda: board.redraws >= 1)
        seen_running = {}

        def in_flight(event, data):  # after epoch 1 of 2: the class holds the trial RUNNING with one point
            if event == EPOCH_END and data["epoch"] == 1:
                seen_running["gids"] = [a.get_gid() for a in with_gids(board_figures(fresh.study)["curves"], RUN_GIDS)]
                seen_running["shown"] = wait_for(lambda: "running: " in board.counts.value, timeout=5)

        trial = fresh.ana.take_next()
        run, line = fresh.ana.run(trial, callbacks=[in_flight])
        assert run.status == "completed", line
        assert seen_running == {"gids": ["running"], "shown": True}
        key = ("design", "ana", trial.number)
        assert wait_for(lambda: key in board.shown_at), f"finished run not on the board after {SHOWN_WITHIN} s"
        finished = next(r["finished"] for r in class_runs(fresh.study) if r["trial"] == trial.number)
        assert 0 <= board.shown_at[key] - finished < SHOWN_WITHIN
        assert "no finished run yet" not in board.tables_output.outputs[0]["data"]["text/plain"]
    finally:
        assert board.close()
    assert not board.running
    redraws = board.redraws
    fresh.bo.record_own(run)  # the class changes; a closed board does not look
    time.sleep(1.0)
    assert board.redraws == redraws


def test_the_study_figures_wait_for_a_quiet_look_so_a_finished_run_shows_first(fresh, monkeypatch):
    """The isolation and knob plots are not drawn in the look that shows a finished run's point, but on the next
    look where nothing changed, or once they have waited STUDY_FIGURES_WAIT seconds."""
    from nbkit.views import board as board_module

    board = Board(fresh.study, every=3600)  # the thread looks once; the test looks by hand
    try:
        assert wait_for(lambda: board.redraws >= 1)
        drawn, draw = [], board._draw_study_figures
        monkeypatch.setattr(board, "_draw_study_figures", lambda rows, finished: (drawn.append(finished),
                                                                                  draw(rows, finished)))
        trial = fresh.ana.take_next()
        run, line = fresh.ana.run(trial)
        assert run.status == "completed", line
        assert board._tick(force=False) and ("design", "ana", trial.number) in board.shown_at
        assert drawn == []  # the look that showed the run drew its point, not the study figures
        assert board._tick(force=False) and len(drawn) == 1  # a quiet look: now they are drawn
        monkeypatch.setattr(board_module, "STUDY_FIGURES_WAIT", 0.0)  # a room that never goes quiet
        fresh.bo.run(fresh.bo.take_next())
        assert board._tick(force=False) and len(drawn) == 2  # changed, but they have waited long enough
    finally:
        board.close()


def test_a_configuration_only_taken_changes_the_counts_not_the_curves(fresh, monkeypatch):
    """A trial taken has no point yet: the counts say who runs it, and the tables and curves are not drawn again
    (drawing them would keep a run finishing meanwhile waiting); its first point redraws them."""
    from nbkit.views import board as board_module

    board = Board(fresh.study, every=3600)  # the thread looks once; the test looks by hand
    try:
        assert wait_for(lambda: board.redraws >= 1)
        curves, draw = [], board_module._curves_of
        monkeypatch.setattr(board_module, "_curves_of", lambda study, rows: (curves.append(len(rows)),
                                                                             draw(study, rows))[1])
        trial = fresh.ana.take_next()
        assert board._tick(force=False) and "running: " in board.counts.value and curves == []
        fresh.ana.run(trial)
        assert board._tick(force=False) and len(curves) == 1 and ("design", "ana", trial.number) in board.shown_at
        assert board._tick(force=True) and len(curves) == 2  # refresh() draws everything
    finally:
        board.close()


def test_the_board_looks_every_every_seconds_whatever_a_look_took(room):
    board = Board(room.study, every=1.0)
    try:
        assert board.pause(0.2) == pytest.approx(0.8)  # from the start of one look to the start of the next
        assert board.pause(3.0) == LEAST_PAUSE  # a slow look: the next one at once (but for the widgets' messages)
    finally:
        board.close()


def test_a_database_hiccup_is_a_status_line_and_the_board_recovers_by_itself(fresh):
    board = Board(fresh.study, every=0.2)
    database = fresh.storage.removeprefix("sqlite:///")
    try:
        assert wait_for(lambda: board.redraws >= 1)
        with sqlite3.connect(database) as db:
            db.execute("ALTER TABLE trials RENAME TO trials_away")  # the trials are gone for a moment
        assert board.refresh() is False
        assert "cannot read the class" in board.status.value and board.last_error is not None
        assert board.running  # the thread goes on
        with sqlite3.connect(database) as db:
            db.execute("ALTER TABLE trials_away RENAME TO trials")
        assert wait_for(lambda: board.last_error is None), board.status.value
        assert "live" in board.status.value
    finally:
        assert board.close()


# ---------------------------------------------------------------- the instructor's notebook

def test_the_instructor_notebook_runs_headless_and_shows_the_leaderboard(room, tmp_path, monkeypatch):
    monkeypatch.delenv("MPLBACKEND", raising=False)  # docs/DESIGN.md: with it set, executed notebooks lose images
    out = tmp_path / "instructor.ipynb"
    papermill.execute_notebook(str(NOTEBOOKS_DIR / "instructor.ipynb"), str(out), cwd=str(NOTEBOOKS_DIR),
                               parameters={"class_name": "lr101", "storage": room.storage}, kernel_name="python3",
                               progress_bar=False, execution_timeout=300)
    outputs = [o for c in nbformat.read(out, as_version=4).cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    pages = [o.data["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    board = next(page for page in pages if "Leaderboard" in page)
    for name in ("ana", "bo"):
        assert f"<td>{name}</td>" in board
    assert "diverged" in board
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3
    printed = "".join(o.text for o in outputs if o.output_type == "stream")
    assert printed.startswith("class lr101: 2 of 3 configurations done")


def test_the_board_reads_in_chinese(room):
    """In Chinese (nbkit/locale/zh_CN/LC_MESSAGES/nbkit.po): the board's lines, its tables' captions with an own
    run shown as 自选, and the curves' title; the tables' data keep their English values."""
    from nbkit.core.i18n import set_language
    from nbkit.views.board import tables_html

    set_language("zh")
    try:
        lines = board_lines(room.study)
        assert lines[0].startswith("课堂 lr101：3 个配置中已完成 2 个")
        assert any(line.startswith("排行榜：课堂预算（num_train_epochs=1）下的最佳验证损失") for line in lines)
        assert "bo（自选）" in next(line for line in lines if line.startswith("已发散（不参与排名）："))
        markup, plain = tables_html(room.study, class_runs(room.study))
        assert "排行榜：" in markup and "<td>自选</td>" in markup and "<td>own</td>" not in markup
        assert plain.splitlines()[0].endswith("标为“自选”：")
        curves = board_figures(room.study)["curves"]
        assert curves.axes[0].get_title().startswith("课堂 lr101：")
        assert set(leaderboard(class_runs(room.study)).kind) == {"design", "own"}
    finally:
        set_language("en")
    assert board_lines(room.study)[0].startswith("class lr101: ")
