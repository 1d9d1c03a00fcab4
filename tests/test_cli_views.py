"""`intemporal show`, `list`, `count` and `tree` as people read them (issue 19).

| kind                                                        | tests                               |
| ----------------------------------------------------------- | ----------------------------------- |
| show reads at 80, 100 and 200 columns; --full shows all     | test_show_at_*                      |
| the traceback starts at the user's code                     | test_the_traceback_*                |
| a parent's rows show each child's outcome, result, duration | test_a_parent_*                     |
| run_suspended folded, no owner ids                          | test_repeated_suspensions_*         |
| a waiting run's header says what it waits for               | test_a_waiting_run_header_*         |
| a resumed crash is marked (real SIGKILL)                    | test_a_run_resumed_after_a_crash_*  |
| one state vocabulary (orphaned)                             | test_orphaned_*                     |
| list paging, filters, zones, column names; count            | test_list_*, test_count_*           |
| tree; show --follow                                         | test_tree_*, test_show_follow_*     |
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import Cli, clone_prefix, parked
from process_helpers import journal_events, run_and_kill, wait_until
from typer.testing import CliRunner, Result

import intemporal
from intemporal import Engine, RunStatus, cli_inspect
from intemporal.cli import app

LONG = "x" * 250 + "-THE-END"


@intemporal.activity(retry=intemporal.RetryPolicy(max_attempts=1))
def views_long(n: int) -> str:
    return f"{n}:" + LONG


@intemporal.activity(retry=intemporal.RetryPolicy(max_attempts=1))
def views_double(n: int) -> int:
    return 2 * n


def views_inner_failure(n: int) -> None:
    raise KeyError(f"no item {n}")


@intemporal.activity(retry=intemporal.RetryPolicy(max_attempts=1))
def views_broken(n: int) -> int:
    views_inner_failure(n)
    return n


@intemporal.workflow(name="views.long")
def long_result(n: int) -> str:
    return views_long(n)


@intemporal.workflow(name="views.failing")
def failing(n: int) -> int:
    return views_broken(n)


@intemporal.workflow(name="views.kid")
def kid(n: int) -> int:
    return views_double(n)


@intemporal.workflow(name="views.parent")
def parent(n: int) -> list[int]:
    return [kid(i) for i in range(n)]


@intemporal.workflow(name="views.approval")
def approval(n: int) -> Any:
    views_double(n)
    return intemporal.wait_for_signal("approve", timeout=3600)


@intemporal.workflow(name="views.sleeper")
def sleeper(n: int) -> int:
    intemporal.sleep(3600)
    return n


@intemporal.workflow(name="views.waiting_parent")
def waiting_parent(n: int) -> Any:
    return approval(n)


@intemporal.workflow(name="views.queued", queue="reports")
def queued(n: int) -> int:
    return views_double(n)


@pytest.fixture
def engine(file_engine: Engine) -> Engine:
    return file_engine


def at(home: Path, width: int, *args: str) -> Result:
    """`intemporal --store HOME ARGS` in a terminal `width` columns wide."""
    runner = CliRunner(env={"COLUMNS": str(width), "INTEMPORAL_HOME": None})
    return runner.invoke(app, ["--store", str(home), *args])


def wide(home: Path) -> Cli:
    return lambda *args: at(home, 200, *args)


# -- show at every width -----------------------------------------------------------------------
@pytest.mark.parametrize("width", [80, 100, 120, 200])
def test_show_at_any_width_fits_and_cuts_values_with_an_ellipsis(
    home: Path, engine: Engine, width: int
) -> None:
    engine.run(long_result, 7, run_id="long-1")

    out = at(home, width, "show", "long-1").stdout

    lines = out.splitlines()
    assert max(len(line) for line in lines) <= width, out
    assert "…" in out and "-THE-END" not in out.replace("\n", "")  # cut, not wrapped
    shown = max(len(m) for m in re.findall(r"7:x+", out))
    assert shown >= width - 80, f"a value gets only {shown} characters at {width} columns"
    event = next(i for i, line in enumerate(lines) if "activity_completed" in line)
    if width < 100:  # the details go under the event line, indented
        assert "7:xxx" not in lines[event] and lines[event + 1].lstrip().startswith('"7:xxx')
    else:  # one row per event
        assert "7:xxx" in lines[event]


@pytest.mark.parametrize("width", [80, 200])
def test_show_full_prints_values_whole(home: Path, engine: Engine, width: int) -> None:
    engine.run(long_result, 7, run_id="long-1")

    out = at(home, width, "show", "long-1", "--full").stdout

    assert "…" not in out
    assert "THE-END" in out  # the end of the 260-character value is there
    assert max(len(line) for line in out.splitlines()) <= width


def test_show_at_200_columns_never_cuts_at_30_characters(home: Path, engine: Engine) -> None:
    engine.run(long_result, 7, run_id="long-1")
    out = at(home, 200, "show", "long-1").stdout
    assert re.search(r"7:x{100}", out), out


# -- the traceback -----------------------------------------------------------------------------
def _traceback(out: str) -> str:
    return out[out.index("Traceback (most recent call last)") :]


def test_the_traceback_starts_at_the_users_code(home: Path, engine: Engine) -> None:
    with pytest.raises(KeyError):
        engine.run(failing, 3, run_id="bad-1")

    out = at(home, 100, "show", "bad-1").stdout
    tb = _traceback(out)

    frames = re.findall(r'File "([^"]+)"', tb)
    assert frames and all(f.endswith("test_cli_views.py") for f in frames), frames
    assert "in failing" in tb and "in views_inner_failure" in tb
    assert "KeyError: 'no item 3'" in tb
    assert "intemporal frames left out" in out
    full = _traceback(at(home, 100, "show", "bad-1", "--full").stdout)
    assert re.search(r'File "[^"]*intemporal[/\\](engine|replay|api)\.py"', full), full


# -- children, suspensions, waits ----------------------------------------------------------------
def test_a_parent_timeline_shows_each_childs_outcome_result_and_duration(
    home: Path, engine: Engine
) -> None:
    engine.run(parent, 3, run_id="p")

    for width in (80, 200):
        out = at(home, width, "show", "p").stdout
        for i, value in enumerate([0, 2, 4], 1):
            assert re.search(rf"p/{i} completed in \d+(ms|\.\d+s) → {value}\b", out), out
        assert "child runs  3 (3 finished)" in out


def test_repeated_suspensions_are_one_row_and_owner_ids_are_not_shown(home: Path) -> None:
    parked(home, approval, 1, "w-1")
    journal = home / "w-1.jsonl"
    last = journal.read_text().splitlines()[-1]
    suspended = json.loads(last)
    assert suspended["type"] == "run_suspended" and suspended["owner"]
    with open(journal, "a") as f:  # the run woke twice, found nothing, parked again
        f.write(last + "\n" + last + "\n")

    for width in (80, 200):
        out = at(home, width, "show", "w-1").stdout
        assert out.count("run_suspended") == 1, out
        assert "(3 times)" in out
        assert suspended["owner"] not in out
        assert "owner" not in out


def test_a_waiting_run_header_names_the_signal_and_its_deadline(home: Path) -> None:
    parked(home, approval, 1, "w-1")
    out = at(home, 200, "show", "w-1").stdout
    assert re.search(
        r"waits for\s+signal 'approve', deadline \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+ \(in 5\dm", out
    ), out


def test_a_waiting_run_header_names_its_timer(home: Path) -> None:
    parked(home, sleeper, 1, "s-1")
    out = at(home, 80, "show", "s-1").stdout
    assert re.search(r"waits for\s+a timer, due \d{4}-\d\d-\d\d", out), out


def test_a_waiting_run_header_names_the_children_it_waits_for(home: Path) -> None:
    parked(home, waiting_parent, 1, "wp")
    wait_until(lambda: Engine(str(home), worker=False).get_run("wp/1").status is RunStatus.WAITING)
    out = at(home, 200, "show", "wp").stdout
    assert re.search(r"waits for\s+child runs wp/1 \((waiting|orphaned)\)", out), out


CRASH_BODY = """
@intemporal.activity
def crash_step(i):
    record("step", i)
    if i == 2:
        hang()
    return i

@intemporal.workflow(name=WF_NAME)
def crash_wf(n):
    return sum(crash_step(i) for i in range(n))

WORKFLOW = crash_wf
"""


def test_a_run_resumed_after_a_crash_is_marked(tmp_path: Path) -> None:
    # Given a run SIGKILLed inside its third step
    crash = run_and_kill(tmp_path, CRASH_BODY, lines=3, args=(4,), run_id="crashed")
    cli = wide(crash.store)
    assert "run_recovered" not in cli("show", "crashed").stdout
    # When it is resumed from the terminal
    resumed = cli("resume", "crashed", "--import", str(crash.script))
    assert resumed.exit_code == 0, resumed.output
    # Then the journal marks where it went on, and `show` says it was resumed after a crash
    kinds = [e["type"] for e in journal_events(crash.store, "crashed")]
    assert kinds.count("run_recovered") == 1
    assert kinds.index("run_recovered") == 3  # after run_started and two completed steps
    out = cli("show", "crashed").stdout
    assert "resumed after a crash" in out and re.search(r"resumed\s+once after a crash", out)
    # And a run that never crashed has no such mark
    with Engine(str(crash.store)) as engine:
        engine.run(kid, 1, run_id="clean")
        engine.resume("clean")
    assert "run_recovered" not in cli("show", "clean", "--json").stdout


# -- one vocabulary --------------------------------------------------------------------------------
def test_orphaned_means_the_same_in_list_show_and_status_filters(home: Path) -> None:
    # Given a run parked by an engine that closed cleanly, and a crashed running run
    parked(home, approval, 1, "parked")
    with Engine(str(home)) as engine:
        engine.run(kid, 1, run_id="done")
        clone_prefix(engine.store, "done", "crashed", keep=2)
    cli = wide(home)

    table = cli("list").stdout
    orphans = set(_ids(cli("list", "--json", "--status", "orphaned")))
    rows = [re.match(r"\s*(\S+)\s+\S+\s+orphaned\s", line) for line in table.splitlines()]
    shown = {m.group(1) for m in rows if m}

    assert orphans == shown == {"parked", "crashed"}
    assert cli("count", "--status", "orphaned").stdout.strip() == "2"
    # a cleanly parked run is not said to have crashed; a crashed one is
    parked_view = cli("show", "parked").stdout
    assert (
        "crash" not in parked_view and "the engine that kept it waiting has stopped" in parked_view
    )
    assert "its process stopped mid-run" in cli("show", "crashed").stdout
    # --status waiting / running include the orphaned runs of that status, as --json says
    waiting = cli("list", "--json", "--status", "waiting").stdout.splitlines()
    seen = [(r["run_id"], r["status"], r["orphaned"]) for r in map(json.loads, waiting)]
    assert seen == [("parked", "waiting", True)]


# -- list --------------------------------------------------------------------------------------
def _ids(result: Result) -> list[str]:
    assert result.exit_code == 0, result.output
    return [json.loads(line)["run_id"] for line in result.stdout.splitlines()]


@pytest.fixture
def many(home: Path, engine: Engine) -> list[str]:
    """25 completed runs r-00 ... r-24, r-24 newest."""
    ids = [f"r-{i:02d}" for i in range(25)]
    for rid in ids:
        engine.run(kid, 1, run_id=rid)
    return ids


def test_list_shows_the_newest_20_by_default_then_pages(home: Path, many: list[str]) -> None:
    cli = wide(home)
    newest = list(reversed(many))
    assert _ids(cli("list", "--json")) == newest[:20]
    assert _ids(cli("list", "--json", "--all")) == newest
    assert _ids(cli("list", "--json", "--limit", "5", "--offset", "5")) == newest[5:10]
    assert _ids(cli("list", "--json", "--offset", "20")) == newest[20:]
    table = cli("list").stdout
    assert "1-20 of 25 runs" in table and "--all" in table
    assert "r-04" not in table and "r-05" in table


def test_list_since_and_until_take_durations_and_dates(home: Path, engine: Engine) -> None:
    engine.run(kid, 1, run_id="old")
    store = home / "old.jsonl"
    events = [json.loads(x) for x in store.read_text().splitlines()]
    for e in events:  # the run happened three days ago
        e["ts"] = e["ts"] - 3 * 86400
    store.write_text("".join(json.dumps(e) + "\n" for e in events))
    engine.run(kid, 1, run_id="new")
    cli = wide(home)

    assert _ids(cli("list", "--json", "--since", "2d")) == ["new"]
    assert _ids(cli("list", "--json", "--until", "1d")) == ["old"]
    assert _ids(cli("list", "--json", "--since", "90h", "--until", "48h")) == ["old"]
    day = time.strftime("%Y-%m-%d", time.localtime(time.time() - 3 * 86400))
    assert _ids(cli("list", "--json", "--since", day, "--until", day + "T23:59:59")) == ["old"]
    bad = cli("list", "--since", "yesterday-ish")
    assert bad.exit_code == 2 and "not a duration" in bad.stderr


def test_list_filters_by_queue_and_parent(home: Path, engine: Engine) -> None:
    engine.run(queued, 1, run_id="q-1")
    engine.run(parent, 2, run_id="p")
    cli = wide(home)
    assert _ids(cli("list", "--json", "--queue", "reports")) == ["q-1"]
    assert sorted(_ids(cli("list", "--json", "--parent", "p"))) == ["p/1", "p/2"]
    assert cli("list", "--parent", "nope").exit_code == 1  # an unknown parent is an error
    assert cli("count", "--parent", "p").stdout.strip() == "2"
    assert json.loads(cli("count", "--json").stdout) == {"count": 4}


def test_list_keeps_its_column_names_at_every_width(home: Path, engine: Engine) -> None:
    engine.run(kid, 1, run_id="a-rather-long-run-identifier-0042")
    heads = {}
    for width in (80, 100, 130, 200):
        out = at(home, width, "list").stdout
        assert max(len(line) for line in out.splitlines()) <= width
        header = next(line for line in out.splitlines() if "run id" in line)
        heads[width] = re.split(r"\s{2,}", header.strip())
        assert "a-rather-long" in out and "identifier" in out
    assert set(heads[80]) <= set(heads[200])
    assert "activities" in heads[80] and "activities" in heads[200]


def test_list_times_carry_their_zone_and_utc_on_request(home: Path, engine: Engine) -> None:
    engine.run(kid, 1, run_id="t-1")
    utc = at(home, 200, "list", "--utc").stdout
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(engine.get_run("t-1").created_at))
    assert re.search(rf"{when}:\d\d UTC", utc), utc
    local_zone = time.strftime("%Z", time.localtime())
    assert re.search(rf"\d\d:\d\d:\d\d {local_zone}", at(home, 200, "list").stdout)
    assert f"times in {local_zone}" in at(home, 80, "list").stdout
    assert re.search(r"started\s+\d{4}-.* UTC", at(home, 80, "show", "t-1", "--utc").stdout)


# -- tree and follow ---------------------------------------------------------------------------------
def test_tree_draws_a_run_and_its_children(home: Path, engine: Engine) -> None:
    engine.run(parent, 2, run_id="p")
    out = at(home, 80, "tree", "p").stdout
    assert re.search(r"^p\s+views\.parent\s+completed\s+\S+\s+→ \[0, 2\]", out, re.M), out
    assert re.search(r"├── p/1\s+views\.kid\s+completed", out), out
    assert re.search(r"└── p/2\s+views\.kid\s+completed\s+\S+\s+→ 2", out), out
    tree = json.loads(at(home, 80, "tree", "p", "--json").stdout)
    assert [c["run_id"] for c in tree["children"]] == ["p/1", "p/2"]
    assert tree["children"][1]["status"] == "completed" and tree["children"][0]["children"] == []
    assert at(home, 80, "tree", "nope").exit_code == 1


GO = threading.Event()


@intemporal.activity(retry=intemporal.RetryPolicy(max_attempts=1))
def views_gated(n: int) -> int:
    assert GO.wait(10), "the test never opened the gate"
    return n


@intemporal.workflow(name="views.gated")
def gated(n: int) -> int:
    return views_gated(n) + views_double(n)


def test_show_follow_prints_new_events_until_the_run_ends(
    home: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a run blocked in its first step
    GO.clear()
    handle = engine.start(gated, 5, run_id="g-1")

    def first_poll_opens_the_gate(seconds: float) -> None:
        GO.set()  # `show --follow` printed what there was and now polls: let the run go on
        time.sleep(min(seconds, 0.05))

    monkeypatch.setattr(cli_inspect, "_pause", first_poll_opens_the_gate)
    # When following it
    result = at(home, 100, "show", "g-1", "--follow")
    # Then the events recorded after the first view are printed, and it stops at the end
    assert result.exit_code == 0, result.output
    assert handle.result(timeout=10) == 15
    before, after = result.stdout.split("following g-1")
    assert "activity_completed" not in before
    assert after.count("activity_completed") == 2 and "run_completed" in after
    assert "run g-1 ended completed" in after
    events = at(home, 100, "show", "g-1", "--follow", "--json").stdout.splitlines()
    assert json.loads(events[-1])["type"] == "run_completed"


FLAKY = {"left": 0}


@intemporal.activity(retry=intemporal.RetryPolicy(max_attempts=3, initial_interval=0.01))
def views_flaky(n: int) -> int:
    if FLAKY["left"] > 0:
        FLAKY["left"] -= 1
        raise ConnectionError("the warehouse did not answer within thirty seconds " * 3)
    return n


@intemporal.workflow(name="views.retried")
def retried(n: int) -> int:
    return views_flaky(n)


def test_a_retry_shows_its_delay_even_when_the_error_is_cut(
    home: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(FLAKY, "left", 2)
    engine.run(retried, 4, run_id="rt")
    out = at(home, 80, "show", "rt").stdout
    assert len(re.findall(r"^\s+\(retry in \d+ms\) ConnectionError: the warehouse", out, re.M)) == 2
    assert re.search(r"activity_completed\s+views_flaky\s+attempt 3", out), out
