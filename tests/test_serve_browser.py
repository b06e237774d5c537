"""``cnntui serve`` in a real browser: headless Chromium driven by selenium opens the page, waits
for the debugger, steps with a key, takes a screenshot (it arrives as a download), is refused a
second tab past --max-sessions, and closes the tab; the session's process must then end.

The terminal is xterm.js drawing on a canvas, so its text is not in the DOM. The page keeps its
xterm Terminal in a property named ``terminal``; a script run before the page's own catches that
assignment and the test reads the Terminal's buffer, the very cells xterm.js draws."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")

if not (CHROMIUM and CHROMEDRIVER):
    reason = ("needs Debian's chromium and chromium-driver (apt-get install chromium "
              "chromium-driver)")
    if os.environ.get("CI"):  # .ci/run installs them: missing there is a failure, not a skip
        raise RuntimeError(f"this CI run must have chromium: it {reason}")
    pytest.skip(reason, allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the test extra)")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

CATCH_TERMINAL = """
Object.defineProperty(Object.prototype, 'terminal', {configurable: true, set(value) {
    if (value && value.buffer && !window.cnntuiTerminal) window.cnntuiTerminal = value;
    Object.defineProperty(this, 'terminal', {value, writable: true, configurable: true,
                                             enumerable: true});
}});
"""
SCREEN_TEXT = """
const t = window.cnntuiTerminal;
if (!t) return null;
const b = t.buffer.active, rows = [];
for (let y = 0; y < t.rows; y++) {
    const line = b.getLine(b.viewportY + y);
    rows.push(line ? line.translateToString(true) : '');
}
return rows.join('\\n');
"""
PATIENCE = 90  # seconds: a session starts in ~3 s, but this machine is shared


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sessions(server_pid: int) -> list[int]:
    """Every process under the server that runs the debugger (``python -m cnntui ...``)."""
    found, todo = [], [server_pid]
    while todo:
        pid = todo.pop()
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            todo.append(child)
            try:
                argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"cnntui" in argv and b"-m" in argv:
                found.append(child)
    return found


def _wait(what: str, condition, timeout: float = PATIENCE):  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.2)
    raise AssertionError(f"waited {timeout:.0f} s for {what}")


@pytest.fixture
def server(tmp_path):
    port = _free_port()
    env = {**os.environ, "CNNTUI_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnntui", "serve", "--port", str(port), "--max-sessions", "1",
         "--weights", "seed", "--index", "3"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait("the server to listen", lambda: proc.poll() is not None or _listening(port))
        assert proc.poll() is None, proc.stdout.read()
        yield proc, f"http://127.0.0.1:{port}/"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1100,760"):
        options.add_argument(arg)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(options=options,
                              service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


def _open_tab(driver, url: str) -> str:  # noqa: ANN001
    """Open ``url`` in a new tab, the Terminal catcher installed first (per tab); its handle."""
    driver.switch_to.new_window("tab")
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CATCH_TERMINAL})
    driver.get(url)
    return driver.current_window_handle


def _header(driver) -> str:  # noqa: ANN001
    text = driver.execute_script(SCREEN_TEXT)
    return text.splitlines()[0] if text else ""


def test_a_browser_tab_steps_saves_a_screenshot_and_its_session_ends(server, browser,
                                                                     tmp_path):
    proc, url = server
    first = browser.current_window_handle
    session_tab = _open_tab(browser, url)
    assert browser.title == "cnntui"
    header = _wait("the debugger on the page", lambda: "step 1/" in _header(browser)
                   and _header(browser))
    assert "fwd x" in header and "digit #3" in header
    [session] = _wait("one session process", lambda: _sessions(proc.pid))

    keys = browser.find_element(By.CSS_SELECTOR, ".xterm-helper-textarea")  # xterm's input
    keys.send_keys(Keys.ARROW_RIGHT)
    header = _wait("step 2", lambda: "step 2/" in _header(browser) and _header(browser))
    assert "fwd z1" in header

    # ctrl+s: the SVG comes to the browser as a download, not into the server's folder
    keys.send_keys(Keys.CONTROL, "s")
    svg = _wait("the screenshot download", lambda: list(browser.downloads.glob("*.svg")))
    assert svg[0].read_text(encoding="utf-8").startswith("<svg")
    assert svg[0].name.startswith("cnntui-digit3-z1-")
    assert not list(tmp_path.glob("*.svg"))

    # --max-sessions 1: a second tab is told why, and gets no process
    _open_tab(browser, url)
    assert "already runs its 1 session (--max-sessions 1)" in browser.page_source
    assert _sessions(proc.pid) == [session]
    browser.close()

    browser.switch_to.window(session_tab)
    browser.close()  # the tab goes: the websocket closes and the session must quit
    browser.switch_to.window(first)
    _wait("the session process to end", lambda: not Path(f"/proc/{session}").exists()
          or Path(f"/proc/{session}/stat").read_text().split()[2] == "Z")
    assert _sessions(proc.pid) == []
    assert proc.poll() is None  # the server goes on serving
