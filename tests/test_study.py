"""Studies through their front door (nbkit.core.study) and the command line, as a user runs them:
`python -m nbkit study run` then resumed, a bad spec in one line, `study show` with its figures. Each part
has its own test module, named after it: test_study_spec, _storage, _trials, _queue, _workers, _analysis."""
import os
import subprocess
import sys

import pytest
import yaml

from nbkit.core.study import load_study, run_study
from nbkit.interfaces.cli import main
from study_helpers import REPO_ROOT, spec_dict

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # in-process trials: 2 threads on busy cores spin


def test_study_run_from_the_command_line_then_resumed(tmp_path, capsys):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec_dict(tmp_path, study_name="cli")))
    assert main(["study", "run", str(tmp_path / "s.yaml"), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "trial 0 COMPLETE" in out and "trial 1 COMPLETE" in out
    assert "study cli: 2 COMPLETE" in out and "best: trial" in out
    progress = [line for line in out.splitlines() if line.startswith("progress: ")]  # piped: a line per change
    assert progress and progress[-1].startswith("progress: 2 of 2 ended (0 pruned, 0 failed), 0 running, 0 left")
    study = load_study(f"sqlite:///{tmp_path}/studies.db", "cli")
    assert main(["study", "run", str(tmp_path / "s.yaml"), "--workers", "1"]) == 0  # resumed: nothing to do
    assert "trial 0" not in capsys.readouterr().out
    assert load_study(f"sqlite:///{tmp_path}/studies.db", "cli").trials == study.trials


def test_study_run_with_a_bad_spec_prints_one_line_and_exits_2(tmp_path):
    bad = spec_dict(tmp_path, study_name="bad", nuisance={"lora_rnk": [4, 8]})
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    done = subprocess.run([sys.executable, "-m", "nbkit", "study", "run", "bad.yaml"], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "nuisance.lora_rnk" in lines[0] and "show-config" in lines[0], done.stderr
    assert not (tmp_path / "studies.db").exists()


def test_study_show_prints_the_trials_and_writes_the_figures(tmp_path, capsys):
    spec = spec_dict(tmp_path, study_name="shown", scientific={"learning_rate": [1e-3, 3e-3, 1e-2]},
                     nuisance={"warmup_ratio": [0.0, 0.1]})
    study = run_study(spec, workers=1, progress=False)
    storage = f"sqlite:///{tmp_path}/studies.db"
    assert main(["study", "show", "--storage", storage, "--study", "shown", "--plots", str(tmp_path / "fig")]) == 0
    out = capsys.readouterr().out
    table = out.split("\n\n")[0].splitlines()
    assert table[0].split()[:4] == ["number", "state", "run_status", "value"]
    assert [int(line.split()[0]) for line in table[1:]] == [t.number for t in study.trials]
    assert "isolation:" in out and "importance:" in out and "big enough?" in out
    best = min(study.trials, key=lambda t: t.value)  # a list is choices, not a range: its winner, never a warning
    assert "warning: learning_rate" not in out
    assert ("value listed: nothing past it was tried" in out) == (best.params["learning_rate"] in (1e-3, 1e-2))
    written = sorted(p.name for p in (tmp_path / "fig").glob("*.png"))
    assert written and all(f"wrote {tmp_path / 'fig' / name}" in out for name in written)
    assert main(["study", "show", "--storage", storage]) == 0  # no --study: the names stored
    assert capsys.readouterr().out.split() == ["shown"]
