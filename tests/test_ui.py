"""nbkit.views.ui driven in-process, no browser: the controls a panel builds, and what Train, Stop and
bad values do, on real (tiny, quick) runs of the tiny model in the panel's background thread."""
import base64
import gc
import html
import dataclasses
import time
from pathlib import Path

import ipywidgets as widgets
import pytest

from nbkit import TrainConfig
from nbkit.core.config import FINETUNING_TYPES, OPTIMIZER_NAMES, SCHEDULER_NAMES, field_docs
from nbkit.core.i18n import LanguageError, get_language, set_language
from nbkit.views import ui
from nbkit.views.doctor import diagnose
from nbkit.views.ui import OptionalControl, panel

FIXTURE = Path(__file__).parent / "fixtures" / "panel_demo.ipynb"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JOIN_SECONDS = 300  # a tiny run takes seconds; the margin is for a machine shared with other jobs


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def small(tmp_path, **kw) -> TrainConfig:
    # 64 training rows, batch 16: 4 optimizer steps per epoch
    base = dict(model="tiny", max_samples=80, num_train_epochs=2, predict_with_generate=False,
                output_dir=str(tmp_path / "runs"))
    base.update(kw)
    return TrainConfig(**base)


def images(out: widgets.Output) -> list[bytes]:
    return [base64.b64decode(o["data"]["image/png"]) for o in out.outputs if "image/png" in o.get("data", {})]


def option_values(dropdown) -> list:
    return [o[1] if isinstance(o, tuple) else o for o in dropdown.options]


def status_text(p) -> str:
    return p.status.value


def run_folders(cfg) -> list:
    return list(Path(cfg.output_dir).glob("*/summary.json"))


# ------------------------------------------------------------------ controls


def test_controls_fit_each_field(tmp_path):
    cfg = small(tmp_path, early_stopping_patience=None)
    fields = ["learning_rate", "lr_scheduler_type", "optim", "finetuning_type", "quantization_bit",
              "warmup_ratio", "weight_decay", "num_train_epochs", "per_device_train_batch_size",
              "early_stopping_patience", "use_rslora", "adam_beta2", "adam_epsilon", "max_grad_norm"]
    p = panel(cfg, fields)
    c = p.controls
    assert list(c) == fields

    lr = c["learning_rate"]
    assert isinstance(lr, widgets.FloatLogSlider) and lr.value == pytest.approx(cfg.learning_rate)
    assert isinstance(c["adam_epsilon"], widgets.FloatLogSlider)
    assert c["adam_epsilon"].value == pytest.approx(cfg.adam_epsilon)

    # dropdowns offer exactly what the config allows
    assert option_values(c["lr_scheduler_type"]) == list(SCHEDULER_NAMES)
    assert option_values(c["optim"]) == list(OPTIMIZER_NAMES)
    assert option_values(c["finetuning_type"]) == list(FINETUNING_TYPES)
    assert option_values(c["quantization_bit"]) == [None, 4, 8]

    assert isinstance(c["warmup_ratio"], widgets.FloatSlider) and isinstance(c["weight_decay"], widgets.FloatSlider)
    assert isinstance(c["num_train_epochs"], widgets.IntSlider) and c["num_train_epochs"].value == cfg.num_train_epochs
    # every slider's two ends are values the config accepts, and its range holds the config's value
    for name, control in c.items():
        slider = control.slider if isinstance(control, OptionalControl) else control
        if isinstance(slider, widgets.FloatLogSlider):
            ends = (slider.base ** slider.min, slider.base ** slider.max)
        elif isinstance(slider, (widgets.FloatSlider, widgets.IntSlider)):
            ends = (slider.min, slider.max)
        else:
            continue
        for end in ends:
            cfg.replace(**{name: end})  # raises ValueError naming the field if the config refuses it
        assert ends[0] < ends[1] and ends[0] <= slider.value <= ends[1], name
    assert isinstance(c["per_device_train_batch_size"], widgets.IntSlider)
    assert isinstance(c["use_rslora"], widgets.Checkbox)

    # None is a choice where the field allows it: an "off" box beside the slider
    patience = c["early_stopping_patience"]
    assert isinstance(patience, OptionalControl) and patience.value is None and patience.slider.disabled
    patience.value = 3
    assert patience.value == 3 and not patience.slider.disabled
    assert p.config().early_stopping_patience == 3
    patience.off_box.value = True
    assert p.config().early_stopping_patience is None
    assert c["max_grad_norm"].value == 1.0 and isinstance(c["max_grad_norm"].slider, widgets.FloatLogSlider)

    docs = {name: doc for _, name, doc in field_docs()}
    for name, control in c.items():
        labelled = control.slider if isinstance(control, OptionalControl) else control
        assert labelled.description == name
        assert labelled.tooltip == docs[name] and docs[name]
        if "continuous_update" in labelled.trait_names():
            assert labelled.continuous_update is False, name

    # building a panel trains nothing
    assert not p.running and p.runs == [] and not run_folders(cfg)


def test_every_field_has_a_control_that_round_trips(tmp_path):
    """Each field's widget shows the config's value and gives it back unchanged."""
    cfg = small(tmp_path, finetuning_type="lora", lora_alpha=24.0, lr_scheduler_type="cosine_with_restarts",
                lr_scheduler_kwargs={"num_cycles": 2}, max_steps=7, eval_steps=3, learning_rate=5.0)
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    assert set(ui.CONTROLS) == set(names)
    p = panel(cfg, names)
    assert p.config() == cfg  # a value outside a slider's usual range widens it instead of being clamped
    assert p.controls["max_steps"].value == 7
    p.controls["max_steps"].off_box.value = True
    assert p.config().max_steps == -1


def test_unknown_field_is_refused_with_a_suggestion(tmp_path):
    with pytest.raises(ValueError, match="learning_rate"):
        panel(small(tmp_path), ["lr"])


def test_panel_displays_as_a_widget(tmp_path):
    p = panel(small(tmp_path), ["learning_rate"])
    bundle = p._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == p.widget.model_id
    assert isinstance(p.widget, widgets.VBox)


def test_the_language_toggle_relabels_every_panel_in_chinese_and_back(tmp_path):
    """The real catalogue (nbkit/locale/zh_CN/LC_MESSAGES/nbkit.po): the toggle sets the process's language."""
    gc.collect()  # panels of earlier tests: gone, not relabelled too
    set_language("en")
    try:
        p = panel(small(tmp_path), ["learning_rate", "quantization_bit", "max_steps"])
        other = panel(small(tmp_path), ["learning_rate"])  # another panel of the same notebook
        assert p.language_toggle.value == "en" and p.train_button.description == "Train"
        assert p.widget.children[0].children == (p.language_toggle,)  # the top row
        p.language_toggle.value = "zh"
        assert get_language() == "zh"
        assert (p.train_button.description, p.stop_button.description, p.overlay_button.description) == \
            ("训练", "停止", "叠加对比")
        assert (p.join_button.description, p.next_button.description, p.class_row.titles[0]) == \
            ("加入", "训练下一个", "课堂（工作坊）")
        assert "就绪" in p.status.value and "“训练”" in p.status.value and "讲师的课堂" in p.class_status.value
        assert "还没有运行" in p.table_output.outputs[0]["data"]["text/html"]
        bits = p.controls["quantization_bit"]
        assert [label for label, _value in bits.options] == ["关闭", "4 位（QLoRA）", "8 位"] and bits.value is None
        assert p.controls["max_steps"].off_box.description == "关闭（按轮次）"
        assert p.controls["learning_rate"].description == "learning_rate"  # parameter names stay Hugging Face's
        assert p.config() == small(tmp_path)  # relabelling changed no value
        assert other.language_toggle.value == "zh" and other.train_button.description == "训练"
        p.language_toggle.value = "en"
        assert get_language() == "en" and p.train_button.description == "Train"
        assert other.train_button.description == "Train" and other.language_toggle.value == "en"
        assert "ready: press Train" in p.status.value and bits.options[1] == ("4-bit (QLoRA)", 4)

        q = panel(small(tmp_path), ["learning_rate"], language="zh")
        assert get_language() == "zh" and q.language_toggle.value == "zh" and q.train_button.description == "训练"
        with pytest.raises(LanguageError, match="language='fr'"):
            panel(small(tmp_path), ["learning_rate"], language="fr")
    finally:
        set_language("en")


# ------------------------------------------------------------------ Train, live plot, runs table


def test_train_button_trains_with_the_slider_value(tmp_path):
    runs = []
    cfg = small(tmp_path, num_train_epochs=3)
    p = panel(cfg, ["learning_rate", "num_train_epochs"], runs)
    other = panel(cfg, ["warmup_ratio"], runs)  # another panel of the same notebook
    p.controls["learning_rate"].value = 10 ** -2.5  # one of the slider's positions
    chosen = p.controls["learning_rate"].value
    assert chosen != cfg.learning_rate

    p.train_button.click()
    assert p.running and p.train_button.disabled and not p.stop_button.disabled
    assert p.join(JOIN_SECONDS)
    assert p.last_error is None, p.last_error

    assert len(runs) == 1 and p.runs is runs
    run = runs[0]
    assert run.status == "completed"
    assert run.config["learning_rate"] == pytest.approx(chosen)
    assert run.config["num_train_epochs"] == 3
    assert Path(run.path).parent == Path(cfg.output_dir)

    shown = images(p.plot_output)
    assert len(shown) == 1 and shown[0].startswith(PNG_MAGIC)
    # the plot was redrawn live: at least at the base model's evaluation and at each epoch end
    assert p.plot_updates >= 1 + 3
    # the base model's point is drawn as soon as it is evaluated, before any training step
    assert p.first_plot_seconds is not None and p.first_plot_seconds < 3.0, p.first_plot_seconds
    assert run.config["disable_tqdm"] is True  # the panel shows progress itself
    print(f"first plotted point {p.first_plot_seconds:.2f} s after Train; run {run.summary['total_seconds']:.1f} s")

    s = status_text(p)
    assert "finished in" in s and f"best epoch {run.best_epoch}" in s
    assert f"{run.best_eval_loss:.4g}" in s
    assert not p.train_button.disabled and p.stop_button.disabled

    # the runs table has the panel's knobs and the results, in both panels that share the list
    assert p.runs_table().loc[1, "learning_rate"] == pytest.approx(chosen)
    assert f"{chosen:.4g}" in p.table_output.outputs[0]["data"]["text/html"]
    assert other.runs_table().loc[1, "warmup_ratio"] == cfg.warmup_ratio
    for q in (p, other):
        table = q.runs_table()
        assert table.loc[1, "status"] == "completed" and table.loc[1, "best_epoch"] == run.best_epoch
        assert table.loc[1, "best_eval_loss"] == pytest.approx(run.best_eval_loss)
        assert run.name in q.table_output.outputs[0]["data"]["text/html"]
        assert len(q.run_selector.options) == 1

    # a second run from the other panel, then overlay both
    other.controls["warmup_ratio"].value = 0.25
    other.train_button.click()
    assert other.join(JOIN_SECONDS) and other.last_error is None, other.last_error
    assert len(runs) == 2 and runs[1].config["warmup_ratio"] == 0.25
    assert [label for label, _ in p.run_selector.options][1].startswith("#2 ")
    assert list(p.runs_table()["warmup_ratio"]) == [0.0, 0.25]  # a knob that now differs joins the table
    p.run_selector.value = (0, 1)
    p.overlay_button.click()
    overlay = images(p.overlay_output)
    assert len(overlay) == 1 and overlay[0].startswith(PNG_MAGIC)


def test_stop_interrupts_a_long_run(tmp_path):
    cfg = small(tmp_path, max_samples=200, num_train_epochs=40)  # 160 optimizer steps: far longer than we wait
    p = panel(cfg, ["learning_rate"])
    p.train_button.click()
    deadline = time.time() + JOIN_SECONDS
    while "step" not in status_text(p) or "step 0/" in status_text(p):  # wait for a real training step
        assert time.time() < deadline and p.running, status_text(p)
        time.sleep(0.05)
    p.stop_button.click()
    assert p.join(JOIN_SECONDS)
    run = p.runs[-1]
    assert run.status == "interrupted"
    assert run.summary["steps_completed"] < run.summary["total_steps"]
    s = status_text(p)
    assert "stopped" in s and "interrupted" in s and f"step {run.summary['steps_completed']}/" in s
    assert images(p.plot_output)


def test_huge_learning_rate_says_diverged(tmp_path):
    cfg = small(tmp_path, learning_rate=5.0, optim="sgd", max_grad_norm=None)
    p = panel(cfg, ["learning_rate", "optim"])
    p.train_button.click()
    assert p.join(JOIN_SECONDS)
    run = p.runs[-1]
    assert run.status == "diverged"
    s = status_text(p)
    assert f"diverged at step {run.summary['diverged_at_step']}" in s
    assert "lower the learning rate" in s


def test_the_curve_doctor_speaks_under_the_plot_during_and_after_a_run(tmp_path):
    # reviews (25% flipped labels) at a constant LR over-fits within a few epochs
    cfg = small(tmp_path, dataset="reviews", max_samples=None, lr_scheduler_type="constant", num_train_epochs=8)
    p = panel(cfg, ["num_train_epochs", "early_stopping_patience", "lr_scheduler_type"])
    verdicts = []
    p.doctor.observe(lambda change: verdicts.append(change["new"]), "value")
    p.train_button.click()
    assert p.join(JOIN_SECONDS) and p.last_error is None, p.last_error
    run = p.runs[-1]
    assert [d.name for d in p.diagnoses] == [d.name for d in diagnose(run)]
    assert "over-fitting" in [d.name for d in p.diagnoses]
    shown = html.unescape(p.doctor.value)
    assert "Curve doctor" in shown and "over-fitting" in shown
    assert f"lowest at epoch {run.best_epoch} " in shown and f"stop at epoch {run.best_epoch}" in shown
    # live: a verdict at each evaluation (base model + 8 epochs), then the final one
    assert len([v for v in verdicts if v]) >= 1 + 8
    assert p.widget.children.index(p.doctor) == p.widget.children.index(p.plot_output) + 1  # right under the plot


def test_the_curve_doctor_says_diverged_with_the_step(tmp_path):
    p = panel(small(tmp_path, learning_rate=5.0, optim="sgd", max_grad_norm=None), ["learning_rate"])
    p.train_button.click()
    assert p.join(JOIN_SECONDS)
    run = p.runs[-1]
    assert [d.name for d in p.diagnoses] == ["diverged"]
    assert f"step {run.summary['diverged_at_step']}" in html.unescape(p.doctor.value)


# ------------------------------------------------------------------ bad values: messages, not tracebacks


def test_refused_combination_shows_the_config_message(tmp_path):
    cfg = small(tmp_path)
    p = panel(cfg, ["finetuning_type", "use_rslora"])
    p.controls["use_rslora"].value = True  # with finetuning_type "full": the config refuses it
    with pytest.raises(ValueError) as refused:
        cfg.replace(use_rslora=True)
    message = str(refused.value)
    assert "use_rslora" in message
    # shown as soon as the box is ticked, and again on Train, which then trains nothing
    assert html.escape(message) in status_text(p)
    p.status.value = ""
    p.train_button.click()
    assert not p.running and p.runs == [] and not run_folders(cfg)
    assert html.escape(message) in status_text(p) and "Traceback" not in status_text(p)
    assert isinstance(p.last_error, ValueError)

    p.controls["finetuning_type"].value = "lora"  # now allowed: the message goes away
    assert "use_rslora" not in status_text(p) and "ready" in status_text(p)


def test_error_inside_the_training_thread_is_a_message(tmp_path):
    # lora_rank above the model's hidden size is refused only once the model is loaded, in the thread
    cfg = small(tmp_path, finetuning_type="lora", lora_rank=200)
    p = panel(cfg, ["lora_rank"])
    p.train_button.click()
    assert p.join(JOIN_SECONDS)
    assert isinstance(p.last_error, ValueError) and p.runs == []
    s = status_text(p)
    assert "lora_rank=200" in s and "hidden size" in s and "Traceback" not in s
    assert not p.train_button.disabled and p.stop_button.disabled


def test_unexpected_exception_in_the_thread_is_a_message(tmp_path, monkeypatch):
    def broken_train(cfg, callbacks=(), stop_event=None):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ui, "train", broken_train)
    p = panel(small(tmp_path), ["learning_rate"])
    p.train_button.click()
    assert p.join(10)
    assert "training failed (RuntimeError): disk full" in status_text(p)
    assert not p.train_button.disabled


# ------------------------------------------------------------------ headless: the demo notebook under papermill


def test_panel_notebook_runs_headless_without_training(tmp_path, monkeypatch):
    import papermill
    runs_dir = tmp_path / "demo-runs"
    monkeypatch.setenv("NBKIT_DEMO_RUNS", str(runs_dir))
    out = papermill.execute_notebook(str(FIXTURE), str(tmp_path / "out.ipynb"), cwd=str(tmp_path),
                                     kernel_name="python3", progress_bar=False)
    shown = out.cells[-1].outputs
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in shown)
    assert not list(runs_dir.glob("*/summary.json"))  # displaying the panel trained nothing


# ------------------------------------------------------------------ the Class row (a workshop)

def _class(tmp_path, grid=(2e-3, 5e-2)):
    from nbkit.core.classroom import create_class
    from nbkit.core.study import StudySpec

    spec = StudySpec.from_dict(dict(
        study_name="lr101", base=dict(model="tiny", dataset="arithmetic", max_samples=80, num_train_epochs=2,
                                      predict_with_generate=False), scientific={"learning_rate": list(grid)},
        sampler="grid", storage=f"sqlite:///{tmp_path}/class.db", heartbeat_interval=1, grace_period=3))
    return create_class(spec, "01_learning_rate")


def test_train_next_takes_the_classs_configuration_sets_the_sliders_and_tells_the_class(tmp_path, monkeypatch):
    from nbkit.core.classroom import class_runs

    monkeypatch.chdir(tmp_path)
    study = _class(tmp_path)
    p = panel(small(tmp_path, num_train_epochs=5), ["learning_rate", "num_train_epochs"],
              join=f"lr101@sqlite:///{tmp_path}/class.db", student="ana")
    assert "joined class 'lr101' (chapter 01_learning_rate) as ana" in html.unescape(p.class_status.value)
    assert p.controls["num_train_epochs"].value == 2  # the panel now starts from the class's config
    p._on_train_next()
    assert p.join(JOIN_SECONDS), "the class's run did not end"
    trial = study.trials[0]
    assert trial.state.name == "COMPLETE" and trial.user_attrs["student"] == "ana"
    assert p.controls["learning_rate"].value == pytest.approx(trial.params["learning_rate"])  # 5e-2: slider widened
    assert len(p.runs) == 1 and p.runs[0].config["learning_rate"] == trial.params["learning_rate"]
    assert p.plot_updates >= 1 and p.diagnoses and p.last_error is None
    assert "told class 'lr101'" in html.unescape(p.class_status.value)
    # the student's own values: trained with Train, recorded in the class outside the design
    p.controls["learning_rate"].value = 3e-3
    p._on_train()
    assert p.join(JOIN_SECONDS)
    own = [r for r in class_runs(study) if r["kind"] == "own"]
    assert [(r["student"], r["params"], r["differs"]) for r in own] == [("ana", {"learning_rate": 3e-3}, {})]
    assert "recorded in class 'lr101', outside its design" in html.unescape(p.class_status.value)
    # the last free configuration, then none: a message, not an error
    p._on_train_next()
    assert p.join(JOIN_SECONDS)
    p._on_train_next()
    assert "no free configuration" in p.class_status.value and "design is complete" in p.class_status.value
    assert p.last_error is None


def test_the_class_row_says_what_is_wrong_and_joins_nothing(tmp_path):
    from nbkit.core.classroom import students

    study = _class(tmp_path)
    p = panel(small(tmp_path), ["learning_rate"])
    p._on_train_next()
    assert "join a class first" in p.class_status.value and p.seat is None
    for name, storage, student, says in [
            ("lr1", f"sqlite:///{tmp_path}/class.db", "ana", "class &#x27;lr1&#x27; is not a class"),
            ("lr101", f"sqlite:///{tmp_path}/nope.db", "ana", "no such file"),
            ("lr101", "postgresql+psycopg2://nobody@127.0.0.1:1/class", "ana", "cannot be reached"),
            ("lr101", f"sqlite:///{tmp_path}/class.db", "", "is not a name")]:
        p.class_name.value, p.class_storage.value, p.student_name.value = name, storage, student
        p._on_join()
        assert "cannot join" in p.class_status.value and says in p.class_status.value, p.class_status.value
        assert p.seat is None and p.next_button.disabled
    assert students(study) == []


def test_stop_during_train_next_gives_the_configuration_back(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = _class(tmp_path)
    p = panel(small(tmp_path), ["learning_rate"], join=f"lr101@sqlite:///{tmp_path}/class.db", student="ana")
    p._on_train_next()
    deadline = time.time() + JOIN_SECONDS
    while p.plot_updates == 0 and p.running and time.time() < deadline:
        time.sleep(0.05)
    p._on_stop()
    assert p.join(JOIN_SECONDS)
    assert "goes back to class" in html.unescape(p.status.value)
    assert sum(t.state.name == "WAITING" for t in study.trials) == 2 and not p.runs


def test_the_class_row_is_filled_in_from_a_workshop_hubs_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("NBKIT_CLASS", "lr101")
    monkeypatch.setenv("NBKIT_CLASS_STORAGE", f"sqlite:///{tmp_path}/class.db")
    monkeypatch.setenv("JUPYTERHUB_USER", "ana")
    p = panel(small(tmp_path), ["learning_rate"])
    assert (p.class_name.value, p.class_storage.value, p.student_name.value) == \
        ("lr101", f"sqlite:///{tmp_path}/class.db", "ana")
    assert p.seat is None  # filled in, not joined: the student presses Join
    q = panel(small(tmp_path), ["learning_rate"], join="other@sqlite:///x.db", student="bo")
    assert (q.class_name.value, q.class_storage.value, q.student_name.value) == ("other", "sqlite:///x.db", "bo")


def test_the_curve_doctor_names_its_diagnosis_in_the_learners_language():
    from nbkit.views.doctor import Diagnosis
    from nbkit.views.ui import doctor_html

    found = Diagnosis("over-fitting", "m", "a")
    set_language("zh")
    try:
        label, shown = found.label, html.unescape(doctor_html([found]))
    finally:
        set_language("en")
    assert label != "over-fitting" and f"{label}</b>" in shown and "over-fitting" not in shown
    assert "over-fitting</b>" in html.unescape(doctor_html([found]))  # in English, the English name
