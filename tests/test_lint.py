"""The code base passes ruff (issue 28): pycodestyle errors and warnings and pyflakes, at the house width
of 120, on the package, the tests, the benchmarks and the chapter notebooks (settings: pyproject.toml)."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHECKED = ["nbkit", "tests", "bench", "notebooks"]


def test_ruff_finds_nothing():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", *CHECKED], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"ruff check {' '.join(CHECKED)}:\n{done.stdout}{done.stderr}"
