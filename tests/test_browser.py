"""The panel in a real JupyterLab, driven by headless Debian Chromium through Python playwright.

Opens notebooks/01_learning_rate.ipynb (a copy, in a temporary folder, so the server never saves
outputs or runs into the repository), runs all cells (the whole chapter, at its defaults), moves
the panel's learning-rate slider one step, presses Train, waits for the live plot to update and
checks that the new run joined the runs table with the new LR.

Needs `apt-get install chromium` (Debian) and `pip install playwright`; never `playwright
install`: we drive the system chromium. Without them this test FAILS (it is part of the suite).
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHAPTER = Path(__file__).resolve().parent.parent / "notebooks" / "01_learning_rate.ipynb"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-first-run"]
TOKEN = "nbkit-browser-test"
# JupyterLab settings: no news / update toasts over the screenshot; every cell rendered (no windowing)
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}
TIMEOUT_MS = 90_000  # kernel start + importing torch/transformers on a busy two-core machine
CHAPTER_TIMEOUT_MS = 600_000  # Run All Cells: the chapter's runs (~2 min headless) on one thread
INSTALL_HINT = ("The browser test needs Debian chromium and Python playwright: "
                "`apt-get update && apt-get install -y chromium` and `pip install playwright` "
                "(never `playwright install`: the test drives /usr/bin/chromium).")


def require_browser_tools():
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"{CHROMIUM} not found")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("Python package playwright not installed")
    if missing:
        pytest.fail(f"{'; '.join(missing)}. {INSTALL_HINT}", pytrace=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    """`jupyter lab` on a free local port, its output kept in a log file."""

    def __init__(self, root: Path, work: Path, env: dict):
        settings, workspaces = work / "lab-settings", work / "lab-workspaces"
        for rel, body in LAB_SETTINGS.items():
            (settings / rel).parent.mkdir(parents=True, exist_ok=True)
            (settings / rel).write_text(json.dumps(body))
        workspaces.mkdir(exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = work / f"jupyterlab-{self.port}.log"
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", f"--port={self.port}",
             "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
             f"--LabApp.workspaces_dir={workspaces}"],
            env=dict(env, JUPYTERLAB_SETTINGS_DIR=str(settings)), stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, seconds=60):
        deadline = time.time() + seconds
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with code {self.process.returncode}")
            try:
                urllib.request.urlopen(f"{self.url}/api/status?token={TOKEN}", timeout=2)
                return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"jupyter lab did not answer within {seconds} s")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self._log.close()


def drive_panel(page, url: str, notebook: str, screenshot: Path) -> dict:
    """Run the notebook, move the LR slider, press Train; returns what was measured."""
    from playwright.sync_api import expect

    t0 = time.time()
    page.goto(f"{url}/lab/tree/{notebook}?reset&token={TOKEN}")  # ?reset: no tabs from an old workspace
    # the toolbar's execution indicator says 'idle' while the kernel is still "Initializing", and
    # Run All Cells clicked then is silently lost: wait for the status bar's "| Idle" instead
    page.locator(".jp-StatusBar-TextItem", has_text="| Idle").first.wait_for(timeout=TIMEOUT_MS)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()

    outputs = page.locator(".jp-OutputArea")
    handle = outputs.locator(".widget-hslider .noUi-handle:visible").first  # learning_rate: the first control
    handle.wait_for(state="visible", timeout=CHAPTER_TIMEOUT_MS)  # the panel is the chapter's last widget
    table = outputs.locator("table.nbkit-runs").first
    table.wait_for(timeout=TIMEOUT_MS)
    rows_before = table.locator("tbody tr").count()
    readout = outputs.locator(".widget-hslider .widget-readout").first
    before = readout.inner_text()
    handle.focus()
    page.keyboard.press("ArrowRight")  # one step of the log slider: x 10^0.1
    expect(readout).not_to_have_text(before)
    after = readout.inner_text()
    t_ready = time.time()

    # buttons scoped to the output area: the file browser lists same-named items
    outputs.get_by_role("button", name="Train", exact=True).first.click()
    t_click = time.time()
    plot = outputs.locator(".widget-output img").first  # the live plot is the panel's first image
    plot.wait_for(timeout=TIMEOUT_MS)
    first_point = time.time() - t_click
    first_src = plot.get_attribute("src")
    # redrawn as training goes on (each redraw replaces the <img> element: look it up again each time)
    page.wait_for_function(
        "src => { const img = document.querySelector('.jp-OutputArea .widget-output img');"
        " return img !== null && img.getAttribute('src') !== src; }", arg=first_src, timeout=TIMEOUT_MS)
    status = outputs.locator(".widget-html", has_text="finished in").first
    status.wait_for(timeout=TIMEOUT_MS)

    table = outputs.locator("table.nbkit-runs").first
    header = table.locator("thead tr").last.locator("th").all_inner_texts()
    rows = [row.locator("th, td").all_inner_texts() for row in table.locator("tbody tr").all()]
    table.scroll_into_view_if_needed()  # the notebook scrolls inside its panel: bring plot and table into view
    page.screenshot(path=str(screenshot))
    return {"before": before, "after": after, "header": header, "rows": rows, "rows_before": rows_before,
            "status": status.inner_text(),
            "first_point_s": first_point, "ready_s": t_ready - t0, "train_s": time.time() - t_click}


def test_panel_in_jupyterlab(tmp_path):
    require_browser_tools()
    from playwright.sync_api import sync_playwright

    t0 = time.time()
    root = tmp_path / "lab"
    root.mkdir()
    shutil.copy(CHAPTER, root / CHAPTER.name)  # its runs go to root/runs (output_dir="runs")
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)  # MPLBACKEND=Agg would silently drop the notebook's images
    # the kernel shares two cores with chromium and the server: two torch threads would spin
    # against them (a step can take seconds instead of ~50 ms)
    env.setdefault("OMP_NUM_THREADS", "1")
    screenshot = tmp_path / "panel.png"
    failures = []
    for attempt in (1, 2):  # one retry: a cold, busy machine can miss a timeout once
        server = LabServer(root, tmp_path, env)
        try:
            server.wait_ready()
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
                page = browser.new_page(viewport={"width": 1200, "height": 1400})
                try:
                    seen = drive_panel(page, server.url, CHAPTER.name, screenshot)
                except Exception:
                    page.screenshot(path=str(tmp_path / f"failed-{attempt}.png"), full_page=True)
                    raise
                finally:
                    browser.close()
            break
        except Exception as err:  # noqa: BLE001 - retried once, then reported with the server log
            failures.append(f"attempt {attempt}: {type(err).__name__}: {err}\n"
                            f"screenshot: {tmp_path / f'failed-{attempt}.png'}\n--- server log ---\n{server.log()}")
        finally:
            server.stop()
    else:
        pytest.fail("\n\n".join(failures), pytrace=False)
    if failures:
        print("first attempt failed (passed on the retry):\n" + failures[0])

    print(f"screenshot: {screenshot}")
    print(f"slider {seen['before']} -> {seen['after']}; notebook ready {seen['ready_s']:.1f} s; first plotted "
          f"point {seen['first_point_s']:.2f} s after Train; run finished {seen['train_s']:.1f} s after Train; "
          f"total {time.time() - t0:.1f} s")
    assert float(seen["after"]) > float(seen["before"])
    # the new run is in the table, with the LR the slider showed (readout rounds to 3 digits)
    assert "learning_rate" in seen["header"] and "status" in seen["header"], seen["header"]
    lr_col, status_col = seen["header"].index("learning_rate"), seen["header"].index("status")
    assert len(seen["rows"]) == seen["rows_before"] + 1, seen["rows"]  # one new run
    row = seen["rows"][-1]  # the newest run is the last row
    assert float(row[lr_col]) == pytest.approx(float(seen["after"]), rel=5e-3)
    assert row[status_col] == "completed"
    assert "best epoch" in seen["status"]
