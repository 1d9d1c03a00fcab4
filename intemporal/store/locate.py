"""Where the store is when nobody names it: as git finds `.git`.

    $INTEMPORAL_HOME, else the nearest `.intemporal` directory in the current folder or
    one of its parents, else `./.intemporal` (created on first write).

`Engine(store=None)` and every `intemporal` command follow this one rule, so a script
and the command started from different folders of one project find the same store.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_NAME = ".intemporal"
HOME_VARIABLE = "INTEMPORAL_HOME"


@dataclass(frozen=True)
class Located:
    """The store's location and how it was found.

    `where`: a path or URL. `how`: "--store", "$INTEMPORAL_HOME", "found" (a parent's
    `.intemporal`) or "default" (none found: `./.intemporal`). `looked`: the folders searched.
    """

    where: str
    how: str
    looked: list[str] = field(default_factory=list)

    def looked_text(self) -> str:
        """Where the search went, for an error message: "looked for .intemporal in /a/b, /a, /"."""
        if self.how in ("--store", "$INTEMPORAL_HOME"):
            return f"{self.how} names {self.where}"
        shown = self.looked if len(self.looked) <= 6 else [*self.looked[:5], "...", self.looked[-1]]
        return f"looked for {DEFAULT_NAME} in {', '.join(shown)}; none found"


def locate(explicit: str | None = None, start: str | os.PathLike[str] | None = None) -> Located:
    """Find the store: `explicit` (--store), else $INTEMPORAL_HOME, else the nearest
    `.intemporal` directory in `start` (default: the current folder) or a parent, else
    `./.intemporal` relative to `start`. Never creates anything."""
    if explicit:
        return Located(explicit, "--store")
    home = os.environ.get(HOME_VARIABLE)
    if home:
        return Located(home, "$INTEMPORAL_HOME")
    here = Path(start if start is not None else os.getcwd()).resolve()
    looked = []
    for folder in (here, *here.parents):
        looked.append(str(folder))
        candidate = folder / DEFAULT_NAME
        if candidate.is_dir():
            where = DEFAULT_NAME if folder == here else str(candidate)
            return Located(where, "found", looked)
    return Located(DEFAULT_NAME, "default", looked)
