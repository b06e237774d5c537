"""``cnntui serve`` in a real browser: headless Chromium driven by selenium opens the page, waits
for the debugger, steps with a key, takes a screenshot and saves the weights (both arrive as
downloads), is refused a second tab past --max-sessions, and closes the tab; the session's
process must then end, and stopping the server ends the sessions still open. How the terminal
is read: serve_helpers.py."""

from __future__ import annotations

import os

import pytest
from serve_helpers import (
    CHROMEDRIVER,
    CHROMIUM,
    ended,
    forward,
    header,
    make_browser,
    open_tab,
    screen,
    send_keys,
    sessions,
    start_server,
    stop_server,
    wait,
)

if not (CHROMIUM and CHROMEDRIVER):
    reason = ("needs Debian's chromium and chromium-driver (apt-get install chromium "
              "chromium-driver)")
    if os.environ.get("CI"):  # .ci/run installs them: missing there is a failure, not a skip
        raise RuntimeError(f"this CI run must have chromium: it {reason}")
    pytest.skip(reason, allow_module_level=True)
pytest.importorskip("selenium.webdriver", reason="needs selenium (the test extra)")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

from cnntui import model  # noqa: E402
from screens.training import DEFAULT_SAVE_PATH  # noqa: E402


@pytest.fixture
def server(tmp_path):
    proc, url = start_server(["--max-sessions", "1", "--weights", "seed", "--index", "3"],
                             tmp_path)
    try:
        yield proc, url
    finally:
        stop_server(proc)


@pytest.fixture
def browser(tmp_path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = make_browser(downloads)
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


def test_a_browser_tab_steps_saves_a_screenshot_and_its_session_ends(server, browser,
                                                                     tmp_path):
    proc, url = server
    first = browser.current_window_handle
    session_tab = open_tab(browser, url)
    assert browser.title == "cnntui"
    top = wait("the debugger on the page", lambda: "step 1/" in header(browser)
               and header(browser))
    assert "fwd x" in top and "digit #3" in top
    [session] = wait("one session process", lambda: sessions(proc.pid))

    send_keys(browser, Keys.ARROW_RIGHT)
    top = wait("step 2", lambda: "step 2/" in header(browser) and header(browser))
    assert "fwd z1" in top

    # ctrl+s: the SVG comes to the browser as a download, not into the server's folder
    send_keys(browser, Keys.CONTROL, "s")
    svg = wait("the screenshot download", lambda: list(browser.downloads.glob("*.svg")))
    assert svg[0].read_text(encoding="utf-8").startswith("<svg")
    assert svg[0].name.startswith("cnntui-digit3-z1-")
    assert not list(tmp_path.glob("*.svg"))

    # the training screen's w: the weights come as a download too
    send_keys(browser, "t")
    wait("the training screen", lambda: "train" in header(browser).lower()
         and "step 2/" not in header(browser))
    send_keys(browser, "w")
    wait("the save dialog", lambda: DEFAULT_SAVE_PATH in screen(browser))
    send_keys(browser, Keys.ENTER)
    [npz] = wait("the weights download", lambda: list(browser.downloads.glob("*.npz")))
    assert npz.name == DEFAULT_SAVE_PATH
    params, _ = model.load_weights(npz)  # a weights file cnntui --weights opens
    assert params["W1"].shape == (4, 1, 3, 3)
    assert not list(tmp_path.glob("*.npz"))

    # --max-sessions 1: a second tab is told why, and gets no process
    open_tab(browser, url)
    assert "already runs its 1 session (--max-sessions 1)" in browser.page_source
    assert sessions(proc.pid) == [session]
    browser.close()

    browser.switch_to.window(session_tab)
    browser.close()  # the tab goes: the websocket closes and the session must quit
    browser.switch_to.window(first)
    wait("the session process to end", lambda: ended(session))
    assert sessions(proc.pid) == []
    assert proc.poll() is None  # the server goes on serving

    # a tab still open when the server is stopped: its session ends with the server
    open_tab(browser, url)
    wait("the second session", lambda: "step 1/" in header(browser))
    [session] = sessions(proc.pid)
    stop_server(proc)
    assert proc.returncode == 0
    wait("the session to end with the server", lambda: ended(session), timeout=30)


def test_the_page_works_through_a_tunnel_to_another_port(browser, tmp_path):
    """``ssh -L 9000:localhost:8000``: the browser asks for localhost:9000, and the websocket
    must go there too (textual-serve's own page names the server's --host and --port)."""
    proc, url = start_server(["--weights", "seed", "--index", "3"], tmp_path)
    port = int(url.rsplit(":", 1)[1].strip("/"))
    local, listener = forward(port)
    try:
        open_tab(browser, f"http://localhost:{local}/")
        ws = browser.find_element(By.ID, "terminal").get_attribute("data-session-websocket-url")
        assert ws == f"ws://localhost:{local}/ws"
        wait("the debugger through the tunnel", lambda: "step 1/" in header(browser))
        send_keys(browser, Keys.ARROW_RIGHT)
        wait("step 2 through the tunnel", lambda: "step 2/" in header(browser))
    finally:
        listener.close()
        stop_server(proc)
