"""Exercises that check themselves: the two kinds that end chapters 1-6.

    from nbkit import exercises

    # "predict, then run": the learner writes a prediction into a variable; the check compares it with what
    # the chapter's runs computed, and says why in words
    exercises.predict(best_lr_guess, facts.loc[p.seed, "best_lr"], name="best_lr_guess", example=1e-3,
                      choices=p.sweep_learning_rates, truth="the sweep's best learning rate was", why="...")

    # "find a configuration that ...": the learner's knob values, config or run, trained here if need be
    # (a run the chapter already made is taken, not trained again), against a goal
    exercises.find({"learning_rate": 3e-3}, exercises.loss_below(1.2, within_steps=60), base=cfg, reuse=runs)

Each returns a Feedback: `passed` and a `message`, shown in a notebook as a coloured box (green: right;
red: not yet; grey: nothing to grade yet, because there is no answer or it is of the wrong kind). Whatever
the learner writes, a check answers with a sentence, never a traceback: a wrong type says what is expected,
with an example; an unknown TrainConfig field or a refused value gets the config's own message; a run that
fails says so. The thresholds of a goal are the chapter's own numbers, passed in by the exercise cell.

The chapter notebooks are the instructor's version: each answer cell holds the solution between nbgrader's
`### BEGIN SOLUTION` / `### END SOLUTION`, each check cell shows its Feedback (`display(check)`: shown, not
returned, so nbgrader reads no partial credit from it) and then its grading assert between `### BEGIN HIDDEN
TESTS` / `### END HIDDEN TESTS`: `assert check.passed or not exercises.graded(ch), check.message`. graded(ch)
is True on the tiny model with the chapter's own data, the setting the answers were written for; the parameters
cell is read-only for nbgrader, so autograde runs each chapter as released. `nbgrader_config(root)` writes what
a course needs to release and autograde them (`nbgrader generate_assignment`, `nbgrader autograde`).
"""
from __future__ import annotations

import html
import math
import numbers
from dataclasses import dataclass
from typing import Callable

import pandas as pd

from nbkit.core.config import TrainConfig, check_field_names
from nbkit.core.i18n import N_, _
from nbkit.core.runs import NOT_KNOBS, Run, knob_label
from nbkit.interfaces.profiles import notebook_defaults
from nbkit.views.doctor import diagnose

# (border, background) of the box: green right, red not yet, grey nothing to grade yet
COLOURS = {"right": ("#1a7f37", "#e9f6ec"), "wrong": ("#c62828", "#fdeceb"), "unanswered": ("#6e7781", "#f2f3f5")}
TITLES = {"right": N_("Right."), "wrong": N_("Not yet."), "unanswered": N_("Nothing to check yet.")}  # shown: _()
MARKS = {"right": "✓", "wrong": "✗", "unanswered": "…"}
SAME_NUMBER = 1e-6  # relative: a prediction of 0.003 for 3e-3 computed as 0.0030000000000000005 is the same number
# runs whose last numbers say nothing about a goal, and how a check says so
FAILED_STATUSES = {"diverged": N_("it diverged at step {step}"), "interrupted": N_("it was interrupted before its end"),
                   "incomplete": N_("it did not finish (its process ended)")}


@dataclass(frozen=True)
class Feedback:
    """What a check says: passed, and why in words. answered=False (grey): nothing could be graded yet."""
    passed: bool
    message: str
    answered: bool = True

    @property
    def state(self) -> str:
        """"right", "wrong" or "unanswered": the box's colour."""
        return "right" if self.passed else "wrong" if self.answered else "unanswered"

    def __str__(self) -> str:
        return f"{MARKS[self.state]} {_(TITLES[self.state])} {self.message}"

    __repr__ = __str__  # what a notebook shows as text/plain, and a terminal

    def _repr_html_(self) -> str:
        border, background = COLOURS[self.state]
        return (f'<div style="border-left: 5px solid {border}; background: {background}; padding: 6px 10px; '
                f'margin: 4px 0; color: #1f2328"><b style="color: {border}">{_(TITLES[self.state])}</b> '
                f"{html.escape(self.message)}</div>")


# ---------------------------------------------------------------- "predict, then run"

def predict(answer, actual, *, name: str | None = None, example=None, choices=None,
            tolerance: float | None = None, factor: float | None = None, truth: str | None = None,
            why: str = "") -> Feedback:
    """Compare a learner's prediction with what the chapter computed (`actual`) and explain.

    The kind of answer expected is actual's: True/False, a whole number, a number, or a text. choices: the
    answers allowed (another is not graded, it is named). A number counts as right within `tolerance`
    (absolute) or a `factor` either way (for learning rates: factor=3 is "the same order"); else it must be
    the same number. name and example say, in the messages, where to write the prediction and how (default: "your
    prediction"); truth ("the sweep's best LR was"; default "the runs gave") introduces the actual value, why
    explains it, right or wrong. The defaults are in the reader's language."""
    name = _("your prediction") if name is None else name
    truth = _("the runs gave") if truth is None else truth
    try:
        return _predict(answer, actual, name, example, choices, tolerance, factor, truth, why)
    except Exception as err:  # a learner's notebook shows a sentence, never a traceback
        return Feedback(False, _("The check itself failed on {name} = {answer} ({error_type}: {error}). This is a bug "
                                 "of the exercise, not of your answer.").format(
            name=name, answer=_shown(answer), error_type=type(err).__name__, error=err), answered=False)


def _predict(answer, actual, name, example, choices, tolerance, factor, truth, why) -> Feedback:
    actual = _plain(actual)
    if actual is None or (isinstance(actual, float) and not math.isfinite(actual)):
        return Feedback(False, _("There is nothing to compare {name} with yet ({truth} {actual}): run the chapter's "
                                 "cells above this one first.").format(name=name, truth=truth, actual=_shown(actual)),
                        answered=False)
    kind = _kind(actual)
    value, problem = _read(answer, kind, name, example, choices)
    if problem:
        return Feedback(False, problem, answered=False)
    right = _same(value, actual, kind, tolerance, factor)
    margin = (_(" (a prediction within {tolerance} of it counts)").format(tolerance=_number(tolerance))
              if tolerance is not None
              else _(" (a prediction within a factor of {factor} of it counts)").format(factor=_number(factor))
              if factor is not None else "")
    said = (_("You predicted {name} = {value}, and {truth} {actual}{margin}.") if right
            else _("You predicted {name} = {value}, but {truth} {actual}{margin}."))
    said = said.format(name=name, value=_shown(value), truth=truth, actual=_shown(actual), margin=margin)
    return Feedback(bool(right), _sentence(said, why))


def _plain(value):
    """numpy scalars as Python's bool, int, float (a chapter's tables hold numpy values)."""
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, (str, bytes)):
        try:
            return value.item()
        except (TypeError, ValueError):
            return value
    return value


def _kind(value) -> type:
    if isinstance(value, bool):
        return bool
    if isinstance(value, numbers.Integral):
        return int
    if isinstance(value, numbers.Real):
        return float
    return str


KIND_WORDS = {bool: N_("True or False (without quotes)"), int: N_("a whole number"), float: N_("a number"),
              str: N_("a text in quotes")}  # shown: _()


def _read(answer, kind: type, name: str, example, choices) -> tuple[object, str | None]:
    """(the answer as `kind`, None), or (None, a sentence on why it cannot be graded)."""
    answer = _plain(answer)
    write = f"`{name} = {_example(kind, example, choices)!r}`"
    if kind is bool and example is None:  # either example would hint at the answer: show both
        write = _("`{name} = True` or `{name} = False`").format(name=name)
    if answer is None or answer is Ellipsis:
        return None, _("Write your prediction first: set {name} in the cell above, e.g. {write}, and run that "
                       "cell.").format(name=name, write=write)
    value = _as_kind(answer, kind)
    if value is None:
        hint = _(" (the quotes make it a text: write it without them)") if kind in (int, float, bool) and \
            isinstance(answer, str) and _as_kind(_unquoted(answer), kind) is not None else ""
        return None, _("{name} should be {kind}, e.g. {write}; it is {answer}{hint}. Change it and run both cells "
                       "again.").format(name=name, kind=_(KIND_WORDS[kind]), write=write, answer=_described(answer),
                                        hint=hint)
    if choices is not None:
        allowed = [_plain(c) for c in choices]
        if not any(_same(value, c, kind, None, None) for c in allowed):
            return None, _("{name} = {value} is not one of the answers this exercise takes: {choices}. Pick one of "
                           "them.").format(name=name, value=_shown(value),
                                           choices=", ".join(_shown(c) for c in allowed))
    return value, None


def _example(kind: type, example, choices):
    """How an answer is written, never the answer itself: the exercise's example, else the first choice,
    else a value of the right kind."""
    if example is not None:
        return example
    if choices:
        return _plain(list(choices)[0])
    return {int: 3, float: 0.5, str: "text", bool: True}[kind]


def _as_kind(answer, kind: type):
    """answer as a value of `kind`, or None when it is not one (a bool is never a number here)."""
    if kind is bool:
        return answer if isinstance(answer, bool) else None
    if kind is str:
        return answer.strip() if isinstance(answer, str) else None
    if isinstance(answer, bool) or not isinstance(answer, numbers.Real):
        return None
    if kind is int:
        return int(answer) if float(answer).is_integer() else None
    return float(answer) if math.isfinite(float(answer)) else None


def _unquoted(text: str):
    """"3e-3" -> 3e-3, "True" -> True: what the learner meant, to say so (never graded as such)."""
    text = text.strip()
    if text in ("True", "False"):
        return text == "True"
    try:
        return float(text)
    except ValueError:
        return text


def _same(value, actual, kind: type, tolerance, factor) -> bool:
    if kind is str:
        return str(value).casefold() == str(actual).casefold()
    if kind is bool:
        return value == actual
    value, actual = float(value), float(actual)
    if tolerance is not None:
        return abs(value - actual) <= tolerance
    if factor is not None:
        return value > 0 and actual > 0 and max(value / actual, actual / value) <= factor
    return math.isclose(value, actual, rel_tol=SAME_NUMBER, abs_tol=1e-12)


# ---------------------------------------------------------------- "find a configuration that ..."

@dataclass(frozen=True)
class Goal:
    """What a found run must show: `says` in words ("a validation loss below 1.2"), and test(run) ->
    (reached, a sentence on what the run showed)."""
    says: str
    test: Callable[[Run], tuple[bool, str]]


def loss_below(limit: float, within_steps: int | None = None, what: str = "") -> Goal:
    """The run's lowest validation loss (evaluations after training began; within its first
    `within_steps` optimizer steps, if given) is below `limit`. what: where the limit comes from."""
    says = (_("a validation loss below {limit} within {steps} optimizer steps") if within_steps
            else _("a validation loss below {limit}")).format(limit=_number(limit), steps=within_steps)
    says += _(" ({what})").format(what=what) if what else ""

    def test(run):
        every = _evaluations(run)
        evals = every[every["step"] <= within_steps] if within_steps else every
        if evals.empty:
            first = (_(" (its first evaluation after training began was at step {step})")
                     .format(step=int(every["step"].min())) if not every.empty else "")
            none = (_("it has no validation loss within {steps} optimizer steps") if within_steps
                    else _("it has no validation loss")).format(steps=within_steps)
            return False, none + first
        row = evals.loc[evals["eval_loss"].idxmin()]
        loss = float(row["eval_loss"])
        below_it = loss < limit
        said = ((_("its lowest validation loss within {steps} optimizer steps was {loss} ({where}), below {limit}")
                 if below_it else _("its lowest validation loss within {steps} optimizer steps was {loss} ({where}), "
                                    "not below {limit}")) if within_steps
                else _("its lowest validation loss was {loss} ({where}), below {limit}") if below_it
                else _("its lowest validation loss was {loss} ({where}), not below {limit}"))
        where = _("epoch {epoch}, step {step}").format(epoch=_epoch(row["epoch"]), step=int(row["step"]))
        return below_it, said.format(steps=within_steps, loss=_number(loss, limit), where=where,
                                     limit=_number(limit, loss))
    return Goal(says, test)


def below(measure, limit: float, what: str, limit_is: str = "") -> Goal:
    """measure(run) is below `limit`. measure: a key of run.summary ("final_eval_loss", "final_train_loss",
    ...) or a function of the run (a chapter lab's, e.g. the share of steps clipped); what names it in words,
    limit_is where the limit comes from ("AdamW's best at seed 42")."""
    return _compare(measure, limit, what, limit_is, lower=True)


def above(measure, limit: float, what: str, limit_is: str = "") -> Goal:
    """measure(run) is above `limit` (see below)."""
    return _compare(measure, limit, what, limit_is, lower=False)


def _compare(measure, limit, what, limit_is, lower: bool) -> Goal:
    source = _(" ({limit_is})").format(limit_is=limit_is) if limit_is else ""

    def test(run):
        value = _measured(measure, run)
        if value is None or not math.isfinite(value):
            return False, _("it has no {what} to compare ({value})").format(what=what, value=_shown(value))
        reached = value < limit if lower else value > limit
        said = (_("{what} was {value}, below {limit}{source}") if lower and reached
                else _("{what} was {value}, not below {limit}{source}") if lower
                else _("{what} was {value}, above {limit}{source}") if reached
                else _("{what} was {value}, not above {limit}{source}"))
        return reached, said.format(what=what, value=_number(value, limit), limit=_number(limit, value), source=source)
    says = _("{what} below {limit}{source}") if lower else _("{what} above {limit}{source}")
    return Goal(says.format(what=what, limit=_number(limit), source=source), test)


def diagnosed(name: str, epoch=None) -> Goal:
    """The curve doctor (nbkit.views.doctor.diagnose) names `name` ("over-fitting", "diverged", "flat",
    "still improving", "noisy", "healthy"); with epoch, over-fitting from that epoch (Diagnosis.from_epoch).
    A name stays the doctor's English key; shown, it goes through _() (the doctor's catalogue entries)."""
    says = (_("the curve doctor says {name} from epoch {epoch}") if epoch is not None
            else _("the curve doctor says {name}")).format(name=_(name), epoch=None if epoch is None else _epoch(epoch))

    def test(run):
        found = diagnose(run)
        match = next((d for d in found if d.name == name), None)
        if match is None:
            return False, _("the curve doctor says {found}, not {name}").format(found=_diagnoses(found), name=_(name))
        if epoch is not None and match.from_epoch != epoch:  # the epoch the doctor names, not its words
            return False, (_("the curve doctor says {name}, but not from epoch {epoch}: {message}")
                           .format(name=_(name), epoch=_epoch(epoch), message=match.message))
        return True, _("the curve doctor says {name}: {message}").format(name=_(name), message=match.message)
    return Goal(says, test)


def not_diagnosed(name: str) -> Goal:
    """The curve doctor does not name `name` (see diagnosed)."""
    def test(run):
        found = diagnose(run)
        named = any(d.name == name for d in found)
        return not named, _("the curve doctor says {found}").format(found=_diagnoses(found))
    return Goal(_("the curve doctor does not say {name}").format(name=_(name)), test)


def learns() -> Goal:
    """The run ends on its own (not diverged, not interrupted) with a validation loss below the base model's."""
    def test(run):
        s = run.summary
        if run.status in FAILED_STATUSES:
            return False, _(FAILED_STATUSES[run.status]).format(step=s.get("diverged_at_step"))
        final, base = s.get("final_eval_loss"), s.get("base_eval_loss")
        if final is None or base is None or not math.isfinite(final):
            return False, _("it has no final validation loss")
        ok = final < base
        said = (_("it {status} with a validation loss of {loss}, below the base model's {base}") if ok
                else _("it {status} with a validation loss of {loss}, not below the base model's {base}"))
        return ok, said.format(status=run.status.replace("_", " "), loss=_number(final, base),
                               base=_number(base, final))
    return Goal(_("the run trains: no divergence, and it ends below the base model's validation loss"), test)


def find(answer, goals, *, base: TrainConfig | None = None, knob: str | None = None, knobs=None, reuse=None,
         name: str = "answer", example=None, workers: int | None = None) -> Feedback:
    """Does the learner's configuration reach the goal(s)? Trains it when no run of `reuse` already is it.

    answer: a Run (taken as it is), a TrainConfig, a dict of TrainConfig fields applied to `base`, or, with
    `knob`, that knob's value ({knob: answer} on base). knobs: the fields the exercise lets the learner
    change (default: knob, or any). goals: a Goal or a list of them, all to be reached. reuse: runs the
    chapter made (Runs, folders or a sweep table): one with the same config is taken instead of training it
    again. workers: processes to train in (default nbkit.core.workers.default_workers: a tiny run trains in
    the chapter's pool, one thread, beside nothing). Explains what the run showed, and on a miss what the
    curve doctor advises."""
    goals = [goals] if isinstance(goals, Goal) else list(goals)
    try:
        return _find(answer, goals, base, knob, knobs, reuse, name, example, workers)
    except Exception as err:  # a learner's notebook shows a sentence, never a traceback
        return Feedback(False, _("The check itself failed on {name} ({error_type}: {error}). This is a bug of the "
                                 "exercise, not of your answer.").format(name=name, error_type=type(err).__name__,
                                                                          error=err), answered=False)


def _find(answer, goals, base, knob, knobs, reuse, name, example, workers) -> Feedback:
    allowed = list(knobs) if knobs is not None else [knob] if knob else None
    config, named, problem = _config_of(answer, base, knob, allowed, name, example)
    if problem:
        return Feedback(False, problem, answered=False)
    if isinstance(config, Run):
        run, label = config, _label(config.config, base, named)
    else:
        label = _label(config.to_dict(), base, named)
        try:
            run = trained(config, reuse, workers=workers)
        except Exception as err:  # the learner's config failed to train: say how, in words
            return Feedback(False, _("Your run ({label}) could not train: {error}").format(label=label, error=err))
    results = [goal.test(run) for goal in goals]
    reached = all(ok for ok, _said in results)
    goal_words = _(" and ").join(g.says for g in goals)
    shown = _("; ").join(sentence for _ok, sentence in results)
    if reached:
        return Feedback(True, _("Your run ({label}) reaches the goal, {goal}: {shown}.").format(
            label=label, goal=goal_words, shown=shown))
    doctor = diagnose(run)[0]
    return Feedback(False, _("Your run ({label}) misses the goal, {goal}: {shown}. The curve doctor reads it as "
                             "{diagnosis}: {message}; its advice: {advice}.").format(
        label=label, goal=goal_words, shown=shown, diagnosis=_(doctor.name), message=doctor.message,
        advice=doctor.advice))


def _config_of(answer, base, knob, allowed, name, example) -> tuple[object, list, str | None]:
    """(a Run or a checked TrainConfig, the fields the answer named, None), or (None, [], a sentence on why the
    answer cannot be run)."""
    answer = _plain(answer)
    if example is None and base is not None and (knob or allowed):  # how an answer looks: base's own value
        example = getattr(base, knob) if knob else {allowed[0]: getattr(base, allowed[0])}
    write = _(", e.g. `{name} = {example}`").format(name=name, example=repr(example)) if example is not None else ""
    if answer is None or answer is Ellipsis:
        return None, [], _("Write your answer first: set {name} in the cell above{example}, and run that cell.").format(
            name=name, example=write)
    if isinstance(answer, Run):
        return answer, [], None
    if isinstance(answer, TrainConfig):
        changes = {k: v for k, (v, _base) in answer.diff(base).items() if k not in NOT_KNOBS} if base else {}
    elif isinstance(answer, dict):
        changes = answer
    elif knob is not None and not isinstance(answer, (list, tuple, set)):
        changes = {knob: answer}
    else:
        said = (_("{name} should be a value for {knob}{example}; it is {answer}.") if knob
                else _("{name} should be a dict of TrainConfig fields{example}; it is {answer}."))
        return None, [], said.format(name=name, knob=knob, example=write, answer=_described(answer))
    if base is None and not isinstance(answer, TrainConfig):
        return None, [], _("This exercise gives no base configuration to apply your changes to (a bug of the "
                           "exercise).")
    keys = [k for k in changes if not isinstance(k, str)]
    if keys:
        return None, [], _("{name}: the keys of the dict must be TrainConfig field names in quotes; {key} is "
                           "not.").format(name=name, key=repr(keys[0]))
    try:
        check_field_names(changes)  # an unknown field first: "'lr' is not a TrainConfig field. Did you mean ...?"
    except ValueError as err:
        return None, [], f"{name}: {err}"
    outside = [k for k in changes if allowed is not None and k not in allowed]
    if outside:
        return None, [], _("{name} changes {fields}; this exercise lets you change only {allowed}{example}.").format(
            name=name, fields=", ".join(outside), allowed=", ".join(allowed), example=write)
    try:
        config = answer if isinstance(answer, TrainConfig) else base.replace(**changes)
    except (ValueError, TypeError) as err:  # ConfigError: the field, the value and what is allowed
        return None, [], _("{name} is not a configuration the trainer accepts: {error}").format(name=name, error=err)
    return config, list(changes), None


def trained(config: TrainConfig, reuse=None, keep_model: bool = False, workers: int | None = None) -> Run:
    """The run of `config` for an exercise: a run of `reuse` with the same config (Runs, folders or a sweep
    table), or a new one, named "exercise", trained in the chapter's pool of worker processes
    (nbkit.core.sweep: the same reuse rule and pool as every chapter's sweep; one thread per run, which on
    a busy machine is many times faster than the kernel's own threads). keep_model: bring the weights back."""
    # imported here: the sweep imports the trainer (torch, transformers), which only a training check needs
    from nbkit.core.runs import as_runs
    from nbkit.core.sweep import sweep
    from nbkit.core.workers import default_workers

    workers = default_workers(config) if workers is None else workers
    table = sweep(config.replace(run_name=config.run_name or "exercise"), {"seed": [config.seed]}, reuse=reuse,
                  keep_models=keep_model, workers=workers, progress=False)
    return as_runs(table)[0]


def _label(config: dict, base, named) -> str:
    """The knobs the answer set, as "learning_rate=0.003": those it named (even at base's value), then any other
    change from base; or the run's name when there is no base to compare with."""
    if base is None:
        return config.get("run_name") or _("your run")
    mine = TrainConfig.from_dict(dict(config))
    shown = list(named) + [k for k in mine.diff(base) if k not in NOT_KNOBS and k not in named]
    return knob_label(mine, shown) if shown else _("the base configuration unchanged")


def _evaluations(run):
    """The run's evaluations after training began, with a finite validation loss."""
    epochs = run.epochs
    if epochs is None or not {"epoch", "step", "eval_loss"} <= set(epochs):
        return pd.DataFrame(columns=["epoch", "step", "eval_loss"])
    evals = epochs[epochs["step"] > 0]
    return evals[evals["eval_loss"].astype(float).map(math.isfinite).astype(bool)]  # bool: an empty mask selects rows


def _measured(measure, run):
    """measure of the run as a float, or None: a summary key it lacks, or a measure it cannot give (a run that
    diverged before its first epoch has no training loss to read, say)."""
    try:
        value = _plain(run.summary.get(measure) if isinstance(measure, str) else measure(run))
    except (ArithmeticError, KeyError, IndexError, TypeError, ValueError):
        return None
    return float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else None


def _diagnoses(found) -> str:
    return _("; ").join(_("{name} ({message})").format(name=_(d.name), message=d.message) for d in found)


# ---------------------------------------------------------------- words

def _sentence(first: str, why: str) -> str:
    return f"{first[0].upper()}{first[1:]}" + (f" {why}" if why else "")


def _number(value, other=None) -> str:
    """4 significant digits; more when `other` would otherwise print the same (0.3171 vs 0.31712)."""
    if value is None:
        return "None"
    value, other = float(value), None if other is None else float(other)
    for digits in (4, 6, 8, 12):
        text = f"{value:.{digits}g}"
        if other is None or text != f"{other:.{digits}g}":
            return text
    return text  # the same number: say it once, at 12 digits


def _epoch(value) -> str:
    return f"{float(value):g}"


def _shown(value) -> str:
    """A value as a learner would write it: 0.003, True, 'diverged'."""
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value)


def _described(value) -> str:
    """What the learner wrote, in words: "the text '3e-3'", "a list ([1, 2])"."""
    if isinstance(value, str):
        return _("the text {text}").format(text=repr(value))
    text = repr(value)
    text = text if len(text) <= 40 else text[:37] + "..."
    kind = type(value).__name__
    return (_("an {type} ({value})") if kind[0] in "aeiou" else _("a {type} ({value})")).format(type=kind, value=text)


# ---------------------------------------------------------------- the course: nbgrader

GRADED_MODEL = "tiny"  # the model the answers were written for; a chapter's -p model changes what its runs show


def graded(ch) -> bool:
    """Whether this run of chapter `ch` (nbkit.interfaces.chapter.Chapter) grades its exercises: on the tiny
    model with the chapter's own data (each *dataset parameter at its default), the setting the answers
    were written and checked for, at any seed. On another model or on a learner's own data (`-p model`,
    `-p dataset my.jsonl`) the runs answer other questions: the checks still say in words what the runs
    showed, and the grading asserts (`assert check.passed or not graded`) stand down."""
    defaults, values = notebook_defaults(ch.name), ch.parameters
    data = [name for name in defaults if name.endswith("dataset")]
    return values.get("model", GRADED_MODEL) == GRADED_MODEL and all(values.get(n) == defaults[n] for n in data)


def nbgrader_config(root, db_url: str | None = None, cell_timeout: int = 1800) -> str:
    """The text of an nbgrader_config.py for a course of these chapters (write it where you run nbgrader):
    the course folder, the gradebook, a cell timeout a chapter's training cells need (nbgrader's default,
    30 s, stops them), and an answer stub that leaves the `name = ...` line above it to the learner."""
    lines = ["c = get_config()  # noqa: F821 - nbgrader's config loader provides it",
             f"c.CourseDirectory.root = {str(root)!r}",
             f"c.Execute.timeout = {int(cell_timeout)}  # seconds a cell may run: a chapter's sweeps take minutes",
             'c.ClearSolutions.code_stub = {"python": "# YOUR ANSWER HERE: replace the ... above"}']
    if db_url:
        lines.insert(2, f"c.CourseDirectory.db_url = {db_url!r}")
    return "\n".join(lines) + "\n"
