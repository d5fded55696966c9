"""nbkit.exercises (nbkit/interfaces/exercises.py): the chapters' exercises that check themselves.

On real tiny runs: a right prediction passes and a wrong one fails with the actual value and the reason; no
answer, or an answer of the wrong type, gives a sentence and never an exception; a found configuration is
trained (or a chapter's run reused) and checked against its goal, a miss explained with the curve doctor's
advice. Then nbgrader's round trip on a real course folder: `generate_assignment` releases the chapters
without solutions or hidden tests, and `autograde` scores a filled-in copy, the master's answers full marks and
one wrong answer exactly its points off (one chapter here; every chapter with `make test-exercises`).
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pandas as pd
import pytest

from conftest import tiny_config
from test_notebooks import kernel_of_this_venv  # noqa: F401 - a fixture, used by name
from traitlets.config import Config
from nbkit import TrainConfig, exercises, train
from nbkit.core.i18n import set_language
from nbkit.interfaces.profiles import notebook_defaults
from nbkit.views.doctor import diagnose

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

REPO = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((REPO / "notebooks").glob("0[1-6]_*.ipynb"))  # chapters 1-6 each end with 3-5 exercises (issue 29)


def reviews(output_dir, **kw) -> TrainConfig:
    """tests/test_doctor.py's real over-fitting setting: reviews (a quarter of the labels flipped), constant LR."""
    return TrainConfig(**{**dict(dataset="reviews", disable_tqdm=True, predict_with_generate=False,
                                 lr_scheduler_type="constant", output_dir=str(output_dir)), **kw})


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def overfit(runs_dir, one_torch_thread):
    """8 epochs of reviews at the default LR: over-fits within a few epochs (the doctor's own real test)."""
    return train(reviews(runs_dir, num_train_epochs=8), keep_model=False)


@pytest.fixture(scope="module")
def diverged(runs_dir, one_torch_thread):
    """LR 1.0: the trainer stops it within a few steps."""
    return train(reviews(runs_dir, learning_rate=1.0, num_train_epochs=1), keep_model=False)


def folders(path) -> set:
    return {p.name for p in Path(path).iterdir() if p.is_dir()}


# ---------------------------------------------------------------- Feedback

def test_feedback_is_green_red_or_grey_and_shows_its_words():
    right, wrong, empty = (exercises.Feedback(True, "a < b"), exercises.Feedback(False, "no"),
                           exercises.Feedback(False, "write it", answered=False))
    assert [f.state for f in (right, wrong, empty)] == ["right", "wrong", "unanswered"]
    for feedback, (border, _) in zip((right, wrong, empty), (exercises.COLOURS[s] for s in
                                                             ("right", "wrong", "unanswered"))):
        assert border in feedback._repr_html_()
    assert "a &lt; b" in right._repr_html_()  # the message is text, never markup
    assert str(right).startswith("✓") and "a < b" in str(right) and repr(wrong) == str(wrong)


# ---------------------------------------------------------------- predict, on real runs

def test_a_right_prediction_passes_and_says_why(overfit):
    feedback = exercises.predict(overfit.best_epoch, overfit.best_epoch, name="best_epoch",
                                 truth="the validation loss was lowest at epoch", why="It over-fits after that.")
    assert feedback.passed and feedback.answered
    assert f"best_epoch = {overfit.best_epoch}" in feedback.message and "It over-fits after that." in feedback.message


def test_a_wrong_prediction_fails_with_the_actual_value_and_the_reason(overfit, diverged):
    feedback = exercises.predict(overfit.best_epoch + 3, overfit.best_epoch, name="best_epoch",
                                 truth="the validation loss was lowest at epoch", why="Read the orange curve.")
    assert not feedback.passed and feedback.answered
    assert f"lowest at epoch {overfit.best_epoch}" in feedback.message and "Read the orange curve." in feedback.message
    status = exercises.predict("completed", diverged.status, name="fate", choices=["completed", "diverged"])
    assert not status.passed and "'diverged'" in status.message
    assert exercises.predict("Diverged ", diverged.status, name="fate", choices=["completed", "diverged"]).passed


@pytest.mark.parametrize("answer", [None, ...])
def test_no_prediction_asks_for_one(answer, overfit):
    feedback = exercises.predict(answer, overfit.best_epoch, name="best_epoch", example=4)
    assert not feedback.passed and not feedback.answered
    assert "Write your prediction first" in feedback.message and "`best_epoch = 4`" in feedback.message


@pytest.mark.parametrize("answer, actual, words", [
    ("3e-3", 3e-3, ["a number", "the text '3e-3'", "without them"]),  # quotes around a number
    ([3e-3], 3e-3, ["a number", "a list"]),
    ({"lr": 3e-3}, 3e-3, ["a number", "a dict"]),
    (True, 4, ["a whole number", "a bool"]),  # True is no epoch
    (4.5, 4, ["a whole number", "a float"]),
    ("yes", True, ["True or False", "the text 'yes'"]),
    (1, True, ["True or False", "an int"]),
    (3, "diverged", ["a text in quotes", "an int"]),
    (float("nan"), 0.5, ["a number", "nan"]),
])
def test_a_prediction_of_the_wrong_type_gets_a_sentence_with_an_example(answer, actual, words):
    feedback = exercises.predict(answer, actual, name="guess", example=actual if actual != 3e-3 else 1e-3)
    assert not feedback.passed and not feedback.answered
    assert all(w in feedback.message for w in words), feedback.message
    assert "`guess = " in feedback.message and "bug" not in feedback.message


def test_choices_tolerance_and_factor(overfit):
    lrs = [1e-4, 1e-3, 1e-2]
    off_grid = exercises.predict(5e-3, 1e-3, name="lr", choices=lrs)
    assert not off_grid.answered and "0.0001, 0.001, 0.01" in off_grid.message
    assert exercises.predict(1e-3, 0.0010000000000000002, name="lr", choices=lrs).passed  # float noise is the same
    assert exercises.predict(2.5e-3, 1e-3, name="lr", factor=3).passed
    assert not exercises.predict(4e-3, 1e-3, name="lr", factor=3).passed
    near = exercises.predict(overfit.best_epoch + 1, overfit.best_epoch, name="epoch", tolerance=1)
    assert near.passed and "within 1 of it counts" in near.message
    assert not exercises.predict(overfit.best_epoch + 2, overfit.best_epoch, name="epoch", tolerance=1).passed


def test_without_an_example_the_message_never_gives_the_answer_away():
    feedback = exercises.predict("0.0042", 0.0042, name="lr")
    assert "0.0042" not in feedback.message.replace("'0.0042'", "")  # only where it quotes what was written
    both = exercises.predict("True", True, name="flag")
    assert "`flag = True` or `flag = False`" in both.message


def test_nothing_to_compare_yet_is_said_not_raised():
    feedback = exercises.predict(1.0, float("nan"), name="loss")
    assert not feedback.answered and "run the chapter's cells above" in feedback.message


def test_a_run_without_an_evaluation_after_training_began_has_no_loss_to_reach():
    """A run that diverged before its first evaluation: a sentence, not "the check itself failed"."""
    run = SimpleNamespace(epochs=pd.DataFrame({"epoch": [0], "step": [0], "eval_loss": [7.4]}), summary={},
                          status="diverged")
    assert exercises.loss_below(1.0).test(run) == (False, "it has no validation loss")
    within = exercises.loss_below(1.0, within_steps=5).test(run)
    assert within == (False, "it has no validation loss within 5 optimizer steps")


# ---------------------------------------------------------------- goals, on real runs

def test_loss_below_reads_the_evaluations_within_the_steps(overfit):
    evals = overfit.epochs[overfit.epochs["epoch"] > 0]
    first = evals.iloc[0]
    window = int(first["step"])  # the first epoch's evaluation only
    passed, said = exercises.loss_below(overfit.best_eval_loss * 1.001).test(overfit)
    assert passed and f"epoch {overfit.best_epoch}" in said
    assert not exercises.loss_below(overfit.best_eval_loss).test(overfit)[0]  # below, not equal
    passed, said = exercises.loss_below(first["eval_loss"] * 1.001, within_steps=window).test(overfit)
    assert passed and f"within {window} optimizer steps" in said
    passed, said = exercises.loss_below(overfit.best_eval_loss * 1.001, within_steps=window).test(overfit)
    assert passed == (overfit.best_epoch == 1)
    passed, said = exercises.loss_below(10.0, within_steps=window - 1).test(overfit)
    assert not passed and f"first evaluation after training began was at step {window}" in said


def test_the_doctors_goals_read_its_words(overfit, diverged):
    first_bad = overfit.best_epoch + 1  # the epoch after the minimum (tests/test_doctor.py: the doctor's dating)
    assert [d.name for d in diagnose(overfit)][0] == "over-fitting"
    assert exercises.diagnosed("over-fitting", epoch=first_bad).test(overfit)[0]
    passed, said = exercises.diagnosed("over-fitting", epoch=first_bad + 10).test(overfit)
    assert not passed and f"not from epoch {first_bad + 10}" in said
    assert not exercises.not_diagnosed("over-fitting").test(overfit)[0]
    assert exercises.diagnosed("diverged").test(diverged)[0]
    passed, said = exercises.learns().test(diverged)
    assert not passed and "diverged at step" in said
    passed, said = exercises.learns().test(overfit)
    assert passed and "below the base model's" in said


def test_below_and_above_take_a_summary_key_or_a_function(overfit):
    steps = overfit.summary["steps_completed"]
    passed, said = exercises.below("steps_completed", steps + 1, "the steps it trained", "one more").test(overfit)
    assert passed and said == f"the steps it trained was {steps}, below {steps + 1} (one more)"
    passed, said = exercises.below("best_eval_loss", overfit.best_eval_loss, "its best loss").test(overfit)
    assert not passed and said.count(f"{overfit.best_eval_loss:.12g}") == 2 and "np." not in said  # equal: not below
    assert not exercises.below("steps_completed", steps, "the steps it trained").test(overfit)[0]
    assert exercises.above(lambda run: len(run.epochs), 1, "its evaluations").test(overfit)[0]
    passed, said = exercises.below("no_such_number", 1.0, "a number it lacks").test(overfit)
    assert not passed and "no a number it lacks" in said
    passed, said = exercises.below(lambda run: run.epochs.loc[99, "train_loss"], 1.0, "epoch 99's loss").test(overfit)
    assert not passed and "no epoch 99's loss" in said  # a measure the run cannot give: a sentence, no KeyError


# ---------------------------------------------------------------- find

def test_find_takes_a_run_and_explains_a_miss_with_the_doctors_advice(overfit):
    base = TrainConfig.from_dict(overfit.config)
    hit = exercises.find(overfit, exercises.diagnosed("over-fitting"), base=base.replace(num_train_epochs=2))
    assert hit.passed and "num_train_epochs=8" in hit.message
    miss = exercises.find(overfit, exercises.not_diagnosed("over-fitting"), base=base)
    assert not miss.passed and miss.answered
    assert "misses the goal" in miss.message and "its advice: stop at epoch" in miss.message


def test_find_names_the_knobs_the_answer_set_even_at_the_base_value(overfit):
    base = TrainConfig.from_dict(overfit.config)
    feedback = exercises.find({"num_train_epochs": 8}, exercises.learns(), base=base, reuse=[overfit], workers=1)
    assert feedback.passed and "Your run (num_train_epochs=8)" in feedback.message  # taken from reuse, not trained


def test_find_trains_a_knob_value_and_takes_a_run_it_already_has(tmp_path):
    base = tiny_config(tmp_path / "runs", num_train_epochs=2)
    goal = exercises.below(final_over_base, 0.5, "its final validation loss over the base model's")
    found = exercises.find(1e-2, goal, base=base, knob="learning_rate", workers=1)
    made = folders(tmp_path / "runs")
    assert found.answered and len(made) == 1 and "learning_rate=0.01" in found.message
    again = exercises.find({"learning_rate": 1e-2}, goal, base=base, reuse=[tmp_path / "runs" / f for f in made],
                           workers=1)
    assert folders(tmp_path / "runs") == made  # the same run, not trained again
    assert again.passed == found.passed and again.message == found.message
    slow = exercises.find(1e-7, goal, base=base, knob="learning_rate", workers=1)
    assert not slow.passed and slow.answered and "its advice" in slow.message
    assert found.passed, found.message  # 1e-2 for 8 steps more than halves arithmetic's base loss


def final_over_base(run) -> float:
    """A goal on the run's own numbers, not a constant: its final validation loss over its base model's."""
    return run.summary["final_eval_loss"] / run.summary["base_eval_loss"]


@pytest.mark.parametrize("answer, words", [
    (None, ["Write your answer first", "`lr = 0.001`"]),  # the knob's own value in base: how an answer looks
    (..., ["Write your answer first"]),
    ([1e-3, 3e-3], ["should be a value for learning_rate", "a list"]),
    ("fast", ["learning_rate='fast' is invalid", "a number such as 3e-4"]),
    (-1.0, ["learning_rate=-1.0", "allowed"]),
    ({"lr": 1e-3}, ["'lr' is not a TrainConfig field", "learning_rate"]),
    ({"seed": 7}, ["changes seed", "only learning_rate"]),
    ({3: 1e-3}, ["must be TrainConfig field names"]),
])
def test_a_configuration_that_cannot_run_gets_a_sentence_and_trains_nothing(answer, words, tmp_path):
    base = tiny_config(tmp_path / "runs")
    feedback = exercises.find(answer, exercises.learns(), base=base, knob="learning_rate", name="lr", workers=1)
    assert not feedback.passed and not feedback.answered
    assert all(w in feedback.message for w in words), feedback.message
    assert not (tmp_path / "runs").exists() or not folders(tmp_path / "runs")


def test_a_run_that_fails_to_train_is_said_in_words(tmp_path):
    base = tiny_config(tmp_path / "runs", finetuning_type="lora")
    feedback = exercises.find({"lora_rank": 4096}, exercises.learns(), base=base, workers=1)  # above the hidden size
    assert not feedback.passed and feedback.answered and "could not train" in feedback.message
    assert "lora_rank=4096" in feedback.message


def test_the_checks_speak_chinese():
    """The real catalogue (nbkit/locale/zh_CN/LC_MESSAGES/nbkit.po), on answers and runs that need no training."""
    set_language("zh")
    try:
        empty = exercises.predict(None, 3, name="best_epoch", example=4)
        assert str(empty) == ("… 还没有可以检查的内容。 请先写下你的预测：在上方的单元格中设置 best_epoch，例如 "
                              "`best_epoch = 4`，然后运行那个单元格。")
        typed = exercises.predict("3e-3", 3e-3, name="lr", example=1e-3)
        assert typed.message == ("lr 应为一个数，例如 `lr = 0.001`；它现在是文本 '3e-3'（引号使它成了文本："
                                 "请去掉引号）。请修改它，然后重新运行这两个单元格。")
        right = exercises.predict(4, 4, name="best_epoch", truth="验证损失最低的轮次是", why="之后就过拟合了。")
        assert right.passed and right.message == "你预测 best_epoch = 4，而验证损失最低的轮次是 4。 之后就过拟合了。"
        run = SimpleNamespace(status="diverged", summary={"steps_completed": 60, "diverged_at_step": 7})
        assert exercises.below("steps_completed", 61, "训练的步数").test(run) == (True, "训练的步数为 60，低于 61")
        assert exercises.learns().test(run) == (False, "它在第 7 步发散了")
        wrong = exercises.find([1e-3], exercises.learns(), base=TrainConfig(), knob="learning_rate", name="lr")
        assert not wrong.answered and wrong.message.startswith("lr 应为 learning_rate 的一个取值，例如 `lr = ")
        assert wrong.message.endswith("；它现在是一个 list（[0.001]）。")
    finally:
        set_language("en")


# ---------------------------------------------------------------- when a chapter grades

def test_a_chapter_grades_on_the_tiny_model_and_its_own_data_at_any_seed():
    defaults = notebook_defaults("04_epochs_early_stopping")
    chapter = SimpleNamespace(name="04_epochs_early_stopping", parameters=dict(defaults))
    assert exercises.graded(chapter)
    assert exercises.graded(SimpleNamespace(name=chapter.name, parameters={**defaults, "seed": 1234}))
    assert not exercises.graded(SimpleNamespace(name=chapter.name, parameters={**defaults, "model": "smollm2-135m"}))
    assert not exercises.graded(SimpleNamespace(name=chapter.name, parameters={**defaults, "dataset": "my.jsonl"}))
    five = notebook_defaults("05_peft_lora_qlora")  # two data parameters
    assert not exercises.graded(SimpleNamespace(name="05_peft_lora_qlora",
                                                parameters={**five, "knowledge_dataset": "reviews"}))


# ---------------------------------------------------------------- nbgrader's round trip

def nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess:
    """`nbgrader ...` in the course folder with this interpreter; its bin folder first on PATH (nbgrader runs
    `alembic` from there to set up the gradebook)."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("MPLBACKEND", None)  # as tests/test_notebooks.py: an executed chapter keeps its images
    done = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env, capture_output=True,
                          text=True, timeout=3600)
    assert done.returncode == 0, f"nbgrader {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return done


def course_with(tmp_path: Path, assignment: str, chapters, parameters: dict | None = None) -> Path:
    """A course folder: the chapters in source/<assignment>/ (a parameters cell's values replaced by
    `parameters`, as papermill's -p would set them) and the nbgrader_config.py nbkit.exercises writes."""
    course = tmp_path / "course"
    (course / "source" / assignment).mkdir(parents=True)
    for chapter in chapters:
        nb = nbformat.read(chapter, as_version=4)
        for name, value in (parameters or {}).get(chapter.stem, {}).items():
            set_parameter(nb, name, value)
        nbformat.write(nb, course / "source" / assignment / chapter.name)
    (course / "nbgrader_config.py").write_text(exercises.nbgrader_config(course, f"sqlite:///{course}/gradebook.db"))
    return course


def parameters_cell(nb):
    """The cell tagged 'parameters' (papermill's)."""
    return next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))


def set_parameter(nb, name: str, value) -> None:
    """`name: type = value  # comment` in the parameters cell, as a learner (or papermill's -p) would set it."""
    cell = parameters_cell(nb)
    lines = cell.source.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(f"{name}:"))
    kind, comment = lines[at].split(":", 1)[1].split("=", 1)[0].strip(), lines[at].split("#", 1)[1]
    lines[at] = f"{name}: {kind} = {value!r}  #{comment}"
    cell.source = "\n".join(lines)


def nbgrader_cells(nb, key: str):
    """The cells nbgrader marks `key` ("solution", "grade", "locked")."""
    return [c for c in nb.cells if c.metadata.get("nbgrader", {}).get(key)]


def test_every_chapter_carries_graded_exercises():
    assert len(CHAPTERS) == 6, f"expected chapters 01-06, found {[c.name for c in CHAPTERS]}"
    for chapter in CHAPTERS:
        nb = nbformat.read(chapter, as_version=4)
        answers, checks = nbgrader_cells(nb, "solution"), nbgrader_cells(nb, "grade")
        assert 3 <= len(checks) <= 5 and len(answers) == len(checks), (chapter.name, len(answers), len(checks))
        for cell in answers:
            assert "### BEGIN SOLUTION" in cell.source and "### END SOLUTION" in cell.source, cell.source
            assert not cell.metadata["nbgrader"]["locked"]
        for cell in checks:
            meta = cell.metadata["nbgrader"]
            assert meta["locked"] and meta["points"] == 1 and not meta["solution"]
            assert "### BEGIN HIDDEN TESTS" in cell.source and "exercises." in cell.source, cell.source
            visible = cell.source.split("### BEGIN HIDDEN TESTS")[0]
            assert "assert" not in visible, f"{chapter.name}: only the autograder asserts:\n{cell.source}"
        ids = [c.metadata["nbgrader"]["grade_id"] for c in answers + checks]
        assert len(set(ids)) == len(ids), f"{chapter.name}: grade_ids repeat: {ids}"
        # read-only for nbgrader: autograde puts it back, so a graded copy runs the chapter as released
        params = parameters_cell(nb).metadata.get("nbgrader", {})
        assert params.get("locked") and not params.get("solution") and not params.get("grade"), params


def test_the_released_chapters_have_no_solutions_and_no_hidden_tests(tmp_path):
    course = course_with(tmp_path, "chapters", CHAPTERS)
    nbgrader(course, "generate_assignment", "chapters", "--force")
    for chapter in CHAPTERS:
        master = nbformat.read(chapter, as_version=4)
        released = nbformat.read(course / "release" / "chapters" / chapter.name, as_version=4)
        assert len(released.cells) == len(master.cells)
        solutions = {line.strip() for c in nbgrader_cells(master, "solution")
                     for line in c.source.split("### BEGIN SOLUTION")[1].split("### END SOLUTION")[0].splitlines()}
        text = "\n".join(c.source for c in released.cells)
        assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text and "assert check_" not in text
        leaked = [s for s in solutions if s and any(s == line.strip() for line in text.splitlines())]
        assert not leaked, f"{chapter.name}: solution lines in the release: {leaked}"
        for cell in nbgrader_cells(released, "solution"):  # the learner's line to fill in stays
            assert "= ..." in cell.source and "YOUR ANSWER HERE" in cell.source, cell.source
        for cell in nbgrader_cells(released, "grade"):  # the learner sees the words
            assert "display(check_" in cell.source


# One chapter's autograde runs in `make test` (CI): the whole chapter executes, so the fastest one with
# exercises, shortened as below where its exercises allow it; every chapter with `make test-exercises`.
AUTOGRADE_FAST = "04_epochs_early_stopping"
# a wrong answer per chapter: the answer cell and what a learner might write there instead
WRONG = {
    "01_learning_rate": ("ch01_ex1_answer", "lr_diverges = False"),
    "02_optimizer": ("ch02_ex1_answer", "sgd_keeps_up = True"),
    "03_batch_size": ("ch03_ex1_answer", "accumulation_raises_memory = True"),
    "04_epochs_early_stopping": ("ch04_ex2_answer", "more_patience_can_be_worse = True"),
    "05_peft_lora_qlora": ("ch05_ex1_answer", "rank_params = 1"),
    "06_stability_reproducibility_speed": ("ch06_ex1_answer", "effective = 16"),
}
# Written into the copied source's parameters cell, as tests/test_notebooks.py shortens a chapter: what the exercises
# do not read. Chapter 4's LoRA section (EP5) trains at one LR of its two (3e-3, the best on every seed tried):
# measured on 2 busy cores, its autograde took 146 s in full, 124 s so.
SHORTENED = {"04_epochs_early_stopping": {"lora_learning_rates": [3e-3]}}


def test_every_chapter_has_its_wrong_answer_for_the_autograde_round_trip():
    assert set(WRONG) == {c.stem for c in CHAPTERS} and AUTOGRADE_FAST in WRONG
    for chapter in CHAPTERS:
        cell_id, wrong = WRONG[chapter.stem]
        answers = {c.metadata["nbgrader"]["grade_id"]: c.source for c in
                   nbgrader_cells(nbformat.read(chapter, as_version=4), "solution")}
        assert cell_id in answers, f"{chapter.name}: no answer cell {cell_id}; it has {sorted(answers)}"
        name = wrong.split("=")[0].strip()
        assert answers[cell_id].startswith(f"{name} = ...") and wrong not in answers[cell_id], (cell_id, wrong)


def autograde_chapter(stem: str, tmp_path: Path) -> None:
    chapter = REPO / "notebooks" / f"{stem}.ipynb"
    assignment, student = "chapter", "learner"
    course = course_with(tmp_path, assignment, [chapter], SHORTENED)
    nbgrader(course, "generate_assignment", assignment, "--force")
    # the learner's copy: the master's answers, except one wrong answer; and another dataset in the parameters cell,
    # which would switch the grading off (exercises.graded) if autograde did not put the released cell back
    master = nbformat.read(course / "source" / assignment / chapter.name, as_version=4)
    released_parameters = parameters_cell(master).source
    cell_id, wrong = WRONG[stem]
    [cell] = [c for c in master.cells if c.metadata.get("nbgrader", {}).get("grade_id") == cell_id]
    cell.source = wrong
    dataset = notebook_defaults(stem).get("dataset")
    if dataset:
        set_parameter(master, "dataset", "reviews" if dataset == "arithmetic" else "arithmetic")
    submitted = course / "submitted" / student / assignment
    submitted.mkdir(parents=True)
    nbformat.write(master, submitted / chapter.name)
    nbgrader(course, "autograde", assignment, "--create", "--force")

    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course}/gradebook.db") as gradebook:
        notebook = gradebook.find_submission_notebook(chapter.stem, assignment, student)
        scores = {grade.name: (grade.score, grade.max_score) for grade in notebook.grades}
    wrong_check = cell_id.replace("_answer", "_check")
    assert scores[wrong_check] == (0, 1), scores
    assert all(score == maximum == 1 for name, (score, maximum) in scores.items() if name != wrong_check), scores
    assert len(scores) >= 3
    graded = nbformat.read(course / "autograded" / student / assignment / chapter.name, as_version=4)
    assert parameters_cell(graded).source == released_parameters
    failed = [c for c in nbgrader_cells(graded, "grade") if any(o.get("output_type") == "error" for o in c.outputs)]
    assert [c.metadata["nbgrader"]["grade_id"] for c in failed] == [wrong_check]
    (tmp_path / "scores.json").write_text(json.dumps(scores))


# nbgrader runs a chapter in kernel "python3": tests/test_notebooks.py's fixture makes sure it is this venv's
@pytest.mark.usefixtures("kernel_of_this_venv")
def test_autograde_scores_the_right_answers_and_takes_the_wrong_ones_points(tmp_path):
    autograde_chapter(AUTOGRADE_FAST, tmp_path)


@pytest.mark.exercises_all
@pytest.mark.usefixtures("kernel_of_this_venv")
@pytest.mark.parametrize("stem", sorted(set(WRONG) - {AUTOGRADE_FAST}))
def test_autograde_every_other_chapter(stem, tmp_path):
    autograde_chapter(stem, tmp_path)


def test_nbgrader_config_sets_what_a_chapter_needs(tmp_path):
    text = exercises.nbgrader_config(tmp_path / "course", "sqlite:///x.db", cell_timeout=900)
    c = Config()
    exec(compile(text, "nbgrader_config.py", "exec"), {"get_config": lambda: c})  # as nbgrader's loader runs it
    assert c.CourseDirectory.root == str(tmp_path / "course") and c.CourseDirectory.db_url == "sqlite:///x.db"
    assert c.Execute.timeout == 900 and "..." in c.ClearSolutions.code_stub["python"]
    assert shutil.which("nbgrader", path=str(Path(sys.executable).parent)), "nbgrader is not installed in this venv"
