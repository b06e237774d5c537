"""``cnntui serve``: its options, the page (title, URLs through a tunnel or a proxy), the session
limit, and files sent to the browser instead of the server's disk. The real-browser test is in
test_serve_browser.py."""

from __future__ import annotations

import io
import re
import socket
from types import SimpleNamespace

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from cnntui import cli, model


@pytest.fixture
def no_server(monkeypatch):
    """Fail the test if the server would start."""
    import screens.serve

    def serve(*a, **k):  # noqa: ANN002, ANN003
        raise AssertionError("the server started")

    monkeypatch.setattr(screens.serve, "serve", serve)


@pytest.mark.parametrize("argv, message", [
    (["serve", "--weights", "nope.npz"], "cnntui: weights file nope.npz does not exist"),
    (["serve", "--index", "99999"], "cnntui: there is no digit 99999"),
])
def test_bad_debugger_options_are_told_before_the_server_starts(no_server, capsys, argv,
                                                                 message):
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(message) and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, message", [
    (["serve", "--port", "0"], "'0' is not a port"),
    (["serve", "--max-sessions", "none"], "'none' is not a number of sessions"),
    (["serve", "--bogus"], "unrecognized arguments: --bogus"),
    (["serve", "--index", "x"], "'x' is not a whole number"),
    (["serve", "trace"], "cnntui serve runs the debugger; trace is a command of its own"),
    (["trace", "--port", "8000"], "unrecognized arguments: --port 8000"),  # serve's alone
])
def test_bad_serve_options_exit_with_one_line(no_server, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err.splitlines()[-1]


def test_the_debuggers_options_pass_through_to_every_session(monkeypatch):
    import screens.serve

    seen = {}
    monkeypatch.setattr(screens.serve, "serve", lambda *a: seen.setdefault("args", a) and 0)
    argv = ["serve", "--index", "7", "--port", "8123", "--weights=seed", "--color", "256"]
    assert cli.main(argv) == 0
    app_args, host, port, limit = seen["args"]
    assert (app_args, host, port, limit) == (
        ["--index", "7", "--weights=seed", "--color", "256"], "127.0.0.1", 8123, None)
    command = screens.serve.session_command(app_args)
    assert command.endswith("-m cnntui --index 7 --weights=seed --color 256")


def test_help_says_there_is_no_login(capsys):
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "no login" in text and "ssh -L 8000:localhost:8000" in text
    assert "default 127.0.0.1" in text


def test_a_port_in_use_is_one_sentence(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert cli.main(["serve", "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"cnntui: cannot listen on 127.0.0.1 port {port}: ")
    assert len(err.splitlines()) == 1


# ---- the page and the session limit --------------------------------------------------------

async def _client(**kw) -> tuple[TestClient, object]:
    from screens.serve import CnnServer

    server = CnnServer("true", **kw)
    client = TestClient(TestServer(await server._make_app()))
    await client.start_server()
    return client, server


def _ws_url(page: str) -> str:
    return re.search(r'data-session-websocket-url="([^"]+)"', page).group(1)


async def test_the_page_names_cnntui_and_its_urls_follow_the_browser():
    client, _ = await _client(port=8000)
    try:
        page = await (await client.get("/")).text()
        assert "<title>cnntui</title>" in page
        # through ssh -L 9000:localhost:8000 the browser asks for localhost:9000
        page = await (await client.get("/", headers={"Host": "localhost:9000"})).text()
        assert _ws_url(page) == "ws://localhost:9000/ws"
        assert 'href="http://localhost:9000/static/css/xterm.css"' in page
        # behind a proxy that ends TLS
        page = await (await client.get("/", headers={"Host": "class.example.org",
                                                     "X-Forwarded-Proto": "https"})).text()
        assert _ws_url(page) == "wss://class.example.org/ws"
    finally:
        await client.close()


async def test_past_max_sessions_the_page_and_the_websocket_say_why():
    client, server = await _client(max_sessions=2)
    try:
        tab = SimpleNamespace(transport=None)  # what on_shutdown reads of a live request
        server.live = {1: tab}
        assert (await client.get("/")).status == 200
        server.live = {1: tab, 2: tab}  # two tabs running
        response = await client.get("/")
        assert response.status == 503
        assert "already runs its 2 sessions (--max-sessions 2)" in await response.text()
        # a tab that loaded the page before the others connected: told on its terminal
        ws = await client.ws_connect("/ws")
        text = (await ws.receive_bytes(timeout=10)).decode()
        assert "already runs its 2 sessions" in text
        await ws.close()
        assert len(server.live) == 2  # no process was started for it
    finally:
        await client.close()


# ---- files go to the browser under the web driver ------------------------------------------

def _as_web(app, monkeypatch) -> list[tuple[str, bytes, str]]:
    """Make ``app`` believe it runs under the web driver; return what it delivers."""
    from screens.app import CnnApp

    delivered = []
    monkeypatch.setattr(CnnApp, "is_web", property(lambda self: True))

    def deliver_binary(file, *, save_filename, mime_type, name, **kw):  # noqa: ANN001, ANN003
        delivered.append((save_filename, file.read(), mime_type))
        return "key"

    monkeypatch.setattr(app, "deliver_binary", deliver_binary)
    return delivered


async def test_a_web_screenshot_goes_to_the_browser_not_the_disk(tmp_path, monkeypatch):
    from pilot_helpers import make_app, wait_for_exports

    from screens.figure import png_converter

    app = make_app(model.weights_from(model.SEED)[0], screenshot_dir=tmp_path)
    delivered = _as_web(app, monkeypatch)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+s")
        await wait_for_exports(pilot)
    assert list(tmp_path.iterdir()) == []
    (name, content, mime), *png = delivered
    assert [(n, m) for n, _, m in png] == ([(name[:-4] + ".png", "image/png")]
                                           if png_converter() else [])
    assert re.fullmatch(r"cnntui-digit\d+-x-\d{8}-\d{6}\.svg", name) and mime == "image/svg+xml"
    assert content.startswith(b"<svg")
    assert any("sent to your browser" in n.message for n in app._notifications)


async def test_web_saved_weights_go_to_the_browser_not_the_disk(tmp_path, monkeypatch):
    from test_fixes_issue9 import UI_SIZE, _save_as, _training_app

    monkeypatch.chdir(tmp_path)
    app = _training_app(tmp_path)
    delivered = _as_web(app, monkeypatch)
    async with app.run_test(size=UI_SIZE) as pilot:
        await pilot.press("t")
        await _save_as(pilot, "mine")
        trained = app.screen.trainer.params("float64")
    assert list(tmp_path.iterdir()) == []
    [(name, content, mime)] = delivered
    assert name == "mine.npz" and mime == "application/octet-stream"
    with np.load(io.BytesIO(content), allow_pickle=False) as saved:
        for k, v in trained.items():
            np.testing.assert_array_equal(saved[k], v)
