"""``cnntui serve``: the debugger in a browser, with textual-serve.

textual-serve's Server answers ``/`` with a page running xterm.js, and every websocket opened on
``/ws`` (one per tab) starts its own process: the command given, through the shell, with
TEXTUAL_DRIVER set to Textual's web driver. Closing the tab closes the websocket, which tells
that process to quit. This subclass adds what a class needs: a page title, URLs built from the
address the browser used (so an ``ssh -L`` tunnel or a proxy works), and a session limit.
There is no login: anyone who can reach the port gets a session.
"""

from __future__ import annotations

import html
import os
import shlex
import socket
import sys

import aiohttp_jinja2
from aiohttp import web
from textual_serve.server import Server, to_int

TITLE = "cnntui"


def session_command(app_args: list[str]) -> str:
    """The shell command each session runs: this Python's cnntui with the debugger's options."""
    return shlex.join([sys.executable, "-m", "cnntui", *app_args])


def full_message(limit: int) -> str:
    return (f"cnntui: this server already runs its {limit} session{'s' * (limit != 1)} "
            f"(--max-sessions {limit}); close another tab or try again later.")


class CnnServer(Server):
    """textual-serve's Server, counting live sessions and refusing those past ``max_sessions``."""

    def __init__(self, command: str, host: str = "127.0.0.1", port: int = 8000,
                 max_sessions: int | None = None):
        super().__init__(command, host=host, port=port, title=TITLE)
        self.max_sessions = max_sessions
        # the requests of the websockets whose process runs, by id (a Request is unhashable);
        # one event loop, so no lock
        self.live: dict[int, web.Request] = {}

    def full(self) -> bool:
        return self.max_sessions is not None and len(self.live) >= self.max_sessions

    async def handle_index(self, request: web.Request) -> web.StreamResponse:
        """The stock page, but titled, and with URLs on the host and port the browser asked for
        (textual-serve writes ``http://HOST:PORT`` from --host and --port into the page, which a
        tunnel to another local port, a 0.0.0.0 bind or a proxy in front make unreachable)."""
        if self.full():
            return web.Response(status=503, text=full_message(self.max_sessions) + "\n")
        # a proxy says what the browser used; without one, Host is it (``ssh -L`` keeps it)
        scheme = request.headers.get("X-Forwarded-Proto", request.scheme)
        base = f"{scheme}://{request.host}"
        ws = ("wss" if scheme == "https" else "ws") + base[len(scheme):]
        context = {
            "font_size": to_int(request.query.get("fontsize", "16"), 16),
            "app_websocket_url": ws + str(request.app.router["websocket"].url_for()),
            "config": {"static": {"url": f"{base}/static/"}},
            "application": {"name": self.title},
        }
        response = aiohttp_jinja2.render_template("app_index.html", request, context)
        response.text = response.text.replace(  # the stock page has no <title>
            "<head>", f"<head>\n    <title>{html.escape(self.title)}</title>", 1)
        return response

    async def handle_websocket(self, request: web.Request) -> web.WebSocketResponse:
        if self.full():
            return await self._refuse(request)
        self.live[id(request)] = request
        try:
            return await super().handle_websocket(request)
        finally:
            del self.live[id(request)]

    async def on_shutdown(self, app: web.Application) -> None:
        """Ctrl+C or SIGTERM: drop every tab's connection, which makes textual-serve tell its
        process to quit. Otherwise aiohttp waits for the websockets to close by themselves (it
        took 20-30 s) and then cancels them, which can leave a process behind."""
        for request in list(self.live.values()):
            if request.transport is not None:
                request.transport.close()

    async def _refuse(self, request: web.Request) -> web.WebSocketResponse:
        """Write why onto the tab's terminal and keep the socket open until the tab goes (on a
        close the page would cover the message with its "Session ended" box); no process."""
        websocket = web.WebSocketResponse(heartbeat=15)
        await websocket.prepare(request)
        await websocket.send_bytes(
            f"\x1b[2J\x1b[H\r\n  {full_message(self.max_sessions)}\r\n".encode())
        async for _ in websocket:
            pass
        return websocket

    async def on_startup(self, app: web.Application) -> None:
        host = f"[{self.host}]" if ":" in self.host else self.host
        limit = "" if self.max_sessions is None else f", at most {self.max_sessions} at once"
        self.console.print(f"cnntui serve: http://{host}:{self.port} (one session per tab{limit})")
        self.console.print("No login: anyone who can reach this address gets a session.",
                           highlight=False)
        self.console.print("Ctrl+C stops the server and its sessions.")


def check_address(host: str, port: int) -> None:
    """Raise OSError with one sentence if ``host:port`` cannot be listened on, before the server
    prints that it is serving."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds
            s.bind(address)
    except OSError as e:
        raise OSError(f"cannot listen on {host} port {port}: {e.strerror or e}") from None


def serve(app_args: list[str], host: str, port: int, max_sessions: int | None) -> int:
    """Serve the debugger with ``app_args`` (already checked) until Ctrl+C or SIGTERM."""
    check_address(host, port)
    # each session's process inherits these: its terminal is xterm.js, which draws 24-bit colour
    # whatever the server's own terminal is (--color auto reads them; NO_COLOR still counts)
    os.environ.update(TERM="xterm-256color", COLORTERM="truecolor")
    CnnServer(session_command(app_args), host=host, port=port,
              max_sessions=max_sessions).serve()
    return 0
