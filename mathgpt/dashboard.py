"""A local dashboard with no account: ``optuna-dashboard`` served on 127.0.0.1 over a study's own storage.

The study's storage is read where the sweep wrote it (the journal file under ``runs/<study>/`` or a
PostgreSQL URL), so the page updates while a sweep runs. The server is optuna-dashboard's WSGI app under the
standard library's threading WSGI server, quiet (no per-request lines), bound to loopback only: it has no
authentication and its API can change trials. Binding loopback is not enough against DNS rebinding (a page
whose name resolves to 127.0.0.1 reaches the port with its own ``Host``), so every request must also name a
loopback host and this server's port (``LoopbackHostOnly``); anything else gets 403 before the app sees it.
"""

from __future__ import annotations

import socketserver
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna

from mathgpt.config import ConfigError
from mathgpt.storage import open_study, resolve_storage

HOST = "127.0.0.1"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


class LoopbackHostOnly:
    """WSGI middleware: pass a request on only when its ``Host`` is a loopback name with the server's port."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app
        self.port = 0  # set once the server is bound (port=0 takes a free one)

    def allowed(self, host: str) -> bool:
        allowed = {f"{name}:{self.port}" for name in LOOPBACK_NAMES}
        return host.strip().lower() in allowed

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if not self.allowed(environ.get("HTTP_HOST", "")):
            body = b"forbidden: this dashboard answers only http://127.0.0.1 or localhost on its own port\n"
            start_response(
                "403 Forbidden", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
            )
            return [body]
        return self.app(environ, start_response)


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser's keep-alive connection must not hold Ctrl-C up


def study_storage(study_name: str, storage: str | None, runs_dir: str | Path) -> optuna.storages.BaseStorage:
    """The study's storage, checked first by the project's one study reader (a bad name is one line)."""
    open_study(study_name, storage, runs_dir)
    return resolve_storage(study_name, storage, runs_dir)[0]


def make_dashboard(
    study_name: str, storage: str | None = None, runs_dir: str | Path = "runs", port: int = 8080
) -> tuple[WSGIServer, str]:
    """A bound (not yet serving) dashboard server and the URL of the study's page.

    ``port=0`` takes a free port (tests). A port in use is one line, not a traceback.
    """
    from optuna_dashboard import wsgi

    store = study_storage(study_name, storage, runs_dir)
    study_id = store.get_study_id_from_name(study_name)
    app = LoopbackHostOnly(wsgi(store))
    try:
        server = make_server(HOST, port, app, server_class=_ThreadingServer, handler_class=_Quiet)
    except OSError as err:
        raise ConfigError(f"cannot listen on {HOST}:{port} ({err.strerror}); pass another --port") from None
    app.port = server.server_port
    url = f"http://{HOST}:{server.server_port}/dashboard/studies/{study_id}"
    return server, url


def start_in_thread(server: WSGIServer) -> threading.Thread:
    """Serve in a daemon thread (tests, notebooks); stop with ``server.shutdown()``."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    return thread


def serve(
    study_name: str, storage: str | None = None, runs_dir: str | Path = "runs", port: int = 8080
) -> int:
    """``mathgpt dashboard``: print the URL, serve until Ctrl-C, then one line and exit code 0."""
    server, url = make_dashboard(study_name, storage, runs_dir, port)
    print(f"dashboard for study '{study_name}': {url}  (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        print("dashboard stopped", file=sys.stderr, flush=True)
    finally:
        server.server_close()
    return 0
