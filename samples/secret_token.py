"""Passing a credential to a workflow without printing it: `intemporal.Secret`.

    python samples/secret_token.py [--store DIR]

The token is journaled (a resumed run needs it), but `repr`/`str` show `Secret(***)`,
and so do `intemporal show` and `list --json`. The script runs the workflow, then runs
`intemporal show` on the run and checks that the token appears nowhere in its output.
The store holds the token in clear: keep its folder private (see the README's Security).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import intemporal


@intemporal.activity
def fetch_profile(user: str, token: intemporal.Secret[str]) -> dict[str, object]:
    """Call an API with the token (here: pretend to); `token.value` is the real value."""
    return {"user": user, "authorized": token.value.startswith("tok-")}


@intemporal.workflow
def sync_profile(user: str, token: intemporal.Secret[str]) -> dict[str, object]:
    return fetch_profile(user, token)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="journal directory (default: a new temporary one)")
    opts = parser.parse_args()
    token = os.environ.get("API_TOKEN", "tok-9c1e-demo-only")
    with tempfile.TemporaryDirectory(prefix="intemporal-secret-") as tmp:
        store = opts.store or tmp
        with intemporal.Engine(store) as engine:
            secret = intemporal.Secret(token)
            result = engine.run(sync_profile, "alice", secret, run_id="sync-alice")
        print("result:", result)
        print("the token, printed:", secret)
        shown = subprocess.run(
            [sys.executable, "-m", "intemporal.cli", "--store", store, "show", "sync-alice"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        args_line = next(line for line in shown.splitlines() if line.startswith("args"))
        print("intemporal show:", args_line)
        if token in shown:
            sys.exit("the token was printed by intemporal show")


if __name__ == "__main__":
    main()
