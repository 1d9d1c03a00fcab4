"""`intemporal.Secret`: journaled (the run needs it), never printed (issue 13, API.md part two)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import clone_prefix
from typer.testing import CliRunner

import intemporal
from intemporal import Engine, FileStore, Secret
from intemporal.cli import app
from intemporal.codec import decode, encode, masked, peek

TOKEN = "tok-5f3a-very-secret"


@intemporal.activity
def call_api(token: Secret[str], n: int) -> str:
    return f"called with {len(token.value)} chars, n={n}"


@intemporal.workflow
def uses_token(token: Secret[str], n: int) -> Any:
    first = call_api(token, n)
    return [first, token]


@intemporal.workflow
def nested_secret(config: dict[str, Any]) -> str:
    return str(len(config["auth"][0].value))


def test_secret_hides_its_value_in_repr_and_str() -> None:
    s = Secret(TOKEN)
    assert s.value == TOKEN
    assert repr(s) == str(s) == "Secret(***)"
    assert f"{s}" == "Secret(***)" and TOKEN not in repr([s, {"k": s}])
    assert s == Secret(TOKEN) and s != Secret("other") and s != TOKEN
    assert isinstance(intemporal.Secret, type)


@pytest.mark.parametrize(
    "value",
    [Secret(TOKEN), [1, Secret(TOKEN)], {"auth": [Secret(TOKEN)]}, Secret({"u": "a", "p": 1})],
    ids=["top", "in-list", "in-dict", "of-dict"],
)
def test_secret_is_stored_as_json_and_read_back(value: Any) -> None:
    for codec in ("auto", "json"):
        data = json.loads(json.dumps(encode(value, codec)))
        assert "$dill" not in json.dumps(data)
        assert decode(data) == value
        assert "***" in json.dumps(masked(data)) and TOKEN not in json.dumps(masked(data))
        assert TOKEN not in repr(peek(data))


def test_a_run_journals_the_secret_and_commands_print_stars(tmp_path: Path) -> None:
    # Given a run started with a secret argument, and returning it
    store = FileStore(tmp_path / "store")
    with Engine(store, threads=2) as engine:
        result = engine.run(uses_token, Secret(TOKEN), 3, run_id="tok")
        assert result == [f"called with {len(TOKEN)} chars, n=3", Secret(TOKEN)]
        # the journal keeps the value: a resumed run needs it
        assert TOKEN in (store.root / "tok.jsonl").read_text()
        clone_prefix(store, "tok", "tok-replayed", keep=2)
        again = engine.resume("tok-replayed").result(timeout=10)
        assert again == result and type(again[1]) is Secret
        assert engine.run(nested_secret, {"auth": [Secret(TOKEN)]}, run_id="nested") == str(
            len(TOKEN)
        )

    # When the commands show it
    runner = CliRunner(env={"COLUMNS": "200", "INTEMPORAL_HOME": None})
    outputs = [
        runner.invoke(app, ["--store", str(store.root), *args])
        for args in (
            ["show", "tok"],
            ["show", "tok", "--json"],
            ["list", "--json"],
            ["list"],
            ["show", "nested"],
            ["show", "nested", "--json"],
        )
    ]

    # Then none prints the value; show and --json print *** for it
    for out in outputs:
        assert out.exit_code == 0, out.output
        assert TOKEN not in out.output
    assert "Secret(***)" in outputs[0].stdout
    assert '"$secret": "***"' in outputs[1].stdout
    assert '"$secret": "***"' in outputs[2].stdout


def test_a_pickle_holding_a_secret_is_hidden_from_json_output() -> None:
    data = json.loads(json.dumps(encode((1, Secret(TOKEN)))))
    assert data["$hidden"] is True
    assert decode(data) == (1, Secret(TOKEN))
    shown = json.dumps(masked({"type": "run_completed", "result": data}))
    assert data["$dill"] not in shown and '"$dill": "***"' in shown
    assert repr(peek(data)).startswith("<dill: tuple, ")


def test_hand_made_values_nested_too_deep_are_shown_briefly_never_raising() -> None:
    deep: Any = "x"
    for _ in range(700):
        deep = [deep]
    tree = {"$tree": deep}
    assert peek(tree) == "<a value nested too deep to show>"
    assert "nested too deep" in json.dumps(masked({"result": deep}))
    with pytest.raises(intemporal.SerializationError):
        decode(tree)
