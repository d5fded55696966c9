"""The workshop's hub (deploy/jupyterhub/jupyterhub_config.py), started for real: JupyterHub from PyPI with its
proxy from npm on local ports, the shipped configuration as it is (a test service token added beside it), two
students logged in with the room's password through the hub's login form, each server spawned, and in each a
run of chapter 1's class: the panel's Class row filled in from the hub (class, storage, the student's hub name),
Join, Train next; the class then holds both runs with the students' names. `make test-hub` (part of test-all)."""
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from nbkit.core.classroom import STUDENT_NICE, class_runs, open_class
from nbkit.interfaces.workshop import create
from study_helpers import REPO_ROOT, free_port

pytestmark = pytest.mark.hub
CONFIG = REPO_ROOT / "deploy" / "jupyterhub" / "jupyterhub_config.py"
STUDENTS = ("ana", "bo")
CLASS_RUN = """
from nbkit import TrainConfig
from nbkit.views.ui import panel
p = panel(TrainConfig(model="tiny"), ["learning_rate", "warmup_ratio"])
p._on_join()
p._on_train_next()
p.join(600)
print("RESULT", p.seat.student if p.seat else None, [r.status for r in p.runs], p.class_status.value)
"""
PRIORITY = "import os; print('NICE', os.nice(0))"


def wait_for(check, seconds, what):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            value = check()
        except requests.RequestException:
            value = None
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"waited {seconds} s for {what}")


@pytest.fixture
def hub(tmp_path):
    if shutil.which("configurable-http-proxy") is None:
        pytest.fail("configurable-http-proxy is missing: `make hub-proxy` installs it from npm")
    token, port = secrets.token_hex(16), free_port()
    extra = tmp_path / "test_config.py"
    extra.write_text(f"load_subconfig({str(CONFIG)!r})\n"
                     f"c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:{free_port()}'\n"
                     f"c.JupyterHub.hub_bind_url = 'http://127.0.0.1:{free_port()}'\n"
                     f"c.JupyterHub.services = [{{'name': 'nbkit-test', 'api_token': {token!r}}}]\n"
                     "c.JupyterHub.load_roles = [{'name': 'nbkit-test', 'services': ['nbkit-test'], 'scopes': "
                     "['admin:users', 'admin:servers', 'access:servers']}]\n")
    root = tmp_path / "hub"
    env = {**os.environ, "NBKIT_HUB_ROOT": str(root), "NBKIT_HUB_PASSWORD": "fine-tune", "NBKIT_HUB_IP": "127.0.0.1",
           "NBKIT_HUB_PORT": str(port), "NBKIT_CLASS": "lr101"}
    root.mkdir()
    create(REPO_ROOT / "notebooks" / "classes" / "01_learning_rate.yaml", storage=f"sqlite:///{root / 'class.db'}")
    log = open(tmp_path / "hub.log", "w")
    process = subprocess.Popen([str(Path(sys.executable).with_name("jupyterhub")), "-f", str(extra)], cwd=tmp_path,
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: requests.get(f"{url}/hub/api", timeout=5).ok, 120, "the hub to answer")
        yield {"url": url, "token": token, "root": root, "log": tmp_path / "hub.log"}
    finally:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def log_in(url: str, name: str) -> requests.Session:
    """The login form, as a student's browser sends it: the name and the room's password."""
    session = requests.Session()
    session.get(f"{url}/hub/login", timeout=30)
    reply = session.post(f"{url}/hub/login?next=", timeout=60, allow_redirects=True,
                         data={"username": name, "password": "fine-tune", "_xsrf": session.cookies.get("_xsrf", "")})
    assert reply.ok, (reply.status_code, reply.text[-2000:])
    return session


def execute(url: str, name: str, token: str, code: str, seconds: int = 600) -> str:
    """Run `code` in a new kernel of the student's server (Jupyter's REST API and kernel websocket); its stdout."""
    from tornado import httpclient, ioloop, websocket

    headers = {"Authorization": f"token {token}"}
    kernel = requests.post(f"{url}/user/{name}/api/kernels", headers=headers, json={"name": "python3"}, timeout=60)
    assert kernel.ok, (kernel.status_code, kernel.text)
    channel = f"{url.replace('http', 'ws')}/user/{name}/api/kernels/{kernel.json()['id']}/channels"

    async def run() -> str:
        socket = await websocket.websocket_connect(httpclient.HTTPRequest(channel, headers=headers))
        msg_id = uuid.uuid4().hex
        await socket.write_message(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "session": uuid.uuid4().hex,
                       "username": name, "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False}}))
        out, deadline = [], time.time() + seconds
        while time.time() < deadline:
            message = json.loads(await socket.read_message())
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = message["header"]["msg_type"], message["content"]
            if kind == "stream":
                out.append(content["text"])
            elif kind == "error":
                out.append("\n".join(content["traceback"]))
            elif kind == "status" and content["execution_state"] == "idle":
                return "".join(out)
        raise AssertionError(f"no answer from {name}'s kernel in {seconds} s: {''.join(out)}")

    return ioloop.IOLoop.current().run_sync(run)


def test_two_students_log_in_to_the_workshop_hub_and_each_trains_a_class_run(hub):
    url, token = hub["url"], hub["token"]
    for name in (*STUDENTS, "instructor"):
        log_in(url, name)
    api = {"Authorization": f"token {token}"}

    def ready(name):
        user = requests.get(f"{url}/hub/api/users/{name}", headers=api, timeout=30).json()
        return user.get("servers", {}).get("", {}).get("ready")

    for name in (*STUDENTS, "instructor"):
        wait_for(lambda: ready(name), 180, f"{name}'s server: {hub['log'].read_text()[-3000:]}")
        assert (hub["root"] / "homes" / name / "notebooks" / "01_learning_rate.ipynb").is_file()
    # the students' kernels train at a lower priority than the instructor's, where the board runs
    ours = os.nice(0)
    assert f"NICE {min(19, ours + STUDENT_NICE)}" in execute(url, "ana", token, PRIORITY)
    assert f"NICE {ours}" in execute(url, "instructor", token, PRIORITY)
    for name in STUDENTS:
        out = execute(url, name, token, CLASS_RUN)
        assert f"RESULT {name} ['completed']" in out and "told class" in out, out[-3000:]
    rows = class_runs(open_class("lr101", f"sqlite:///{hub['root'] / 'class.db'}"))
    assert sorted(r["student"] for r in rows) == sorted(STUDENTS) and all(r["state"] == "COMPLETE" for r in rows)
    for name in STUDENTS:  # each student's run went to their own folder on the hub
        assert list((hub["root"] / "homes" / name / "runs" / "classes" / "lr101" / name).glob("*/summary.json"))
