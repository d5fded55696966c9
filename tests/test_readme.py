"""The README's five-line example runs as written, and fine-tuning measurably helps."""
import os
import re
import subprocess
import sys
from pathlib import Path

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
