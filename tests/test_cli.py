"""`python -m nbkit`: export, show-config, train, study show and study best, through a real subprocess
where it matters (and to see that a command that trains nothing imports no torch)."""

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from peft import LoraConfig
from transformers import TrainingArguments

from nbkit.core import i18n
from nbkit.core.config import TrainConfig
from nbkit.core.i18n import set_language
from nbkit.interfaces.cli import main

REPO_ROOT = Path(__file__).resolve().parent.parent


def nbkit(*args, cwd):
    """Run `python -m nbkit ARGS` in `cwd`; returns the CompletedProcess."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-m", "nbkit", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


# ---------------------------------------------------------------- through a subprocess


def test_export_llamafactory_to_stdout_from_a_config_file_and_overrides(tmp_path):
    (tmp_path / "run.yaml").write_text("finetuning_type: lora\nlearning_rate: 3e-4\nlora_rank: 4\n")
    done = nbkit("export", "--format", "llamafactory", "--config", "run.yaml", "--set", "lora_rank=16",
                 cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    loaded = yaml.safe_load(done.stdout)
    assert loaded["finetuning_type"] == "lora"
    assert loaded["learning_rate"] == 3e-4 and isinstance(loaded["learning_rate"], float)
    assert (loaded["lora_rank"], loaded["lora_alpha"]) == (16, 32)  # --set wins over the file


def test_export_training_args_to_a_file(tmp_path):
    done = nbkit("export", "--format", "training_args", "--set", "warmup_ratio=0.1",
                 "--set", f"output_dir={tmp_path / 'out'}", "-o", "args.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    kwargs = json.loads((tmp_path / "args.json").read_text())
    args = TrainingArguments(**kwargs)
    assert args.get_warmup_steps(100) == 10


def test_bad_set_exits_2_with_a_message_and_no_traceback(tmp_path):
    done = nbkit("export", "--format", "training_args", "--set", "learning_rate=-1", cwd=tmp_path)
    assert done.returncode == 2
    assert "learning_rate=-1.0" in done.stderr and "> 0" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    # and nothing before it: no library notice at import (bitsandbytes' kernel fetch, nbkit/__init__.py)
    assert done.stderr.startswith("nbkit: error:"), done.stderr


@pytest.mark.parametrize("lines, where, says", [
    (['{"instruction": "What is 2 + 2?", "output": "4"}', '{"instruction": "What is 1 + 1?", "output": '],
     ":2:", "one JSON object per line"),
    (['{"instruction": "What is 2 + 2?", "output": "4"}', "", '{"prompt": "no known keys"}'],
     ":3:", "unknown format"),
    ([], "", "no examples"),
])
def test_a_bad_data_file_is_one_error_line_naming_file_and_line(lines, where, says, tmp_path):
    (tmp_path / "mine.jsonl").write_text("\n".join(lines) + "\n")
    done = nbkit("train", "--set", "dataset=mine.jsonl", "--set", f"output_dir={tmp_path / 'runs'}", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"nbkit: error: mine.jsonl{where}"), done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_train_prints_the_summary(tmp_path):
    done = nbkit("train", "--set", "max_samples=160", "--set", "num_train_epochs=1",
                 "--set", "predict_with_generate=false", "--set", "disable_tqdm=true",
                 "--set", f"output_dir={tmp_path / 'runs'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "status:     completed" in done.stdout
    assert "Loading weights" not in done.stderr and "gemm_4bit" not in done.stderr, done.stderr
    run_folders = list((tmp_path / "runs").iterdir())
    assert len(run_folders) == 1 and str(run_folders[0]) in done.stdout


# ---------------------------------------------------------------- in process (fast)


def test_train_with_a_bad_config_exits_2_before_training(capsys, tmp_path):
    assert main(["train", "--set", "optim=adamw", "--set", f"output_dir={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err
    assert "optim='adamw'" in err and "Did you mean" in err
    assert not (tmp_path / "runs").exists()


def test_export_lora_as_json(capsys):
    assert main(["export", "--format", "lora", "--set", "finetuning_type=lora",
                 "--set", "lora_target=q_proj,v_proj", "--set", "use_dora=true"]) == 0
    kwargs = json.loads(capsys.readouterr().out)
    assert kwargs["target_modules"] == ["q_proj", "v_proj"] and kwargs["use_dora"] is True
    assert LoraConfig(**kwargs).r == 8


@pytest.mark.parametrize("fmt, cls", [("lora", LoraConfig), ("training_args", TrainingArguments)])
def test_export_as_python_code_runs(fmt, cls, capsys, tmp_path):
    assert main(["export", "--format", fmt, "--style", "python", "--set", "finetuning_type=lora",
                 "--set", f"output_dir={tmp_path}"]) == 0
    code = capsys.readouterr().out
    namespace = {}
    exec(code.replace(f"{cls.__name__}(", f"result = {cls.__name__}(", 1), namespace)
    assert isinstance(namespace["result"], cls)


def test_export_with_no_config_uses_the_defaults(capsys):
    assert main(["export", "--format", "llamafactory"]) == 0
    loaded = yaml.safe_load(capsys.readouterr().out)
    assert loaded["finetuning_type"] == "full" and loaded["learning_rate"] == 1e-3


def test_lora_export_of_a_full_fine_tune_is_refused(capsys):
    assert main(["export", "--format", "lora"]) == 2
    assert "finetuning_type='full'" in capsys.readouterr().err


def test_hf_export_of_our_step_scheduler_is_refused(capsys):
    assert main(["export", "--format", "training_args", "--set", "lr_scheduler_type=step"]) == 2
    err = capsys.readouterr().err
    assert "lr_scheduler_type='step'" in err and "StepLR" in err


@pytest.mark.parametrize("args, message", [
    (["--set", "learning_rate"], "expected KEY=VALUE"),
    (["--set", "lr=1e-3"], "Did you mean 'learning_rate'"),
    (["--set", "lora_rank=four"], "lora_rank='four'"),
    (["--config", "missing.yaml"], "cannot read"),
])
def test_bad_options_exit_2_with_a_message(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["export", "--format", "llamafactory", *args]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""


@pytest.mark.parametrize("text, message", [("- a\n- b\n", "expected a mapping"), ("a: [\n", "not valid YAML")])
def test_bad_config_files_exit_2(text, message, capsys, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["show-config", "--config", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_unknown_format_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["export", "--format", "csv"])
    assert caught.value.code == 2
    assert "invalid choice: 'csv'" in capsys.readouterr().err


def test_show_config_lists_every_field_with_its_comment_and_marks_changes(capsys):
    assert main(["show-config", "--set", "learning_rate=3e-4"]) == 0
    out = capsys.readouterr().out
    assert "# --- optimizer ---" in out
    assert "*learning_rate = 0.0003  # " in out
    assert " max_grad_norm = 1.0  # HF default; clips rare spikes" in out
    field_lines = [line for line in out.splitlines() if re.match(r"[ *]\w+ = ", line)]
    assert len(field_lines) == len(dataclasses.fields(TrainConfig))


# ---------------------------------------------------------------- the README's commands

USER_ROWS = {  # one row of each format the README's Datasets table names; the rest follows the same pattern
    "alpaca": lambda a, b: {"instruction": "Add the two numbers.", "input": f"{a} and {b}", "output": str(a + b)},
    "sharegpt": lambda a, b: {"conversations": [{"from": "human", "value": f"What is {a} + {b}?"},
                                                {"from": "gpt", "value": str(a + b)}]},
    "messages": lambda a, b: {"messages": [{"role": "user", "content": f"What is {a} + {b}?"},
                                           {"role": "assistant", "content": str(a + b)}]},
}


@pytest.mark.parametrize("fmt", list(USER_ROWS))
def test_train_from_a_config_file_on_the_users_own_jsonl(fmt, capsys, tmp_path):
    """`python -m nbkit train --config my_run.yaml` with `dataset: my.jsonl` in each format: the run trains
    on those rows (its split sizes say so) and ends completed."""
    rows = [USER_ROWS[fmt](a, b) for a in range(8) for b in range(5)]
    (tmp_path / "my.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "my_run.yaml").write_text(f"dataset: {tmp_path / 'my.jsonl'}\nnum_train_epochs: 1\n"
                                          f"learning_rate: 1.0e-3\ndisable_tqdm: true\n"
                                          f"output_dir: {tmp_path / 'runs'}\n")
    assert main(["train", "--config", str(tmp_path / "my_run.yaml")]) == 0
    out = capsys.readouterr().out
    assert "status:     completed" in out
    [folder] = list((tmp_path / "runs").iterdir())
    summary = json.loads((folder / "summary.json").read_text())
    config = json.loads((folder / "config.json").read_text())
    assert config["dataset"] == str(tmp_path / "my.jsonl") and config["learning_rate"] == 1e-3
    assert summary["num_train_examples"] + summary["num_val_examples"] == len(rows)


@pytest.mark.parametrize("fmt", ["llamafactory", "trl", "training_args", "lora"])
def test_every_export_format_writes_its_file_with_o(fmt, capsys, tmp_path):
    """`export --format F -o FILE` writes FILE (nothing on stdout), in a form its tool reads."""
    out = tmp_path / f"export.{fmt}"
    assert main(["export", "--format", fmt, "--set", "finetuning_type=lora", "--set", "learning_rate=2e-4",
                 "-o", str(out)]) == 0
    assert capsys.readouterr().out == ""
    text = out.read_text()
    if fmt == "llamafactory":
        assert yaml.safe_load(text)["learning_rate"] == 2e-4
    elif fmt == "trl":
        compile(text, str(out), "exec")  # a runnable script: at least valid Python
        assert "learning_rate=0.0002" in text.replace(" ", "") or "2e-04" in text or "0.0002" in text
    elif fmt == "training_args":
        assert json.loads(text)["learning_rate"] == 2e-4
    else:
        assert LoraConfig(**json.loads(text)).r == TrainConfig().lora_rank


# ---------------------------------------------------------------- a CLI that answers at once (issue 27)
# Only a run needs torch, transformers and peft (6-14 s to import on two cores): checking a config,
# --help, a study spec's refusal and reading a stored study must not import them.

HEAVY = ("torch", "transformers", "peft", "trl", "bitsandbytes")
CLI_THEN_LIST_HEAVY = f"""
import json, sys
from nbkit.interfaces.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit:  # --help and argparse's own errors
    code = exit.code
print("heavy: " + json.dumps([m for m in {HEAVY!r} if m in sys.modules]), file=sys.stderr)
sys.exit(code)
"""


def nbkit_light(*args, cwd):
    """Run the CLI with ARGS in a fresh Python; returns (CompletedProcess, the heavy libraries it imported)."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-c", CLI_THEN_LIST_HEAVY, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    *rest, last = done.stderr.rstrip("\n").split("\n")
    assert last.startswith("heavy: "), done.stderr
    done.stderr = "\n".join(rest)
    return done, json.loads(last.removeprefix("heavy: "))


def test_help_and_show_config_import_no_heavy_library(tmp_path):
    done, heavy = nbkit_light("--help", cwd=tmp_path)
    assert done.returncode == 0 and "show-config" in done.stdout and "study" in done.stdout
    assert heavy == []
    done, heavy = nbkit_light("show-config", "--set", "lora_rank=16", cwd=tmp_path)
    assert done.returncode == 0 and "*lora_rank = 16  # " in done.stdout, done.stderr
    assert heavy == []


@pytest.mark.parametrize("args, named", [
    (["train", "--set", "learning_rate=-1"], "learning_rate=-1.0"),
    (["export", "--format", "llamafactory", "--set", "lora_rank=0"], "lora_rank=0"),
    (["train", "--set", "lr_scheduler_type=cosin"], "lr_scheduler_type='cosin'"),
])
def test_a_refused_config_imports_no_heavy_library(args, named, tmp_path):
    done, heavy = nbkit_light(*args, "--set", f"output_dir={tmp_path / 'runs'}", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("nbkit: error: ") and named in done.stderr, done.stderr
    assert heavy == []
    assert not (tmp_path / "runs").exists()


def test_a_refused_data_file_imports_no_heavy_library(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"instruction": "Say hi"}\n{"oops": 1\n')
    done, heavy = nbkit_light("train", "--set", "dataset=bad.jsonl", "--set", f"output_dir={tmp_path / 'runs'}",
                              cwd=tmp_path)
    assert (done.returncode == 2 and done.stderr.startswith("nbkit: error: ")
            and "bad.jsonl:" in done.stderr), done.stderr
    assert heavy == []
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("section, named", [
    ("scientific: {learning_rat: [1.0e-3, 3.0e-3]}", "learning_rat"),  # not a TrainConfig field
    ("scientific: {learning_rate: [-1.0, 3.0e-3]}", "learning_rate=-1.0"),  # a value TrainConfig refuses
])
def test_a_refused_study_spec_imports_no_heavy_library(section, named, tmp_path):
    (tmp_path / "bad.yaml").write_text(f"study_name: bad\nbase: {{model: tiny, num_train_epochs: 1}}\n{section}\n"
                                       f"sampler: grid\nstorage: sqlite:///{tmp_path}/studies.db\n")
    done, heavy = nbkit_light("study", "run", "bad.yaml", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("nbkit: error: ") and named in done.stderr, done.stderr
    assert heavy == []
    assert not (tmp_path / "studies.db").exists()  # refused before the storage was touched


# ---------------------------------------------------------------- study show and study best on a real study


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory, one_torch_thread):
    """A real two-trial grid study of tiny runs (a few seconds): (storage URL, the optuna.Study)."""
    from nbkit.core.study import run_study

    folder = tmp_path_factory.mktemp("study")
    spec = dict(study_name="lr", scientific={"learning_rate": [1e-3, 3e-3]}, sampler="grid",
                base=dict(model="tiny", dataset="arithmetic", max_samples=80, predict_with_generate=False,
                          num_train_epochs=2, warmup_ratio=0.1),
                storage=f"sqlite:///{folder}/studies.db", output_dir=str(folder / "runs"))
    study = run_study(spec, workers=1, progress=False)
    return spec["storage"], study


def test_study_show_prints_the_table_and_imports_no_heavy_library(tiny_study, tmp_path):
    storage, study = tiny_study
    done, heavy = nbkit_light("study", "show", "--storage", storage, "--study", "lr", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    header = done.stdout.splitlines()[0].split()  # the trials table: a row per trial
    assert "number" in header and "learning_rate" in header
    for trial in study.trials:
        assert re.search(rf"^ *{trial.number} +COMPLETE ", done.stdout, re.M), done.stdout
    assert heavy == []


@pytest.mark.parametrize("fmt", ["yaml", "llamafactory"])
def test_study_best_imports_no_heavy_library(fmt, tiny_study, tmp_path):
    storage, _ = tiny_study
    done, heavy = nbkit_light("study", "best", "--storage", storage, "--study", "lr", "--format", fmt, cwd=tmp_path)
    assert done.returncode == 0 and "learning_rate: " in done.stdout, done.stderr
    assert heavy == []


def test_study_best_writes_the_best_trials_config_that_train_reads(tiny_study, tmp_path, capsys):
    """The YAML names the held knobs and the lowest-loss trial's learning rate, trains for that run's best
    epoch, and reads back (TrainConfig.from_dict, as `train --config` does) as the same config."""
    from nbkit.core.runs import load_run
    from nbkit.core.study_export import best_config

    storage, study = tiny_study
    out = tmp_path / "best.yaml"
    assert main(["study", "best", "--storage", storage, "--study", "lr", "-o", str(out)]) == 0
    assert capsys.readouterr().out == ""
    written = yaml.safe_load(out.read_text())
    lowest = min(study.trials, key=lambda t: t.value)
    assert written["learning_rate"] == lowest.params["learning_rate"]
    assert (written["max_samples"], written["warmup_ratio"], written["model"]) == (80, 0.1, "tiny")
    best_epoch = load_run(lowest.user_attrs["run_dir"]).best_epoch
    assert TrainConfig.from_dict(written).num_train_epochs == (best_epoch if best_epoch >= 1 else 2)
    assert TrainConfig.from_dict(written) == best_config(study)
    assert main(["show-config", "--config", str(out)]) == 0  # the CLI's --config reads it


@pytest.mark.parametrize("fmt", ["llamafactory", "trl", "training_args"])
def test_study_best_in_a_tools_format_is_what_export_writes_for_that_config(fmt, tiny_study, tmp_path, capsys):
    storage, _ = tiny_study
    assert main(["study", "best", "--storage", storage, "--study", "lr", "-o", str(tmp_path / "best.yaml")]) == 0
    assert main(["study", "best", "--storage", storage, "--study", "lr", "--format", fmt]) == 0
    from_study = capsys.readouterr().out
    assert main(["export", "--format", fmt, "--config", str(tmp_path / "best.yaml")]) == 0
    assert from_study == capsys.readouterr().out


def hand_made_study(folder, name, states, spec=True, db="hand.db"):
    """A study stored in folder/db with one trial per state ("pruned", "diverged", "failed", "completed":
    a curve with its minimum at epoch 2 and no run folder), nothing trained. Returns the storage URL."""
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    storage = f"sqlite:///{folder}/{db}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=storage, study_name=name, load_if_exists=True)
    if spec:
        study.set_user_attr("nbkit_spec", {"study_name": name, "base": {"model": "tiny"}, "fixed": {}})
    made = {"pruned": dict(state=TrialState.PRUNED, intermediate_values={1: 2.0}),
            "diverged": dict(state=TrialState.COMPLETE, value=float("inf")),
            "failed": dict(state=TrialState.FAIL, user_attrs={"error": "RuntimeError: boom"}),
            "completed": dict(state=TrialState.COMPLETE, value=1.5, intermediate_values={1: 1.7, 2: 1.5, 3: 1.6})}
    for state in states:
        study.add_trial(create_trial(params={"learning_rate": 3e-3},
                                     distributions={"learning_rate": FloatDistribution(1e-4, 1e-2, log=True)},
                                     **made[state]))
    return storage


@pytest.mark.parametrize("states, spec, says", [
    (["pruned", "diverged", "pruned", "failed"], True, "its 4 trials: 2 pruned, 1 diverged, 1 failed"),
    ([], True, "no trial has run yet"),
    (["diverged"], False, "was not made by nbkit"),
])
def test_study_best_without_a_usable_trial_is_one_error_line(states, spec, says, tmp_path, capsys):
    storage = hand_made_study(tmp_path, "nothing_usable", states, spec)
    out = tmp_path / "best.yaml"
    assert main(["study", "best", "--storage", storage, "--study", "nothing_usable", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nbkit: error: study 'nothing_usable' ") and says in err, err
    assert err.count("\n") == 1 and not out.exists()


def test_study_best_of_a_study_not_stored_names_the_ones_that_are(tmp_path, capsys):
    storage = hand_made_study(tmp_path, "other", ["pruned"])
    assert main(["study", "best", "--storage", storage, "--study", "missing"]) == 2
    err = capsys.readouterr().err
    assert "'missing'" in err and "other" in err


def test_the_readmes_study_best_line_runs_as_written(tmp_path):
    """The README's `study best` line, run as written (default storage runs/studies.db) on a stored study of
    that name whose runs are not on this machine: the YAML it writes is that trial's config, and the CLI's
    --config reads it."""
    text = (REPO_ROOT / "README.md").read_text()
    lines = [line.split("  #")[0].split() for block in re.findall(r"```bash\n(.*?)```", text, re.S)
             for line in block.splitlines()]
    [words] = [w for w in lines if w[1:5] == ["-m", "nbkit", "study", "best"]]
    name, output = words[words.index("--study") + 1], words[words.index("-o") + 1]
    (tmp_path / "runs").mkdir()
    hand_made_study(tmp_path / "runs", name, ["pruned", "completed"], db="studies.db")
    done = nbkit(*words[3:], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    cfg = TrainConfig.from_yaml(tmp_path / output)
    assert (cfg.model, cfg.learning_rate, cfg.num_train_epochs) == ("tiny", 3e-3, 2)  # epochs: the curve's minimum
    assert nbkit("show-config", "--config", output, cwd=tmp_path).returncode == 0


# ---------------------------------------------------------------- the language: NBKIT_LANG


def test_a_bad_nbkit_lang_is_one_error_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("NBKIT_LANG", "klingon")
    monkeypatch.setitem(i18n._state, "language", None)  # as in a new process: the language not read yet
    assert main(["show-config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nbkit: error: NBKIT_LANG='klingon': allowed: 'en', 'zh'") and "Traceback" not in err
    done = subprocess.run([sys.executable, "-m", "nbkit", "--help"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "NBKIT_LANG": "klingon"})
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert done.stderr.startswith("nbkit: error: NBKIT_LANG='klingon'") and "Traceback" not in done.stderr


def test_nbkit_lang_zh_gives_the_help_and_the_messages_in_chinese(tmp_path, capsys):
    """The real catalogue (nbkit/locale/zh_CN/LC_MESSAGES/nbkit.po): help, printed lines and the CLI's own errors
    in Chinese; "nbkit: error: " stays as it is, for the scripts that grep it."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "NBKIT_LANG": "zh"}
    run = lambda *args: subprocess.run([sys.executable, "-m", "nbkit", *args], cwd=tmp_path,  # noqa: E731
                                       capture_output=True, text=True, timeout=600, env=env)
    done = run("--help")
    assert done.returncode == 0, done.stderr
    assert "nbkit：微调超参数实验室" in done.stdout and "运行一次微调并打印其摘要" in done.stdout, done.stdout
    done = run("class", "join", "--help")
    assert "你的名字，按看板上显示的样子" in done.stdout and "课堂的数据库（默认：" in done.stdout, done.stdout
    done = run("export", "--format", "llamafactory", "--set", "oops")
    assert done.returncode == 2 and done.stderr.startswith("nbkit: error: --set 'oops'：应为 KEY=VALUE"), done.stderr
    set_language("zh")
    try:
        assert main(["export", "--format", "llamafactory", "-o", str(tmp_path / "lf.yaml")]) == 0
        assert capsys.readouterr().err == f"已写入 {tmp_path / 'lf.yaml'}\n"
    finally:
        set_language("en")
