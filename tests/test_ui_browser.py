"""`intemporal ui` in a real headless Chromium (Debian's `chromium`, driven by Playwright).

The server is the real command (`intemporal --store S ui --port 0`) over a store filled by
samples/ui_demo.py. Outside CI, without Chromium or Playwright, the tests skip and say
how to install them; in CI (`CI=true`, where .ci/run installs Chromium) they fail instead.
The run page's screenshot is saved in the test's tmp_path, and also in
$INTEMPORAL_SCREENSHOT_DIR when set (`INTEMPORAL_SCREENSHOT_DIR=docs` refreshes the README's).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from process_helpers import ui_server

import intemporal

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",  # as root (CI, containers) Chromium refuses to start with its sandbox
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INSTALL = (
    "the browser test needs Debian's Chromium and Playwright for Python: "
    "`apt-get install -y chromium` and `pip install -e '.[dev]'` (no browser download: "
    "Playwright drives /usr/bin/chromium)"
)


def _need_browser() -> Any:
    missing = not os.path.exists(CHROMIUM)
    try:
        from playwright import sync_api
    except ImportError:
        missing = True
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail("in CI .ci/run installs Chromium: " + INSTALL)
        pytest.skip(INSTALL)
    return sync_api


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A store filled by samples/ui_demo.py: the ids of its runs by kind, and the store."""
    home = tmp_path_factory.mktemp("ui")  # the commands run here, on ./.intemporal
    proc = subprocess.run(
        [sys.executable, str(ROOT / "samples" / "ui_demo.py"), "--store", ".intemporal"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=home,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ids = dict(re.findall(r"^(\w+): +(\S+)", proc.stdout, re.M))
    return {**ids, "home": str(home), "store": str(home / ".intemporal")}


@pytest.fixture(scope="module")
def server(demo: dict[str, str]) -> Iterator[str]:
    """`intemporal ui` on a free port of 127.0.0.1; yields its base URL."""
    env = {"INTEMPORAL_HOME": ".intemporal"}
    with ui_server(["ui", "--port", "0"], cwd=demo["home"], env=env) as (_, url):
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", url), url
        yield url


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    sync_api = _need_browser()
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh profile per test
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            viewport={"width": 1280, "height": 860},
        )
        try:
            yield context.new_page()
        finally:
            context.close()


def test_run_page_in_a_real_browser(
    page: Any, demo: dict[str, str], server: str, tmp_path: Path
) -> None:
    # Given the run of the demo's order: a retried activity, a timer, a signal wait, a child
    order = demo["order"]

    # When its page loads in Chromium
    page.goto(f"{server}runs/{order}")
    page.wait_for_selector(".gantt .row")

    # Then the retried activity has one drawn bar per attempt: two failed, then ok
    bars = page.locator('.row[data-name="reserve_stock"] .bar[data-attempt]')
    assert bars.count() == 3
    assert [bars.nth(i).get_attribute("data-attempt") for i in range(3)] == ["1", "2", "3"]
    classes = [bars.nth(i).get_attribute("class") for i in range(3)]
    assert classes == ["bar b-retry", "bar b-retry", "bar b-ok"]
    for i in range(3):
        box = bars.nth(i).bounding_box()
        assert box is not None and box["width"] >= 2 and box["height"] >= 10
    # the timer and the signal wait are drawn as waits, the child as a linked row
    assert page.locator('.row[data-name="intemporal.sleep"] .bar.b-wait').count() == 1
    assert page.locator('.row[data-name="intemporal.signal:approve"] .bar.b-wait').count() == 1
    assert page.locator(".row.k-child .bar.b-child").count() == 1
    # a failed attempt shows its error when clicked
    bars.nth(0).click()
    assert page.locator("#detail").is_visible()
    assert "ConnectionError: warehouse unreachable (try 1)" in page.inner_text("#detail")
    # the secret argument never reaches the page; the dill result is named, not loaded
    html = page.content()
    assert "tok_live_123" not in html and "Secret(***)" in html
    assert "&lt;dill: tuple" in html
    shot = tmp_path / "ui-run.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("INTEMPORAL_SCREENSHOT_DIR"):
        shutil.copy(shot, Path(os.environ["INTEMPORAL_SCREENSHOT_DIR"]) / "ui-run.png")

    # And the child link opens the child's page
    page.locator(".row.k-child a.child-link").click()
    page.wait_for_url(re.compile(rf"/runs/{re.escape(order)}/\d+$"))
    assert page.inner_text("h1").startswith(f"{order}/")
    assert page.locator('.row[data-name="pack"] .bar.b-ok').count() == 1
    assert page.locator("a.parent-link").get_attribute("href") == f"/runs/{order}"


@intemporal.activity(name="browser.hello")
def hello(x: int) -> int:
    return x


@intemporal.workflow(name="browser.fresh")
def fresh(x: int) -> int:
    return hello(x)


def test_runs_page_shows_a_new_run_within_2_s(page: Any, demo: dict[str, str], server: str) -> None:
    # Given the runs page, loaded, listing the demo's runs with their status colours
    page.goto(server)
    page.wait_for_selector(f'tr[data-run-id="{demo["order"]}"]')
    assert page.locator(f'tr[data-run-id="{demo["trip"]}"] .status.st-failed').count() == 1

    # When a run starts after that
    rid = f"fresh-{time.monotonic_ns()}"
    with intemporal.Engine(demo["store"]) as engine:
        started = time.monotonic()
        engine.run(fresh, 1, run_id=rid)

    # Then its row appears without a reload, within 2 s
    page.wait_for_selector(f'tr[data-run-id="{rid}"]', timeout=2000)
    assert time.monotonic() - started < 2.0
    assert page.locator(f'tr[data-run-id="{rid}"] .status').inner_text() == "completed"


def test_without_chromium_it_skips_saying_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import test_ui_browser as me

    monkeypatch.setattr(me, "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"apt-get install -y chromium"):
        me._need_browser()
    monkeypatch.setenv("CI", "true")  # in CI, where .ci/run installs it, a miss is a failure
    with pytest.raises(pytest.fail.Exception, match=r"in CI \.ci/run installs Chromium"):
        me._need_browser()
