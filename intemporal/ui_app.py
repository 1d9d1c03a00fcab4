"""The web view's ASGI application (Starlette): pages and JSON over an engine's read calls.

Read-only: every route answers GET (and HEAD) only, and reads through `Engine.list_runs`,
`Engine.get_run` and `Engine.history`, which never unpickle; values are shown through
`cli_render.stored_text` (a pickled value reads `<dill: type, size>`, a secret `***`).
`intemporal ui` (in `ui.py`) serves it; tests drive it with Starlette's `TestClient`.

    app = create_app(".intemporal", location=".intemporal")

Routes: `/` (the runs table), `/runs/<run_id>` (one run's timeline), `/tree/<run_id>`,
`/api/runs` (JSON list), `/api/journal/<run_id>` (the masked journal), `/static/...`.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable
from datetime import datetime
from importlib import resources
from typing import Any

from markupsafe import Markup
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Receive, Scope, Send

from . import cli_render as render
from . import store as _store
from .cli_timeline import HEADER_WIDTH
from .codec import masked
from .engine import Engine
from .errors import IntemporalError, RunNotFound
from .store import Event, RunInfo, RunStatus, Store
from .ui_view import RunFilter, child_ids, run_tree, timeline


def _redact(location: str) -> str:
    """`location` with a URL's password (`scheme://user:pw@host`, `?password=`) as `***`."""
    location = re.sub(r"^([A-Za-z][\w+.-]*://[^:/@]*):.*@", r"\1:***@", location)
    return re.sub(r"((?:^|[?&;\s])password=)[^&;\s]*", r"\1***", location, flags=re.I)


# The store layer's own helper where this version has it (it also hides `?password=`).
redact: Callable[[str], str] = getattr(_store, "redact", None) or _redact

FILES = resources.files("intemporal") / "ui_files"
TEMPLATES, STATIC = FILES / "templates", FILES / "static"
PAGE_SIZE = 50
COOKIE = "intemporal_token"
ORPHANED = "orphaned"  # a status filter beside the RunStatus values
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]


class _TokenGate:
    """Answers 401 to any request without the token (header, `?token=`, or the cookie).

    A right `?token=` sets an HttpOnly cookie, so the pages' own links and polls carry it.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self.token = app, token

    def _ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        auth = request.headers.get("authorization", "")
        bearer = auth[7:] if auth.lower().startswith("bearer ") else None
        query = request.query_params.get("token")
        if not (self._ok(bearer) or self._ok(query) or self._ok(request.cookies.get(COOKIE))):
            text = "401: this view needs its token: open the URL `intemporal ui` printed\n"
            await PlainTextResponse(text, status_code=401)(scope, receive, send)
            return
        if not self._ok(query):
            await self.app(scope, receive, send)
            return
        cookie = f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"
        await self.app(scope, receive, _adding(send, [(b"set-cookie", cookie.encode())]))


_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; "
        b"style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),  # a ?token= in the URL is not passed on
]


class _SafeHeaders:
    """Adds to every response: scripts only from this server, no framing, no sniffing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, _adding(send, _HEADERS))


def _adding(send: Send, headers: list[tuple[bytes, bytes]]) -> Send:
    """`send`, with `headers` added to the response's start."""

    async def wrapped(message: Any) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), *headers]
        await send(message)

    return wrapped


class _View:
    """The routes' shared state: the engine, the templates, and a cache of run queues."""

    def __init__(self, engine: Engine, location: str, poll: float) -> None:
        self.engine, self.location, self.poll = engine, redact(location), poll
        self.templates = Jinja2Templates(directory=str(TEMPLATES))
        env = self.templates.env
        env.globals.update(fmt_time=render.fmt_time, fmt_duration=render.fmt_duration)
        env.globals.update(stored=render.stored_text, error_text=render.error_text)
        self.queues: dict[str, str | None] = {}

    def queue_of(self, info: RunInfo) -> str | None:
        """The queue a run was started on (read once from its first event, then cached)."""
        known = getattr(info, "queue", None)
        if known is not None:
            return str(known)
        if info.run_id not in self.queues:
            try:
                first = self.engine.history(info.run_id)[0]
            except (IntemporalError, IndexError):
                return None
            q = first.get("queue")
            self.queues[info.run_id] = str(q) if q else None
        return self.queues[info.run_id]

    def page(self, request: Request, name: str, context: dict[str, Any]) -> Response:
        """Page `name` ("runs", "run", "tree"), or only its live part when the page polls.

        The live part (`NAME_live.html`) has a stamp (a hash of its HTML); a poll
        (`?partial=1&known=STAMP`) whose part has not changed gets 204 No Content.
        """
        q = request.query_params
        context = {**context, "location": self.location, "poll": self.poll}
        live = self.templates.get_template(f"{name}_live.html").render(request=request, **context)
        stamp = hashlib.sha1(live.encode()).hexdigest()[:16]
        headers = {"X-Stamp": stamp, "Cache-Control": "no-store"}
        if q.get("partial") == "1":
            if q.get("known") == stamp:
                return Response(status_code=204, headers=headers)
            return Response(live, media_type="text/html", headers=headers)
        page = self.templates.get_template(f"{name}.html")
        html = page.render(request=request, live=Markup(live), stamp=stamp, **context)
        return Response(html, media_type="text/html", headers=headers)

    # -- the runs table --------------------------------------------------------------------------
    def runs(self, request: Request) -> tuple[list[RunInfo], int, dict[str, Any]]:
        """The runs the request's filters keep, one page of them, and the filters as given."""
        q = request.query_params
        status = q.get("status", "")
        workflow = q.get("workflow", "").strip()
        want = None if status in ("", ORPHANED) else RunStatus(status)
        infos = self.engine.list_runs(status=want, workflow=workflow or None)
        if status == ORPHANED:
            infos = [i for i in infos if i.orphaned]
        keep = RunFilter(
            search=q.get("q", "").strip(),
            queue=q.get("queue", "").strip(),
            since=_when(q.get("since", "")),
            until=_when(q.get("until", "")),
        )
        infos = [i for i in infos if keep.keeps(i, self.queue_of)]
        offset = max(0, _int(q.get("offset"), 0))
        limit = min(500, max(1, _int(q.get("limit"), PAGE_SIZE)))
        shown = {k: q.get(k, "") for k in ("status", "workflow", "queue", "q", "since", "until")}
        return (
            infos[offset : offset + limit],
            len(infos),
            {**shown, "offset": offset, "limit": limit},
        )

    def runs_page(self, request: Request) -> Response:
        rows, total, filters = self.runs(request)
        context = {
            "runs": rows,
            "total": total,
            "filters": filters,
            "statuses": [s.value for s in RunStatus] + [RunStatus.STUCK.value, ORPHANED],
            "queue_of": self.queue_of,
            "paging": _paging(request, filters, total),
        }
        return self.page(request, "runs", context)

    def runs_json(self, request: Request) -> Response:
        rows, total, _ = self.runs(request)
        body = [self.run_json(info) for info in rows]
        return JSONResponse(body, headers={"X-Total-Count": str(total)})

    def run_json(self, info: RunInfo) -> dict[str, Any]:
        """A run summary for `/api/runs`: `RunInfo.to_json()`, its queue, its result as shown."""
        out = info.to_json()  # as `intemporal list --json`: an orphan is "running", orphaned
        out["queue"] = self.queue_of(info)
        out["result_text"] = render.stored_text(info.raw.get("result"), 400)
        return out

    # -- one run ---------------------------------------------------------------------------------
    def run_page(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        info = self.engine.get_run(run_id)
        events = self.engine.history(run_id)
        children = {}
        for cid in child_ids(events):
            with contextlib.suppress(RunNotFound, ValueError):  # a child deleted since
                children[cid] = self.engine.get_run(cid)
        first = events[0]
        args = [render.stored_text(a, HEADER_WIDTH) for a in first.get("args", [])]
        kwargs = first.get("kwargs", {})
        if isinstance(kwargs, dict):
            args += [f"{k}={render.stored_text(v, HEADER_WIDTH)}" for k, v in kwargs.items()]
        err = info.raw.get("error")
        context = {
            "info": info,
            "queue": first.get("queue"),
            "args": ", ".join(args),
            "result": render.stored_text(info.raw.get("result"), HEADER_WIDTH),
            "traceback": err.get("traceback") if isinstance(err, dict) else None,
            "tl": timeline(events, children),
            "children": children,
            "journal": _pretty(events),
            "count": len(events),
        }
        return self.page(request, "run", context)

    def tree_page(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        root = self.engine.get_run(run_id)
        nodes = run_tree(run_id, self.engine.history, self.engine.get_run)
        return self.page(request, "tree", {"info": root, "nodes": nodes})

    def journal(self, request: Request) -> Response:
        events = self.engine.history(request.path_params["run_id"])
        return Response(_pretty(events), media_type="application/json")


def _pretty(events: list[Event]) -> str:
    """The journal as pretty JSON, each secret's value `***` (as `intemporal show --json`)."""
    return json.dumps([masked(ev) for ev in events], indent=2, ensure_ascii=False)


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text else default
    except ValueError:
        return default


_AGO = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _when(text: str) -> float | None:
    """Epoch seconds from a local ISO date/time ("2026-11-29T21:00") or an age ("2h", "7d")."""
    text = text.strip()
    if not text:
        return None
    ago = _AGO.fullmatch(text.lower())
    if ago:
        return time.time() - float(ago.group(1)) * _UNITS[ago.group(2)]
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ValueError(f"not a time: {text!r} (use 2026-11-29T21:00 or an age: 2h, 7d)") from None


def _paging(request: Request, filters: dict[str, Any], total: int) -> dict[str, Any]:
    offset, limit = filters["offset"], filters["limit"]

    def at(o: int) -> str:
        return str(
            request.url.include_query_params(offset=o).remove_query_params(["partial", "known"])
        )

    return {
        "first": offset + 1 if total else 0,
        "last": min(total, offset + limit),
        "prev": at(max(0, offset - limit)) if offset > 0 else None,
        "next": at(offset + limit) if offset + limit < total else None,
    }


def _errors(view: _View) -> dict[Any, Any]:
    """Error pages: 404 for an unknown run, 400 for a bad id or filter, 503 for the store."""

    def answer(code: int) -> Any:
        def handle(request: Request, exc: Exception) -> Response:
            text = str(exc) if code != 503 else f"{type(exc).__name__}: {exc}"
            message = redact(text)
            if request.url.path.startswith("/api/"):
                return JSONResponse({"error": message}, status_code=code)
            template = view.templates.get_template("error.html")
            html = template.render(
                request=request, code=code, message=message, location=view.location
            )
            return Response(html, status_code=code, media_type="text/html")

        return handle

    return {RunNotFound: answer(404), ValueError: answer(400), IntemporalError: answer(503)}


def create_app(
    store: Store | str,
    *,
    location: str | None = None,
    token: str | None = None,
    allowed_hosts: list[str] | None = None,
    poll: float = 1.0,
) -> Starlette:
    """The web view over `store` (a `Store`, a path or a URL), read-only.

    `location` is the store as the header names it (its password is never shown);
    `token`, when given, must come with every request (`Authorization: Bearer T`,
    `?token=T`, or the cookie the latter sets), else 401. `allowed_hosts` limits the
    `Host` header (against DNS rebinding when serving loopback without a token). `poll` is
    the pages' refresh period in seconds.
    """
    engine = Engine(store, worker=False)
    where = location if location is not None else (store if isinstance(store, str) else "")
    view = _View(engine, where, poll)
    get = ["GET", "HEAD"]
    routes = [
        Route("/", view.runs_page, methods=get),
        Route("/api/runs", view.runs_json, methods=get),
        Route("/api/journal/{run_id:path}", view.journal, methods=get),
        Route("/runs/{run_id:path}", view.run_page, methods=get),
        Route("/tree/{run_id:path}", view.tree_page, methods=get),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]
    middleware = [Middleware(_SafeHeaders)]
    if allowed_hosts:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts))
    if token:
        middleware.append(Middleware(_TokenGate, token=token))
    app = Starlette(routes=routes, middleware=middleware, exception_handlers=_errors(view))
    app.state.engine = engine
    return app
