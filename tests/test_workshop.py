"""The workshop's ways in (nbkit.interfaces.workshop, `python -m nbkit class ...`, `nbkit.classroom`): a class
spec names a chapter, the shipped specs read, the commands create, join and show a class and refuse bad input in
one line, optuna-dashboard serves the class. Real SQLite storage, real processes, tiny runs."""
import os
import re
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml

import nbkit
from optuna.trial import TrialState

from nbkit.core.classroom import STUDENT_NICE, class_runs, create_class, open_class
from nbkit.core.i18n import set_language
from nbkit.core.runs import load_run
from nbkit.core.study import StudyError
from nbkit.interfaces.profiles import NOTEBOOKS_DIR, chapter_names
from nbkit.interfaces.workshop import chapter_name, create, read_class_spec
from study_helpers import GRID, REPO_ROOT, class_spec, free_port


def test_nbkit_classroom_is_the_workshop_module():
    from nbkit import classroom
    from nbkit.interfaces import workshop

    assert classroom is workshop is nbkit.classroom
    assert callable(classroom.create) and callable(classroom.join) and callable(classroom.board)


def test_a_class_spec_names_a_chapter_and_a_wrong_one_is_refused_before_anything_is_written(tmp_path):
    d = class_spec(tmp_path).to_dict() | {"chapter": "1"}
    spec, chapter = read_class_spec(d)
    assert chapter == "01_learning_rate" == chapter_name("01") == chapter_name(1)
    assert spec.study_name == "lr101"
    for wrong, says in [("99", "chapter='99' is not a chapter; allowed: 00_quickstart, 01_learning_rate"),
                        (None, "chapter=None is not a chapter")]:
        with pytest.raises(StudyError, match=says):
            create({**d, "chapter": wrong})
        assert not (tmp_path / "class.db").exists()
    with pytest.raises(StudyError, match="study spec field 'chapters' is unknown"):
        create({**d, "chapters": "01"})
    study = create({**d, "storage": f"sqlite:///{tmp_path}/other.db"}, storage=f"sqlite:///{tmp_path}/class.db")
    assert study.user_attrs["nbkit_class"] == {"chapter": "01_learning_rate"} and (tmp_path / "class.db").exists()


def test_a_wrong_chapter_is_refused_in_chinese(tmp_path):
    """The real catalogue (nbkit/locale/zh_CN/LC_MESSAGES/nbkit.po)."""
    set_language("zh")
    try:
        with pytest.raises(StudyError, match="^chapter='99' 不是一个章节；允许的值：00_quickstart, 01_learning_rate"):
            chapter_name("99")
        with pytest.raises(StudyError, match="^课堂规格：chapter=None 不是一个章节"):
            read_class_spec(class_spec(tmp_path).to_dict())
    finally:
        set_language("en")


def test_the_shipped_class_specs_read_and_name_an_existing_chapter():
    specs = sorted((NOTEBOOKS_DIR / "classes").glob("*.yaml"))
    assert specs
    for path in specs:
        spec, chapter = read_class_spec(path)
        assert chapter in chapter_names() and path.stem == chapter
        assert spec.trial_count() >= 20  # a room of students: one configuration each, and some to spare


# ---------------------------------------------------------------- the command line

def nbkit_cli(*args, timeout=120, cwd=None):
    return subprocess.run([sys.executable, "-m", "nbkit", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd or REPO_ROOT)


def test_class_create_and_join_from_the_command_line(tmp_path):
    spec = tmp_path / "class.yaml"
    spec.write_text(yaml.safe_dump({**class_spec(tmp_path).to_dict(), "chapter": "01_learning_rate"}))
    url = f"sqlite:///{tmp_path}/class.db"
    created = nbkit_cli("class", "create", str(spec))
    assert created.returncode == 0, created.stderr
    assert "class 'lr101' (chapter 01_learning_rate)" in created.stdout and "3 configurations" in created.stdout
    assert f"class join lr101 --storage {url} --student NAME" in created.stdout
    joined = nbkit_cli("class", "join", "lr101", "--storage", url, "--student", "ana", "--threads", "1",
                       "--output-dir", str(tmp_path / "runs"), timeout=300)
    assert joined.returncode == 0, joined.stderr
    assert joined.stdout.count(" COMPLETE ") == 3 and "ana trained 3 configuration(s)" in joined.stdout
    assert f"training at nice {min(19, os.nice(0) + STUDENT_NICE)} " in joined.stdout  # yields to the board's process
    rows = class_runs(open_class("lr101", url))
    assert sorted(r["params"]["learning_rate"] for r in rows) == GRID and {r["student"] for r in rows} == {"ana"}
    assert all(load_run(t.user_attrs["run_dir"]).status == "completed" for t in open_class("lr101", url).trials)


def test_class_commands_refuse_bad_input_in_one_line(tmp_path):
    spec = tmp_path / "class.yaml"
    spec.write_text(yaml.safe_dump({**class_spec(tmp_path).to_dict(), "chapter": "nope"}))
    url = f"sqlite:///{tmp_path}/class.db"
    for args, says in [(("create", str(spec)), "chapter='nope' is not a chapter"),
                       (("join", "lr101", "--storage", url, "--student", "ana"), "no such file"),
                       (("join", "lr101", "--storage", url, "--student", "ana", "--nice", "25"),
                        "--nice 25: allowed: a whole number from 0"),
                       (("board", "lr101", "--storage", url), "no such file")]:
        result = nbkit_cli("class", *args)
        assert result.returncode == 2 and result.stderr.startswith("nbkit: error: ") and says in result.stderr, result
        assert "Traceback" not in result.stderr and not (tmp_path / "class.db").exists()


def test_class_dashboard_serves_the_class_in_optuna_dashboard(tmp_path):
    study = create_class(class_spec(tmp_path), "01_learning_rate")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "nbkit", "class", "dashboard", "lr101", "--storage",
                               f"sqlite:///{tmp_path}/class.db", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO_ROOT)
    try:
        first = server.stdout.readline()
        assert f"http://127.0.0.1:{port}/dashboard/studies/{study._study_id}" in first, first
        deadline, body = time.time() + 60, None
        while body is None and time.time() < deadline:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5).read().decode()
            except OSError:
                time.sleep(0.5)
        assert body is not None and '"study_name": "lr101"' in body.replace('":"', '": "')
    finally:
        server.terminate()
        server.wait(30)
    assert not [t for t in study.trials if t.state != TrialState.WAITING]  # the dashboard only reads


def workshop_commands() -> list[list[str]]:
    """The `nbkit class` command lines of the README's "Teaching a workshop" section, in order, split into words."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("## Teaching a workshop", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    return [line.split() for block in blocks for line in block.splitlines()
            if line.startswith(".venv/bin/python -m nbkit class")]


def test_the_readmes_workshop_commands_work_as_written(tmp_path):
    commands = workshop_commands()
    assert [c[4] for c in commands] == ["create", "board", "join", "dashboard", "board"]
    storage = f"sqlite:///{tmp_path}/class.db"
    said = []
    for words in commands:
        args = [{"sqlite:////srv/nbkit/class.db": storage, "board/": str(tmp_path / "board"),
                 "0.0.0.0": "127.0.0.1", "8080": str(free_port())}.get(w, w) for w in words[3:]]
        if words[4] == "dashboard":  # a server: it answers, then it is stopped
            server = subprocess.Popen([sys.executable, "-m", "nbkit", *args], cwd=REPO_ROOT, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            said.append(server.stdout.readline())
            server.terminate()
            server.wait(30)
            continue
        result = nbkit_cli(*args, timeout=600)
        assert result.returncode == 0, (words, result.stdout[-2000:], result.stderr[-2000:])
        said.append(result.stdout)
    created, empty, joined, dashboard, last = said
    assert "class 'lr101' (chapter 01_learning_rate)" in created and "28 configurations" in created
    assert "0 of 28 configurations done" in empty
    assert joined.count(" COMPLETE ") == 2 and "ana trained 2 configuration(s)" in joined
    assert "optuna-dashboard: class 'lr101'" in dashboard
    assert "2 of 28 configurations done" in last and "ana" in last.split("leaderboard")[1]
    assert sorted(p.name for p in (tmp_path / "board").glob("*.png")) == ["curves.png", "isolation.png", "knobs.png"]
