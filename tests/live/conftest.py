"""Real processes for the integration and browser tests: a Celery worker and daphne (redis-server is in
tests/conftest.py: the web tests use it too), and the helpers that start and watch them; and for the
browser tests, headless Chromium, a page signed in through the login form, and their screenshots.

Each starts once per test session on free ports, in temporary directories, with its own database
(a SQLite file, or a fresh database on the PostgreSQL server that DATABASE_URL names: see
scripts/with_postgres.sh) and runs directory, and is stopped (TERM, then KILL) at the end. Their logs go to files
under the session's temporary directory; a process that dies early fails the test with its log.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from http.cookiejar import CookieJar
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

import pytest

from trainer.training.stack_size import CACHE_ENV, PIN_ENV

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
OUTPUT = REPO / "test-output" / "browser"  # the browser tests' screenshots
DOCS_SCREENSHOTS = REPO / "docs" / "screenshots"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class ManagedProcess:
    name: str
    process: subprocess.Popen
    log_path: Path

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            pytest.fail(f"{self.name} exited with code {self.process.returncode}:\n{_log_tail(self.log_path)}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_process(name: str, command: list[str], log_dir: Path, env: dict | None = None) -> ManagedProcess:
    log_path = log_dir / f"{name}.log"
    log_file = open(log_path, "wb")
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
    return ManagedProcess(name, process, log_path)


def wait_until(condition, timeout: float, what: str, processes: list[ManagedProcess] = ()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for managed in processes:
            managed.check_alive()
        if condition():
            return
        time.sleep(0.2)
    logs = "\n\n".join(f"--- {m.name} ---\n{_log_tail(m.log_path)}" for m in processes)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{logs}")


LIVE_USER, LIVE_PASSWORD = "tester", "tester-password-1"


@pytest.fixture(scope="session")
def live_database(tmp_path_factory):
    """The live processes' own database; yields the environment variables that select it. With a
    PostgreSQL DATABASE_URL (the suite's PostgreSQL pass), a fresh database on that server, dropped
    at the end; otherwise a SQLite file."""
    server_url = os.environ.get("DATABASE_URL", "")
    if not server_url.startswith(("postgres://", "postgresql://")):
        yield {"LOTTERYWEB_DB_PATH": str(tmp_path_factory.mktemp("live_database") / "db.sqlite3")}
        return
    import psycopg

    name = f"lotteryweb_live_{os.getpid()}"
    with psycopg.connect(server_url, autocommit=True) as server:
        server.execute(f'DROP DATABASE IF EXISTS "{name}"')
        server.execute(f'CREATE DATABASE "{name}"')
    try:
        yield {"DATABASE_URL": urlunsplit(urlsplit(server_url)._replace(path="/" + name))}
    finally:
        with psycopg.connect(server_url, autocommit=True) as server:
            server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class LiveApp:
    base_url: str
    port: int
    database_env: dict  # LOTTERYWEB_DB_PATH or DATABASE_URL: the processes' database
    runs_dir: Path
    log_dir: Path
    processes: list[ManagedProcess] = field(default_factory=list)
    username: str = LIVE_USER
    password: str = LIVE_PASSWORD

    @property
    def ws_base(self) -> str:
        return self.base_url.replace("http://", "ws://")

    def query(self, sql: str, parameters: tuple = ()) -> list[tuple]:
        """The rows of `sql` (placeholders `?`) read straight from the processes' database.
        JSON columns come back as text from SQLite and already decoded from PostgreSQL."""
        if "DATABASE_URL" in self.database_env:
            import psycopg

            with psycopg.connect(self.database_env["DATABASE_URL"]) as database:
                return database.execute(sql.replace("?", "%s"), parameters).fetchall()
        with contextlib.closing(sqlite3.connect(self.database_env["LOTTERYWEB_DB_PATH"], timeout=20)) as database:
            return database.execute(sql, parameters).fetchall()

    def check_alive(self) -> None:
        for managed in self.processes:
            managed.check_alive()


class HttpSession:
    """A tiny browser-like HTTP client: keeps cookies, does not follow redirects."""

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.cookies = CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies), self._NoRedirect)

    def request(self, path: str, data: dict | None = None, headers: dict | None = None):
        body = urlencode(data, doseq=True).encode() if data is not None else None
        request = urllib.request.Request(self.base_url + path, data=body, headers=headers or {})
        try:
            response = self.opener.open(request, timeout=30)
        except urllib.error.HTTPError as error:  # 3xx/4xx/5xx come back as errors here
            response = error
        return response.status, dict(response.headers), response.read()

    def cookie(self, name: str) -> str | None:
        return next((c.value for c in self.cookies if c.name == name), None)

    def login(self, username: str = LIVE_USER, password: str = LIVE_PASSWORD) -> None:
        status, _, _ = self.request("/login/")
        assert status == 200
        status, headers, body = self.request(
            "/login/", {"username": username, "password": password, "csrfmiddlewaretoken": self.cookie("csrftoken")},
            headers={"Referer": self.base_url + "/login/"})
        assert status == 302, body.decode(errors="replace")[:500]

    def session_cookie_header(self) -> dict:
        """For a websocket opened on behalf of this session."""
        return {"Cookie": f"sessionid={self.cookie('sessionid')}"}

    def answers(self, path: str = "/login/") -> bool:
        """The server is up and serves `path` (a page needing no account by default)."""
        try:
            return self.request(path)[0] == 200
        except OSError:
            return False

    def json(self, path: str):
        status, _, body = self.request(path)
        assert status == 200, (path, status, body[:300])
        return json.loads(body)


def app_environment(**settings: str) -> dict:
    """This process's environment without its own app settings (DJANGO_*, LOTTERYWEB_*, DATABASE_URL),
    plus `settings`: the environment of an app process that must use only what it is given. The
    machine's stack sizes (the suite's private cache and its pinned default) are shared, not app settings."""
    env = {key: value for key, value in os.environ.items()
           if key in (CACHE_ENV, PIN_ENV) or (not key.startswith(("DJANGO_", "LOTTERYWEB_")) and key != "DATABASE_URL")}
    env.update({"DJANGO_SETTINGS_MODULE": "lotteryweb.settings", **settings})
    return env


@pytest.fixture(scope="session")
def live_app(redis_server, live_database, tmp_path_factory):
    """Migrated database, one Celery worker and daphne, all on the private Redis; yields a LiveApp."""
    root = tmp_path_factory.mktemp("live_app")
    env = app_environment(**live_database, LOTTERYWEB_RUNS_DIR=str(root / "runs"), LOTTERYWEB_REDIS_URL=redis_server,
                          PYTHONUNBUFFERED="1", LOTTERYWEB_TORCH_THREADS="1")
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=REPO, env=env, check=True,
                   capture_output=True)
    subprocess.run([sys.executable, "manage.py", "ensure_user", LIVE_USER, "--password", LIVE_PASSWORD], cwd=REPO,
                   env=env, check=True, capture_output=True)
    port = free_port()
    worker = start_process("celery", [sys.executable, "-m", "celery", "-A", "lotteryweb", "worker", "--pool=solo",
                                      "--loglevel=INFO", "--without-gossip", "--without-mingle"], root, env)
    server = start_process("daphne", [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                                      "lotteryweb.asgi:application"], root, env)
    app = LiveApp(f"http://127.0.0.1:{port}", port, live_database, root / "runs", root, [worker, server])

    try:
        wait_until(HttpSession(app.base_url).answers, 60, "daphne to serve /login/", app.processes)
        wait_until(lambda: b" ready." in worker.log_path.read_bytes(), 90, "the Celery worker to be ready",
                   app.processes)
        yield app
    finally:
        for managed in reversed(app.processes):
            managed.stop()


def add_finished_experiment(database_env: dict, run_path: Path, owner: str) -> int:
    """Store a finished run as `owner`'s Experiment (with its rounds) in another process's database
    (`database_env`: its LOTTERYWEB_DB_PATH or DATABASE_URL, as LiveApp.database_env)."""
    code = f"""
import json, django
django.setup()
from django.contrib.auth import get_user_model
from frontend import records
from frontend.models import Experiment
results = json.loads(open({str(run_path / 'results.json')!r}).read())
spec = results["spec"]
experiment = Experiment.objects.create(spec=spec, model_name=spec["model"], dataset_name=spec["dataset"],
    owner=get_user_model().objects.get(username={owner!r}),
    status="finished", run_name=results["run_name"], run_dir={str(run_path)!r},
    results_path={str(run_path / 'results.json')!r}, rounds_total=spec["pruning"]["rounds"],
    iterations_per_round=results["total_iterations"])
for record in results["rounds"] + [r for records in results["controls"].values() for r in records]:
    records.store_record(experiment.pk, record)
print(experiment.pk)
"""
    env = {"DJANGO_SETTINGS_MODULE": "lotteryweb.settings", **database_env, "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                          capture_output=True, text=True, check=True)
    return int(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (Debian's package, driven by Playwright; no browser download), one per test module."""
    os.environ["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing; `scripts/setup.sh test` installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


def signed_in_page(browser, live_app: LiveApp, path: str | None = None, **options):
    """A new page (own cookie jar) signed in through the login form, then at `path` if given, and the
    list its uncaught script errors go to from then on: (page, errors)."""
    page = browser.new_page(**options)
    page.goto(live_app.base_url + "/e/1/")  # any page: signed-out visitors land on the login form
    page.wait_for_url(re.compile(r".*/login/\?next=.*"))
    page.fill("#id_username", live_app.username)
    page.fill("#id_password", live_app.password)
    page.click("#sign-in")
    page.wait_for_load_state()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    if path is not None:
        page.goto(live_app.base_url + path)
    return page, errors


def save_screenshot(page, name: str, docs_name: str | None = None, **options) -> None:
    """test-output/browser/<name>.png; with LOTTERYWEB_UPDATE_SCREENSHOTS=1 also the README's
    docs/screenshots/<docs_name>.png."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    path = OUTPUT / f"{name}.png"
    page.screenshot(path=str(path), **options)
    if docs_name and os.environ.get("LOTTERYWEB_UPDATE_SCREENSHOTS") == "1":
        from PIL import Image

        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        # A 128-colour palette keeps each committed PNG well under 200 KB.
        Image.open(path).convert("RGB").quantize(colors=128).save(DOCS_SCREENSHOTS / f"{docs_name}.png", optimize=True)
