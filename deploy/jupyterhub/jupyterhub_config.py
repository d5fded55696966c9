"""A JupyterHub for an nbkit workshop on one machine: every student logs in with their own name and the room's
password, gets their own copy of the chapters, and finds the class already filled in in every panel's Class row
(NBKIT_CLASS, NBKIT_CLASS_STORAGE and their hub name as the student); the class database is one SQLite file on
this machine's disk, which every student's server reaches.

    pip install jupyterhub                       # in nbkit's environment (requirements.txt has it)
    npm install -g configurable-http-proxy       # the hub's proxy
    NBKIT_HUB_PASSWORD=... jupyterhub -f deploy/jupyterhub/jupyterhub_config.py

Settings, from the environment:
    NBKIT_HUB_PASSWORD  the room's password (required): any name with it logs in (JupyterHub's DummyAuthenticator)
    NBKIT_HUB_ROOT      where the hub keeps its database, the students' folders and the class (default ./nbkit-hub)
    NBKIT_HUB_IP        the address to listen on (default 0.0.0.0: the room's laptops reach it)
    NBKIT_HUB_PORT      the port (default 8000)
    NBKIT_CLASS         the class the panels join (default lr101, notebooks/classes/01_learning_rate.yaml)
    NBKIT_HUB_INSTRUCTOR  the instructor's hub name (default instructor): their server, where the board runs,
                        keeps the usual CPU priority; every other server runs at nice 19 (STUDENT_NICE), so 30
                        students training on one machine leave the projected board its share of the CPU

What it trades away for a one-machine workshop, knowingly: the shared password lets anyone in the room log in
under any name, and every student's server runs as the hub's own user (JupyterHub's SimpleLocalProcessSpawner),
so students can read each other's folders. For a course with accounts, use an authenticator of your
institution's and a spawner that isolates users (LocalProcessSpawner with system users, DockerSpawner).
"""
import os
import shutil
import sys
from pathlib import Path

from nbkit.core.classroom import STUDENT_NICE  # students train at a lower priority than the board (its reason)

c = get_config()  # noqa: F821 - JupyterHub defines get_config when it loads this file

REPO = Path(__file__).resolve().parents[2]
ROOT = Path(os.environ.get("NBKIT_HUB_ROOT", "nbkit-hub")).resolve()
CLASS = os.environ.get("NBKIT_CLASS", "lr101")
INSTRUCTOR = os.environ.get("NBKIT_HUB_INSTRUCTOR", "instructor")
ROOT.mkdir(parents=True, exist_ok=True)

c.JupyterHub.bind_url = f"http://{os.environ.get('NBKIT_HUB_IP', '0.0.0.0')}:{os.environ.get('NBKIT_HUB_PORT', '8000')}"
c.JupyterHub.db_url = f"sqlite:///{ROOT / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(ROOT / "jupyterhub_cookie_secret")
c.ConfigurableHTTPProxy.pid_file = str(ROOT / "jupyterhub-proxy.pid")

c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = os.environ.get("NBKIT_HUB_PASSWORD") or sys.exit(
    "NBKIT_HUB_PASSWORD is not set: the room's password, e.g. NBKIT_HUB_PASSWORD=fine-tune jupyterhub -f ...")

c.JupyterHub.spawner_class = "simple"  # each student a folder under ROOT/homes, all as this user (see above)
c.SimpleLocalProcessSpawner.home_dir_template = str(ROOT / "homes" / "{username}")
SINGLEUSER = str(Path(sys.executable).with_name("jupyterhub-singleuser"))  # the hub's own environment
c.Spawner.cmd = [SINGLEUSER]
if os.geteuid() == 0:  # a hub run as root (a workshop VM, a container) runs its students' servers as root too
    c.Spawner.args = ["--allow-root"]
c.Spawner.default_url = "/lab/tree/notebooks/01_learning_rate.ipynb"
# a room logs in at once: 30 servers starting together on one machine take longer than JupyterHub's 30 s default
c.Spawner.start_timeout = c.Spawner.http_timeout = 300
c.Spawner.environment = {
    "NBKIT_CLASS": CLASS,
    "NBKIT_CLASS_STORAGE": f"sqlite:///{ROOT / 'class.db'}",
    "OMP_NUM_THREADS": "1",  # a room shares the machine's cores: one thread a student trains the tiny model best
}


def prepare_the_server(spawner):
    """A student's first login: their own copy of notebooks/ (later logins keep what they changed). Every
    server but the instructor's starts at a lower CPU priority (its kernels inherit it)."""
    home = Path(spawner.home_dir_template.format(username=spawner.user.name))
    if not (home / "notebooks").exists():
        shutil.copytree(REPO / "notebooks", home / "notebooks")
    spawner.cmd = [SINGLEUSER] if spawner.user.name == INSTRUCTOR else ["nice", "-n", str(STUDENT_NICE), SINGLEUSER]


c.Spawner.pre_spawn_hook = prepare_the_server
