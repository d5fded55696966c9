"""The README's commands run as written: the five-line example (fine-tuning measurably helps), papermill's
parameter listing and a chapter run with the README's overrides; and README.zh.md (notebooks/README.zh.md) keeps up
with README.md: a command, code block, name in backticks, section or table row added to the English is reported
until the Chinese has it."""
import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    return re.search(r"```python\n(.*?)```", text, re.S).group(1)


def test_readme_example_prints_accuracy_before_and_after(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", readme_example()], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    match = re.search(r"exact match: base (\d+)% -> fine-tuned (\d+)%", out.stdout)
    assert match, out.stdout
    before, after = map(int, match.groups())
    assert after > before
    assert (tmp_path / "runs").is_dir()  # the run went to the store in the caller's folder


def readme_commands(program: str) -> list[list[str]]:
    """The README's shell lines that run `.venv/bin/<program>`, split into words (comments dropped)."""
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    lines = [line.split("  #")[0].split() for block in blocks for line in block.splitlines()]
    return [words for words in lines if words and words[0] == f".venv/bin/{program}"]


def run_as_written(words: list[str], cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    """A README line run from the repository's root, as the README says, with this Python."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("MPLBACKEND", None)
    program = words[0].removeprefix(".venv/bin/")
    command = [sys.executable, *words[1:]] if program == "python" else [sys.executable, "-m", program, *words[1:]]
    return subprocess.run([*command, *extra], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=1500)


def test_the_papermill_help_lists_every_parameter_with_its_default():
    [words] = [w for w in readme_commands("papermill") if "--help-notebook" in w]
    done = run_as_written(words, REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    notebook = REPO / words[words.index("--help-notebook") + 1]
    cell = next(c for c in nbformat.read(notebook, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    for node in ast.parse(cell.source).body:  # as the cell writes them: `learning_rate: float = 1e-3`
        listed = f"{node.target.id}: {node.annotation.id} (default {ast.get_source_segment(cell.source, node.value)})"
        assert listed in done.stdout, f"not listed: {listed}\n{done.stdout}"


@pytest.mark.extended  # minutes: make test-extended (test-all), not CI's 45
def test_the_papermill_example_runs_the_chapter_with_its_overrides(tmp_path):
    """The README's `papermill ... -p learning_rate 3e-3 -p sweep_epochs 3`, as written (its output goes to
    a temporary folder): the chapter runs, records those values, and its sweep trains for 3 epochs."""
    [words] = [w for w in readme_commands("papermill") if "-p" in w]
    overrides = {words[i + 1]: words[i + 2] for i, w in enumerate(words) if w == "-p"}
    words = [str(tmp_path / "out.ipynb") if w == "out.ipynb" else w for w in words]
    done = run_as_written(words, REPO, "-p", "output_dir", str(tmp_path / "runs"))
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "runs" / Path(words[1]).stem / "results.json").read_text())
    for name, value in overrides.items():
        assert results["parameters"][name] == type(results["parameters"][name])(value), name
    sweep_epochs = {json.loads(p.read_text())["num_train_epochs"]
                    for p in (tmp_path / "runs").rglob("config.json") if "learning_rate=" in p.parent.name}
    assert sweep_epochs == {int(overrides["sweep_epochs"])}


def test_the_readme_study_runs_and_shows_as_written(tmp_path):
    """The README's study: its YAML is a valid study as written; shortened to 2 trials of one epoch on
    80 rows (as written it trains for minutes), the README's `study run` and `study show` lines run it
    and show its table, warnings, isolation and figures."""
    import yaml

    from nbkit.core.study import StudySpec

    text = (REPO / "README.md").read_text()
    spec = yaml.safe_load(re.search(r"```yaml\n(.*?)```", text, re.S).group(1))
    StudySpec.from_dict(spec).check()  # every knob, range and value as the README writes them
    spec["n_trials"] = 2
    spec["base"].update(num_train_epochs=1, max_samples=80, predict_with_generate=False)
    commands = [w for w in readme_commands("python") if w[1:4] in (["-m", "nbkit", "study"],)]
    [run] = [w for w in commands if w[4] == "run"]
    [show] = [w for w in commands if w[4] == "show"]
    (tmp_path / run[5]).write_text(yaml.safe_dump(spec))  # the file the README's line names
    done = run_as_written(run, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"study {spec['study_name']}: " in done.stdout and "best: trial" in done.stdout, done.stdout
    assert (tmp_path / "runs" / "studies.db").is_file()  # the default storage, beside the run store
    done = run_as_written(show, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "isolation:" in done.stdout and "importance:" in done.stdout, done.stdout
    figures = tmp_path / show[show.index("--plots") + 1]
    assert sorted(p.name for p in figures.glob("*.png")) and f"wrote {show[show.index('--plots') + 1]}" in done.stdout


# ---------------------------------------------------------------- README.zh.md keeps up with README.md

ZH_ONLY_SECTIONS = ("## 术语表",)  # the glossary, at the start of the Chinese book: no English counterpart


def code_of(language: str, block: str) -> str:
    """A code block without its prose, which a translation translates: a comment after the code, and in the
    layout block (the one without a language) each path's description; the paths and the code itself stay."""
    if language:
        return "\n".join(re.sub(r"\s+#\s.*$", "", line).rstrip() for line in block.splitlines())
    return "\n".join(m.group(1) for line in block.splitlines() if (m := re.match(r"( {0,4}\S+)", line)))


def readme_parts(text: str) -> dict:
    """What a translation must keep: the code blocks (their code), the inline code, the headings per level, the
    table rows (after dropping the Chinese-only sections)."""
    kept = [part for part in re.split(r"(?m)^(?=## )", text) if not part.startswith(ZH_ONLY_SECTIONS)]
    text = "".join(kept)
    blocks = [code_of(language, block) for language, block in re.findall(r"```([^\n]*)\n(.*?)```", text, re.S)]
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    return {"blocks": blocks, "inline": {" ".join(code.split()) for code in re.findall(r"`([^`]+)`", prose)},
            "headings": [len(re.findall(rf"(?m)^{'#' * level} ", prose)) for level in (1, 2, 3, 4)],
            "table rows": len(re.findall(r"(?m)^\|", prose))}


def readme_drift(english: str, chinese: str) -> list[str]:
    """How a Chinese README fell behind its English one: a command, a code block, a name in backticks, a section
    or a table row the English has and the Chinese does not. A file.md may be named as its file.zh.md, a notebook
    as its notebooks/zh/ copy."""
    en, zh = readme_parts(english), readme_parts(chinese)
    problems = [f"code block {i + 1} differs: {a[:60]!r} (English) vs {b[:60]!r}"
                for i, (a, b) in enumerate(zip(en["blocks"], zh["blocks"])) if a != b]
    if len(en["blocks"]) != len(zh["blocks"]):
        problems.append(f"{len(en['blocks'])} code blocks in English, {len(zh['blocks'])} in Chinese")
    for code in sorted(en["inline"]):
        editions = {code, code.replace(".md", ".zh.md"), code.replace("notebooks/", "notebooks/zh/")}
        if not editions & zh["inline"]:
            problems.append(f"`{code}` is not in the Chinese README")
    for what in ("headings", "table rows"):
        if en[what] != zh[what]:
            problems.append(f"{what}: {en[what]} in English, {zh[what]} in Chinese")
    return problems


@pytest.mark.parametrize("english", ["README.md", "notebooks/README.md"])
def test_the_chinese_readme_says_what_the_english_one_says(english):
    chinese = REPO / english.replace(".md", ".zh.md")
    assert readme_drift((REPO / english).read_text(), chinese.read_text(encoding="utf-8")) == []


def test_readme_drift_names_a_new_command_a_section_and_a_changed_block():
    english = "# T\n\n## Two commands\n\n`make lab`, `make test`\n\n```bash\nmake test\n```\n\n## New\n\n| a |\n"
    chinese = "# T\n\n## 术语表\n\n| x |\n\n## 两条命令\n\n`make lab`\n\n```bash\nmake tests\n```\n"
    assert readme_drift(english, chinese) == [
        "code block 1 differs: 'make test' (English) vs 'make tests'", "`make test` is not in the Chinese README",
        "headings: [1, 2, 0, 0] in English, [1, 1, 0, 0] in Chinese", "table rows: 1 in English, 0 in Chinese"]
    assert readme_drift(english, english.replace("## New", "## 新")) == []


def test_readme_drift_lets_comments_and_layout_descriptions_be_translated_not_the_code_or_paths():
    english = ("```bash\nmake lab   # opens JupyterLab\n```\n\n```\nnbkit/   the package\n  core/  the trainer,\n"
               "         in import order\n```\n")
    chinese = "```bash\nmake lab   # 打开 JupyterLab\n```\n\n```\nnbkit/   包\n  core/  训练器，按导入顺序\n```\n"
    assert readme_drift(english, chinese) == []
    assert readme_drift(english, chinese.replace("make lab", "make lab LANG=zh")) == [
        "code block 1 differs: 'make lab' (English) vs 'make lab LANG=zh'"]
    assert readme_drift(english, chinese.replace("  core/", "  views/")) == [
        "code block 2 differs: 'nbkit/\\n  core/' (English) vs 'nbkit/\\n  views/'"]
