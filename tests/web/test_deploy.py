"""The lab-server files: Dockerfile, docker-compose.yml and the production settings.

Docker cannot run here, so these tests read the files and check what they name: every program
a service runs exists, every file the image copies is in the repository, every setting the
compose file passes is one the settings read, `manage.py check --deploy` passes with the
production environment, and the production application serves the static files itself.
"""
import json
import os
import re
import secrets
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.core.management import get_commands

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = (REPO / "Dockerfile").read_text()
    joined = re.sub(r"\\\n\s*", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in joined.splitlines() if line.strip()]


def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def settings_source() -> str:
    return (REPO / "lotteryweb" / "settings.py").read_text()


def program_exists(argv: list[str]) -> bool:
    program = argv[0]
    if program in ("python", "python3"):
        return True
    return (VENV_BIN / program).exists() or program.startswith("scripts/") and (REPO / program).exists()


def test_the_dockerfile_builds_from_a_cpu_base_by_default_and_copies_what_exists():
    instructions = dockerfile_instructions()
    args = dict(value.split("=", 1) for kind, value in instructions if kind == "ARG" and "=" in value)
    assert args["BASE_IMAGE"].startswith("python:3.11"), "CPU by default"
    assert "/whl/cpu" in args["TORCH_INDEX_URL"]
    assert ("FROM", "${BASE_IMAGE}") in instructions
    copies = [value.split()[:-1] for kind, value in instructions if kind == "COPY"]
    for sources in copies:
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"
    runs = " ".join(value for kind, value in instructions if kind == "RUN")
    assert "torch==2.14.1" in runs and "-r requirements.txt" in runs
    entrypoint = next(value for kind, value in instructions if kind == "ENTRYPOINT")
    command = next(value for kind, value in instructions if kind == "CMD")
    assert program_exists(json.loads(entrypoint)) and os.access(REPO / json.loads(entrypoint)[0], os.X_OK)
    assert program_exists(json.loads(command))
    assert "USER" in [kind for kind, _ in instructions], "the services do not run as root"


def test_the_build_context_leaves_out_secrets_and_local_state_but_not_what_the_image_copies():
    ignored = {line.strip().rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {"lab.env", ".env", ".git", ".venv", "runs", "data", ".lotteryweb"} <= ignored
    for kind, value in dockerfile_instructions():
        if kind == "COPY":
            for source in value.split()[:-1]:
                assert Path(source).parts[0] not in ignored, f"COPY {source} is left out of the build context"


def test_compose_has_the_lab_services_and_their_commands_exist():
    services = compose()["services"]
    assert {"web", "worker", "gpu-worker", "redis", "postgres"} <= set(services)
    for name, service in services.items():
        command = service.get("command")
        if name in ("redis", "postgres") or command is None:
            continue
        argv = command if isinstance(command, list) else shlex.split(command)
        assert program_exists(argv), f"{name}: {argv[0]} is not installed"
        if argv[:2] == ["python", "manage.py"]:
            assert argv[2] in get_commands(), f"{name}: manage.py {argv[2]} does not exist"
        if argv[0] == "celery":
            app = argv[argv.index("-A") + 1]
            __import__(app)  # the Celery app the worker loads
            queue = argv[argv.index("-Q") + 1]
            assert queue in ("celery", "gpu")
        if argv[0] == "daphne":
            module, attribute = argv[-1].split(":")
            assert attribute in (REPO / (module.replace(".", "/") + ".py")).read_text()
    for name in ("web", "worker", "gpu-worker"):  # the web container migrates at start
        assert services[name]["depends_on"]["postgres"] == {"condition": "service_healthy"}, name
        # a dead container comes back; its runs are re-queued by the other workers' heartbeat watchdog
        assert services[name]["restart"] in ("always", "unless-stopped"), name
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]
    assert services["gpu-worker"]["environment"]["CUDA_VISIBLE_DEVICES"] == "0"
    assert "-Q" in services["gpu-worker"]["command"] and "gpu" in services["gpu-worker"]["command"]


def test_every_setting_compose_passes_is_read_by_the_settings():
    source = settings_source()
    names = set()
    for service in compose()["services"].values():
        names |= {name for name in (service.get("environment") or {}) if name.startswith(("LOTTERYWEB_", "DATABASE_"))}
    env_example = (REPO / "lab.env.example").read_text()
    names |= {line.split("=", 1)[0] for line in env_example.splitlines() if line and not line.startswith("#")}
    trainer_reads = {"LOTTERYWEB_TORCH_THREADS"}  # also read by trainer.training.loop.apply_thread_setting
    for name in sorted(names):
        assert f'"{name}"' in source or name in trainer_reads, f"{name} is passed but never read"


def _production_env(**extra) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "LOTTERYWEB_"))}
    env.update({"DJANGO_SETTINGS_MODULE": "lotteryweb.settings", "LOTTERYWEB_PRODUCTION": "1",
                "LOTTERYWEB_ALLOWED_HOSTS": "lottery.lab.example.org", **extra})
    return env


def test_check_deploy_passes_with_the_production_settings():
    env = _production_env(LOTTERYWEB_SECRET_KEY=secrets.token_urlsafe(64))
    done = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], cwd=REPO,
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# Fetches paths from lotteryweb.asgi.application (what daphne serves) and prints "status content-type" per path.
_ASGI_GET = """
import asyncio, sys
from lotteryweb.asgi import application

async def get(path):
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"lottery.lab.example.org"), (b"x-forwarded-proto", b"https")],
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}
    requests = [{"type": "http.request", "body": b""}]
    sent = []

    async def receive():  # the request, then a client that stays connected
        return requests.pop() if requests else await asyncio.Event().wait()

    async def send(message):
        sent.append(message)

    await application(scope, receive, send)
    headers = {name.decode().lower(): value.decode() for name, value in sent[0]["headers"]}
    print(sent[0]["status"], headers.get("content-type", "").split(";")[0])

for path in sys.argv[1:]:
    asyncio.run(get(path))
"""


def asgi_get(*paths: str) -> dict[str, str]:
    """{path: "status content-type"} from the production application, in a fresh process."""
    env = _production_env(LOTTERYWEB_SECRET_KEY=secrets.token_urlsafe(64))
    done = subprocess.run([sys.executable, "-c", _ASGI_GET, *paths], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return dict(zip(paths, done.stdout.splitlines()))


def test_the_production_server_serves_the_static_files_itself():
    """No collectstatic and no extra package: daphne's application wraps Django in ASGIStaticFilesHandler,
    which serves /static/ from the finders (the apps' static directories, plotly.js from the plotly
    package) also with DEBUG off."""
    answers = asgi_get("/static/vendor/plotly.min.js", "/static/frontend/live.js", "/static/frontend/style.css",
                       "/static/admin/css/base.css")  # the admin's too: accounts are managed there
    for path, answer in answers.items():
        status, content_type = answer.split()
        assert status == "200", (path, answer)
        assert content_type.endswith("javascript" if path.endswith(".js") else "css"), (path, answer)


def test_a_missing_static_file_is_a_404():
    assert asgi_get("/static/frontend/missing.js") == {"/static/frontend/missing.js": "404 text/html"}


@pytest.mark.parametrize("key", [None, "short", "lotteryweb-local-development-key-change-me-when-exposed"])
def test_production_refuses_to_start_without_a_real_secret_key(key):
    env = _production_env(**({"LOTTERYWEB_SECRET_KEY": key} if key else {}))
    done = subprocess.run([sys.executable, "manage.py", "check"], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode != 0 and "needs LOTTERYWEB_SECRET_KEY" in done.stderr
