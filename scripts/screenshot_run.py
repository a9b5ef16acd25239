"""Screenshot a run directory's result page in headless Chromium (for the README's real-run pictures).

    .venv/bin/python scripts/screenshot_run.py RUN_DIR OUTPUT.png [--analysis-shots DIR]

Imports RUN_DIR (`manage.py import_run`) into a throwaway database, serves it with daphne, signs in
and saves the result page (and, with --analysis-shots, each analysis section) as PNG files.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.live.conftest import HttpSession, app_environment, free_port, start_process, wait_until  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--analysis-shots", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        env = app_environment(LOTTERYWEB_DB_PATH=str(root / "db.sqlite3"), LOTTERYWEB_CHANNEL_LAYER="memory",
                              LOTTERYWEB_LOG_LEVEL="WARNING")
        for command in (["migrate", "--noinput"],
                        ["ensure_user", "shot", "--password", "shot-password-1", "--superuser"],
                        ["import_run", str(args.run_dir.resolve())]):
            subprocess.run([sys.executable, "manage.py", *command], cwd=REPO, env=env, check=True, capture_output=True)
        port = free_port()
        server = start_process("daphne", [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                                          "lotteryweb.asgi:application"], root, env)
        base = f"http://127.0.0.1:{port}"
        try:
            session = HttpSession(base)
            wait_until(session.answers, 60, "daphne", [server])
            from playwright.sync_api import sync_playwright
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                                     args=["--no-sandbox", "--disable-gpu"])
                page = browser.new_page(viewport={"width": 1280, "height": 1000})
                page.goto(base + "/login/")
                page.fill("#id_username", "shot")
                page.fill("#id_password", "shot-password-1")
                page.click("#sign-in")
                page.goto(base + "/e/1/")
                page.wait_for_selector("#chart-sparsity-accuracy .main-svg")
                page.screenshot(path=str(args.output))
                if args.analysis_shots:
                    args.analysis_shots.mkdir(parents=True, exist_ok=True)
                    for section in page.eval_on_selector_all(".analysis", "items => items.map(i => i.id)"):
                        if page.locator(f"#{section} .analysis-run .chart").count():
                            page.wait_for_selector(f"#{section} .chart .main-svg")
                            page.locator(f"#{section}").screenshot(path=str(args.analysis_shots / f"{section}.png"))
                browser.close()
        finally:
            server.stop()
    print(f"wrote {args.output}")



if __name__ == "__main__":
    main()
