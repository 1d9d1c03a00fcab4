"""`intemporal ui`: the read-only web view, at the HTTP level (Starlette's TestClient and a
real server on 127.0.0.1), and its timeline model. The browser test is test_ui_browser.py.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from process_helpers import run_and_kill, ui_server, wait_until

pytest.importorskip("starlette", reason="the web view needs: pip install 'intemporal[ui]'")

from starlette.testclient import TestClient

import intemporal
from intemporal import Engine, FileStore, RetryPolicy, RunStatus
from intemporal.ui_app import create_app

_tries: dict[str, int] = {}


@intemporal.activity(name="ui.flaky", retry=RetryPolicy(max_attempts=4, initial_interval=0.01))
def flaky(key: str) -> str:
    _tries[key] = _tries.get(key, 0) + 1
    if _tries[key] < 3:
        raise ConnectionError(f"down {_tries[key]}")
    return "up"


@intemporal.activity(name="ui.step")
def step(x: Any) -> Any:
    return x


@intemporal.activity(name="ui.undo")
def undo(x: Any) -> None:
    return None


@intemporal.workflow(name="ui.leaf")
def leaf(x: int) -> int:
    return step(x)


@intemporal.workflow(name="ui.kid")
def kid(x: int) -> int:
    return leaf(x) + 1


@intemporal.workflow(name="ui.parent")
def parent(key: str) -> dict[str, Any]:
    flaky(key)
    approved = intemporal.wait_for_signal("approve")
    return {"approved": approved, "kid": kid(1)}


@intemporal.workflow(name="ui.saga")
def saga_wf(x: int) -> None:
    saga = intemporal.saga()
    try:
        saga.add_compensation(undo, step(x))
        raise ValueError("no room")
    except Exception:
        saga.compensate()
        raise


@intemporal.workflow(name="ui.simple")
def simple(x: Any) -> Any:
    return step(x)


@intemporal.workflow(name="ui.waits")
def waits() -> Any:
    return intemporal.wait_for_signal("never")


def wait_status(engine: Engine, run_id: str, status: RunStatus) -> None:
    wait_until(lambda: engine.get_run(run_id).status is status, 10, f"{run_id} {status}")


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def engine(store_dir: Path) -> Iterator[Engine]:
    with Engine(FileStore(store_dir), threads=4) as eng:
        yield eng


def client(store: Any, **options: Any) -> TestClient:
    return TestClient(create_app(store, **options))


def start_parent(engine: Engine, run_id: str) -> Any:
    """A finished run with a retried activity (3 attempts), a signal wait and a child."""
    handle = engine.start(parent, run_id, run_id=run_id)
    wait_status(engine, run_id, RunStatus.WAITING)
    handle.signal("approve", "alice")
    assert handle.result(timeout=10) == {"approved": "alice", "kid": 2}
    return handle


# -- the runs table and its JSON -----------------------------------------------------------------
def test_list_page_and_json_name_every_run(engine: Engine, store_dir: Path) -> None:
    # Given runs of three workflows, one failed
    ids = [f"order-{i}" for i in range(3)]
    for rid in ids:
        engine.run(simple, rid, run_id=rid)
    with pytest.raises(ValueError):
        engine.run(saga_wf, 1, run_id="trip:1@x")
    engine.start(waits, run_id="waiting.1")
    wait_status(engine, "waiting.1", RunStatus.WAITING)

    # When the page and the JSON endpoint are read
    web = client(str(store_dir))
    page = web.get("/")
    api = web.get("/api/runs")

    # Then both name every run, with its workflow and status (coloured by class)
    assert page.status_code == 200 and api.status_code == 200
    for rid in [*ids, "trip:1@x", "waiting.1"]:
        assert f'data-run-id="{rid}"' in page.text
    rows = {r["run_id"]: r for r in api.json()}
    assert set(rows) == {*ids, "trip:1@x", "waiting.1"}
    assert rows["trip:1@x"]["workflow"] == "ui.saga" and rows["trip:1@x"]["status"] == "failed"
    assert rows["order-0"]["status"] == "completed" and rows["waiting.1"]["status"] == "waiting"
    assert 'class="status st-failed"' in page.text and 'class="status st-completed"' in page.text
    assert api.headers["X-Total-Count"] == "5"


def test_filters_search_and_paging(engine: Engine, store_dir: Path) -> None:
    # Given five runs of one workflow (two on a queue) and one of another
    for i in range(5):
        engine.run(simple, i, run_id=f"batch-{i}", queue="fast" if i < 2 else None)
    with pytest.raises(ValueError):
        engine.run(saga_wf, 1, run_id="other-1")
    web = client(str(store_dir))

    def ids(query: str) -> list[str]:
        response = web.get("/api/runs" + query)
        assert response.status_code == 200, response.text
        return [r["run_id"] for r in response.json()]

    # Then each filter keeps what it names
    assert ids("?status=failed") == ["other-1"]
    assert sorted(ids("?workflow=ui.simple")) == [f"batch-{i}" for i in range(5)]
    assert sorted(ids("?queue=fast")) == ["batch-0", "batch-1"]
    assert ids("?q=THER") == ["other-1"]  # a run id substring, any case
    assert len(ids("?since=1h")) == 6 and ids("?until=2000-01-01") == []
    assert ids("?since=2999-01-01T00:00") == []
    # and paging walks them newest first, two at a time, with links to the next page
    assert ids("?limit=2") + ids("?limit=2&offset=2") + ids("?limit=2&offset=4") == ids("")
    page = web.get("/?workflow=ui.simple&limit=2&offset=2")
    assert "runs 3\u20134 of 5" in page.text
    assert "offset=4" in page.text and "offset=0" in page.text
    # a bad time is a clear 400, not a traceback
    bad = web.get("/?since=yesterday-ish")
    assert bad.status_code == 400 and "not a time" in bad.text


def test_a_run_started_after_the_page_loaded_appears_within_2_s(
    engine: Engine, store_dir: Path
) -> None:
    # Given the runs page as loaded (its live part has a stamp the page polls with)
    engine.run(simple, 1, run_id="before")
    web = client(str(store_dir))
    loaded = web.get("/")
    stamp = loaded.headers["X-Stamp"]
    poll = f"/?partial=1&known={stamp}"
    assert web.get(poll).status_code == 204  # nothing new: no body

    # When a run starts after that
    started = time.monotonic()
    engine.start(waits, run_id="after")

    # Then the page's next poll brings its row, well within 2 s
    def fresh() -> str | None:
        r = web.get(poll)
        return r.text if r.status_code == 200 and 'data-run-id="after"' in r.text else None

    fragment = wait_until(fresh, 2.0, "the new run in the polled fragment")
    assert time.monotonic() - started < 2.0
    assert 'data-run-id="before"' in fragment
    assert 'src="/static/live.js"' in loaded.text and 'data-poll="1.0"' in loaded.text
    assert "setTimeout(tick" in web.get("/static/live.js").text


# -- one run -------------------------------------------------------------------------------------
def test_run_page_names_each_activity_its_attempts_and_children(
    engine: Engine, store_dir: Path
) -> None:
    # Given a run with a retried activity, a signal wait and a child (with its own child)
    start_parent(engine, "p1")

    # When its page is read
    page = client(str(store_dir)).get("/runs/p1").text

    # Then each activity has a row and a bar per attempt, failed ones with their error
    row = re.search(
        r'<div class="row k-activity" data-seq="1" data-name="ui.flaky">.*?</div>\s*</div>',
        page,
        re.S,
    )
    assert row is not None, page
    assert re.findall(r'data-attempt="(\d+)"', row.group()) == ["1", "2", "3"]
    assert row.group().count("b-retry") == 2 and row.group().count("b-ok") == 1
    assert "ConnectionError: down 1" in page and "ConnectionError: down 2" in page
    # the signal wait is a gap with its reason, the child a link
    assert 'data-name="intemporal.signal:approve"' in page and "b-wait" in page
    assert "wait for signal &#39;approve&#39;" in page
    assert 'class="child-link" href="/runs/p1/3"' in page
    # the header: status, result; the raw journal one click away
    assert "st-completed" in page and "&#34;approved&#34;: &#34;alice&#34;" in page
    assert '<details id="journal"' in page and "&#34;attempt_failed&#34;" in page
    child = client(str(store_dir)).get("/runs/p1/3").text
    assert 'class="parent-link" href="/runs/p1"' in child and "/runs/p1/3/1" in child


def test_tree_shows_children_and_grandchildren(engine: Engine, store_dir: Path) -> None:
    start_parent(engine, "t1")
    page = client(str(store_dir)).get("/tree/t1").text
    depths = re.findall(r'data-run-id="([^"]+)" data-depth="(\d)"', page)
    assert depths == [("t1", "0"), ("t1/3", "1"), ("t1/3/1", "2")]
    assert page.count("st-completed") == 3 and "ui.leaf" in page


def test_failed_run_shows_error_traceback_and_compensations(
    engine: Engine, store_dir: Path
) -> None:
    with pytest.raises(ValueError):
        engine.run(saga_wf, 7, run_id="s1")
    page = client(str(store_dir)).get("/runs/s1").text
    assert "st-failed" in page and "ValueError: no room" in page
    assert '<details id="traceback"' in page and "Traceback (most recent call last)" in page
    comp = page.index('<div class="group">compensations</div>')
    assert page.index('data-name="ui.step"') < comp < page.index('data-name="ui.undo"')
    assert 'data-name="ui.undo"' in page and "k-compensation" in page


def test_crash_and_resume_are_marked(tmp_path: Path) -> None:
    # Given a run killed (SIGKILL) in its second activity, then resumed from its journal
    body = """
    @intemporal.activity
    def work(i):
        record(i)
        if i == 1:
            hang()
        return i

    @intemporal.workflow(name=WF_NAME)
    def WORKFLOW():
        return [work(i) for i in range(3)]
    """
    crash = run_and_kill(tmp_path, body, lines=2)
    # (before the resume: an orphan, found by the "orphaned" filter)
    web = client(str(crash.store))
    [row] = web.get("/api/runs?status=orphaned").json()
    assert (row["run_id"], row["status"], row["orphaned"]) == (crash.run_id, "running", True)
    assert 'class="status st-orphaned"' in web.get("/").text
    assert web.get("/api/runs?status=completed").json() == []
    with Engine(FileStore(crash.store), threads=2) as engine:
        assert engine.resume(crash.run_id).result(timeout=10) == [0, 1, 2]

    # When its page is read
    page = client(str(crash.store)).get(f"/runs/{crash.run_id}").text

    # Then the crash and the resume are marked, and the time nobody ran it is a gap
    assert 'class="marker m-crash"' in page and "crash: nothing recorded after this" in page
    assert 'class="marker m-resumed"' in page and "resumed after the crash" in page
    assert 'class="gap"' in page


# -- safety --------------------------------------------------------------------------------------
def dill_bomb(marker: Path) -> dict[str, str]:
    """A stored value whose unpickling would create `marker` (what a crafted journal holds)."""

    class Bomb:
        def __reduce__(self) -> Any:
            return (open, (str(marker), "w"))

    blob = base64.b64encode(pickle.dumps(Bomb())).decode()
    return {"$dill": blob, "$type": "tuple"}


def test_crafted_dill_payload_is_shown_without_being_unpickled(tmp_path: Path) -> None:
    # Given a journal whose arguments, results, error and code reference hold a pickle
    # that would create a marker file when loaded
    marker = tmp_path / "PWNED"
    bomb = dill_bomb(marker)
    store = tmp_path / "store"
    store.mkdir()
    events = [
        {
            "type": "run_started",
            "run_id": "evil",
            "workflow": "w",
            "args": [bomb],
            "kwargs": {"k": bomb},
            "ref": {"module": "m", "qualname": "w", "dill": bomb["$dill"]},
            "ts": 1.0,
        },
        {
            "type": "activity_completed",
            "seq": 1,
            "name": "a",
            "attempts": 1,
            "started": 1.0,
            "result": bomb,
            "ts": 2.0,
        },
        {
            "type": "signal_received",
            "seq": 2,
            "name": "intemporal.signal:s",
            "signal": "s",
            "payload": bomb,
            "ts": 3.0,
        },
        {"type": "side_effect", "seq": 3, "name": "x", "result": bomb, "ts": 3.5},
        {"type": "run_completed", "result": bomb, "ts": 4.0},
    ]
    (store / "evil.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))

    # When every page and endpoint shows it
    web = client(str(store))
    pages = [
        web.get(p) for p in ("/", "/api/runs", "/runs/evil", "/tree/evil", "/api/journal/evil")
    ]

    # Then all answer, the value reads <dill: ...>, and the marker was never created
    assert [p.status_code for p in pages] == [200] * 5
    assert "&lt;dill: tuple, " in pages[2].text and "&lt;dill: tuple, " in pages[0].text
    assert pages[1].json()[0]["result_text"].startswith("<dill: tuple, ")
    assert not marker.exists()


def test_secret_values_show_as_stars(engine: Engine, store_dir: Path) -> None:
    engine.run(simple, intemporal.Secret("hunter2-token"), run_id="sec")
    web = client(str(store_dir))
    for path in ("/", "/runs/sec", "/api/runs", "/api/journal/sec", "/tree/sec"):
        text = web.get(path).text
        assert "hunter2-token" not in text, path
    assert "Secret(***)" in web.get("/runs/sec").text


@pytest.mark.parametrize(
    "location",
    [
        "postgresql://app:pa55word@db.example:5432/prod",
        "postgresql://app:pa5@5word@db.example/prod",  # a password holding "@"
        "postgresql://db.example/prod?sslmode=require&password=pa55word",
    ],
)
def test_store_url_password_never_appears(engine: Engine, store_dir: Path, location: str) -> None:
    engine.run(simple, 1, run_id="one")
    web = client(FileStore(store_dir), location=location)
    for path in ("/", "/runs/one", "/tree/one", "/runs/missing", "/api/runs", "/runs/a..b/../c"):
        response = web.get(path)
        assert "pa55word" not in response.text and "5word" not in response.text, path
    assert "***" in web.get("/").text and "db.example" in web.get("/").text


def test_recorded_text_is_escaped(engine: Engine, store_dir: Path) -> None:
    # A recorded value shown on a page is text, never markup
    engine.run(simple, "<script>alert(1)</script>", run_id="x2")
    web = client(str(store_dir))
    for path in ("/", "/runs/x2", "/tree/x2"):
        response = web.get(path)
        assert "<script>alert(" not in response.text, path
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert "&lt;script&gt;alert(1)" in web.get("/runs/x2").text
    journal = web.get("/api/journal/x2")  # JSON, never sniffed as a page
    assert journal.headers["content-type"] == "application/json"
    assert journal.headers["X-Content-Type-Options"] == "nosniff"


def test_unknown_run_is_404_and_a_bad_id_400(engine: Engine, store_dir: Path) -> None:
    web = client(str(store_dir))
    missing = web.get("/runs/nope")
    assert missing.status_code == 404 and "no run with id &#39;nope&#39;" in missing.text
    assert web.get("/api/journal/nope").json() == {"error": "no run with id 'nope'"}
    assert web.get("/runs/bad%20id").status_code == 400


def test_nothing_the_view_does_changes_a_run(engine: Engine, store_dir: Path) -> None:
    # Given a finished run and a waiting one, and the store's files as they are
    start_parent(engine, "ro")
    engine.start(waits, run_id="ro-wait")
    wait_status(engine, "ro-wait", RunStatus.WAITING)
    # (the run index's shared memory moves as it is read: it is not a run, nor the store's data)
    before = {
        p: p.read_bytes() for p in store_dir.rglob("*") if p.is_file() and ".index" not in p.parts
    }

    # When every page is read, and writes are attempted
    web = client(str(store_dir))
    for path in ("/", "/runs/ro", "/runs/ro-wait", "/tree/ro", "/api/runs", "/api/journal/ro"):
        assert web.get(path).status_code == 200
    for method in ("post", "put", "delete", "patch"):
        assert getattr(web, method)("/runs/ro-wait").status_code == 405
        assert getattr(web, method)("/api/runs").status_code == 405

    # Then no file of the store changed
    after = {
        p: p.read_bytes() for p in store_dir.rglob("*") if p.is_file() and ".index" not in p.parts
    }
    assert after == before


def test_a_token_is_required_on_every_request(engine: Engine, store_dir: Path) -> None:
    engine.run(simple, 1, run_id="one")
    web = client(str(store_dir), token="s3cret")
    for path in ("/", "/runs/one", "/api/runs", "/static/style.css", "/tree/one"):
        assert web.get(path).status_code == 401, path
    assert web.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert web.get("/?token=wrong").status_code == 401
    assert web.get("/api/runs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    # the printed URL's ?token= sets a cookie the page's links and polls then carry
    first = web.get("/?token=s3cret")
    assert first.status_code == 200 and "HttpOnly" in first.headers["set-cookie"]
    assert web.get("/runs/one").status_code == 200


def test_loopback_without_token_refuses_foreign_host_names(engine: Engine, store_dir: Path) -> None:
    # DNS rebinding: a page on evil.example resolving to 127.0.0.1 must not read the runs
    web = TestClient(create_app(str(store_dir), allowed_hosts=["127.0.0.1", "localhost"]))
    assert web.get("/", headers={"Host": "evil.example:8233"}).status_code == 400
    assert web.get("/", headers={"Host": "127.0.0.1:8233"}).status_code == 200


# -- the command ---------------------------------------------------------------------------------
def intemporal_cmd(store: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "intemporal.cli", "--store", str(store), *args]


def run_cmd(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a command to its end (30 s at most), wide, capturing its output."""
    env = {**os.environ, "COLUMNS": "300"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env)


def test_non_loopback_host_without_token_refuses_to_start(engine: Engine, store_dir: Path) -> None:
    proc = run_cmd(intemporal_cmd(store_dir, "ui", "--host", "0.0.0.0", "--port", "0"))
    assert proc.returncode == 1 and proc.stdout == ""
    assert re.fullmatch(
        r"error: --host 0\.0\.0\.0 .* pass --token, for example --token \S{20,}\n", proc.stderr
    )


def test_missing_extra_prints_how_to_install(store_dir: Path, engine: Engine) -> None:
    code = (
        "import sys; sys.modules['starlette'] = None; sys.modules['uvicorn'] = None\n"
        "from intemporal.cli import main; sys.argv = ['intemporal', '--store', sys.argv[1], 'ui']; main()"
    )
    proc = run_cmd([sys.executable, "-c", code, str(store_dir)])
    assert proc.returncode == 1
    assert proc.stderr == "error: the web view needs its extra: pip install 'intemporal[ui]'\n"


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers or {}), timeout=5
        ) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_real_server_on_a_free_port_with_a_token(
    engine: Engine, store_dir: Path, tmp_path: Path
) -> None:
    # Given `intemporal ui --open` serving with a token on a free port of 127.0.0.1
    engine.run(simple, 1, run_id="served")
    opened = tmp_path / "opened.txt"
    opener = tmp_path / "opener.sh"  # the "browser" $BROWSER names: it notes the URL
    opener.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    opener.chmod(0o755)
    args = ["--store", str(store_dir), "ui", "--port", "0", "--token", "tok-123", "--open"]
    with ui_server(args, env={"BROWSER": f"{opener} %s"}) as (proc, printed):
        url = re.fullmatch(r"(http://127\.0\.0\.1:\d+/)\?token=tok-123", printed)
        assert url is not None, printed
        base = url.group(1)
        # Then a request without the token gets 401, with it the runs
        assert get(base)[0] == 401
        assert get(base + "api/runs")[0] == 401
        status, body = get(base + "api/runs", {"Authorization": "Bearer tok-123"})
        assert status == 200 and json.loads(body)[0]["run_id"] == "served"
        status, body = get(base + "runs/served?token=tok-123")
        assert status == 200 and "served" in body
        # --open opened the printed URL, token included
        assert wait_until(lambda: opened.exists() and opened.read_text().strip(), 10, "--open")
        assert opened.read_text().strip() == base + "?token=tok-123"
        # Ctrl-C stops it cleanly
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        assert "Traceback" not in proc.stderr.read()  # type: ignore[union-attr]


def test_a_busy_port_is_one_clear_line(engine: Engine, store_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        proc = run_cmd(intemporal_cmd(store_dir, "ui", "--port", str(port)))
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}: ")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_a_missing_store_is_one_clear_line(tmp_path: Path) -> None:
    proc = run_cmd(intemporal_cmd(tmp_path / "nowhere", "ui", "--port", "0"))
    assert proc.returncode == 1 and proc.stderr.startswith("error: no store at ")
