"""`intemporal ui`: serve a read-only web view of the store until Ctrl-C.

    intemporal ui                          # http://127.0.0.1:8233
    intemporal --store /srv/runs ui --open
    intemporal ui --host 0.0.0.0 --token "$(openssl rand -hex 16)"

Safe by default: it binds to 127.0.0.1, where it accepts only requests addressed to a
loopback name (against DNS rebinding). Any other `--host` needs `--token T`, which
every request must then carry (the printed URL has it as `?token=`); without one the
command refuses to start and prints a fresh token to use. Nothing the page does changes
a run, and no stored value is ever unpickled to be shown.

The web framework (Starlette, uvicorn, Jinja2) comes with the extra `intemporal[ui]`;
this module imports it only when the command runs.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import threading
import webbrowser
from typing import Annotated

import typer

from .cli_support import UserError, _location, _open

EXTRA_HINT = "the web view needs its extra: pip install 'intemporal[ui]'"
DEFAULT_PORT = 8233


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost": a host only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one), or a `UserError` saying why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def ui(
    ctx: typer.Context,
    host: Annotated[
        str, typer.Option(help="Address to listen on; other than loopback needs --token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free one).")] = (
        DEFAULT_PORT
    ),
    token: Annotated[
        str | None,
        typer.Option(
            envvar="INTEMPORAL_UI_TOKEN",
            help="A secret every request must carry (Authorization: Bearer, or ?token=).",
        ),
    ] = None,
    open_browser: Annotated[
        bool, typer.Option("--open", help="Open the page in a web browser.")
    ] = False,
) -> None:
    """Serve a read-only web view of the store (runs, a run's timeline, its tree) until Ctrl-C.

    Pages: / (the runs, live), /runs/RUN (one run's timeline), /tree/RUN, and /api/runs
    (JSON). It binds to 127.0.0.1 unless --host says otherwise; any other host needs
    --token, which every request must carry. Needs the extra: pip install 'intemporal[ui]'.

    \b
    Examples:
      intemporal ui --open
      intemporal ui --host 0.0.0.0 --port 8080 --token s3cret-t0ken
    """
    try:
        import uvicorn

        from .ui_app import LOOPBACK_HOSTS, create_app
    except ImportError:
        raise UserError(EXTRA_HINT) from None
    if not is_loopback(host) and not token:
        raise UserError(
            f"--host {host} lets other machines read your runs: pass --token, "
            f"for example --token {secrets.token_urlsafe(24)}"
        )
    location = _location(ctx)
    store = _open(ctx)
    hosts = None if token else [*LOOPBACK_HOSTS, host.strip("[]")]
    app = create_app(store, location=location, token=token, allowed_hosts=hosts)
    sock = _bind(host, port)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    shown = f"[{shown}]" if ":" in shown and not shown.startswith("[") else shown
    url = f"http://{shown}:{sock.getsockname()[1]}/" + (f"?token={token}" if token else "")
    typer.echo(f"intemporal ui: serving {url} (read-only; Ctrl-C stops)", err=False)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    if open_browser:
        threading.Timer(0.5, webbrowser.open, (url,)).start()
    try:
        server.run(sockets=[sock])  # until Ctrl-C (uvicorn then re-raises the signal)
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
        app.state.engine.close()
