"""``cnntui serve`` driven from a headless Chromium (tests/test_serve_browser.py and
tests/bench/serve_sessions.py).

The terminal is xterm.js drawing on a canvas, so its text is not in the DOM. textual-serve's page
keeps its xterm Terminal in a property named ``terminal``; a script run before the page's own
catches that assignment, and ``screen`` reads the Terminal's buffer: the cells xterm.js draws."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
PATIENCE = 90  # seconds: a session starts in ~3 s, but this machine is shared

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def sessions(server_pid: int) -> list[int]:
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


def ended(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def wait(what: str, condition, timeout: float = PATIENCE):  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.2)
    raise AssertionError(f"waited {timeout:.0f} s for {what}")


def start_server(args: list[str], cwd: Path) -> tuple[subprocess.Popen, str]:
    """``cnntui serve ARGS`` on a free port, once it listens; the process and its URL."""
    port = free_port()
    log = cwd / "serve.log"  # a file, not a pipe nobody reads: the server logs every request
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cnntui", "serve", "--port", str(port), *args], cwd=cwd,
            env={**os.environ, "CNNTUI_CACHE_DIR": str(cwd / "cache")}, stdout=out,
            stderr=subprocess.STDOUT)
    wait("the server to listen", lambda: proc.poll() is not None or listening(port))
    if proc.poll() is not None:
        raise AssertionError(f"cnntui serve ended: {log.read_text()}")
    return proc, f"http://127.0.0.1:{port}/"


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def make_browser(downloads: Path, size: str = "1100,760"):
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                f"--window-size={size}"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    return webdriver.Chrome(options=options,
                            service=webdriver.ChromeService(executable_path=CHROMEDRIVER))


def open_tab(driver, url: str) -> str:  # noqa: ANN001
    """Open ``url`` in a new tab, the Terminal catcher installed first (per tab); its handle."""
    driver.switch_to.new_window("tab")
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CATCH_TERMINAL})
    driver.get(url)
    return driver.current_window_handle


def screen(driver) -> str:  # noqa: ANN001
    """The text of the current tab's terminal, '' before it has one."""
    return driver.execute_script(SCREEN_TEXT) or ""


def header(driver) -> str:  # noqa: ANN001
    text = screen(driver)
    return text.splitlines()[0] if text else ""


def send_keys(driver, *keys: str) -> None:  # noqa: ANN001
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, ".xterm-helper-textarea").send_keys(*keys)  # its input


def forward(port: int) -> tuple[int, socket.socket]:
    """A tunnel as ``ssh -L NEW:localhost:PORT`` makes: a new local port whose connections are
    relayed byte for byte to ``port``. Returns the new port and its listening socket (close it
    to stop accepting)."""
    import threading

    listener = socket.create_server(("127.0.0.1", 0))

    def pipe(src: socket.socket, dst: socket.socket) -> None:
        with src, dst:
            while data := src.recv(65536):
                dst.sendall(data)

    def accept() -> None:
        while True:
            try:
                browser_side, _ = listener.accept()
            except OSError:  # closed
                return
            server_side = socket.create_connection(("127.0.0.1", port))
            for a, b in ((browser_side, server_side), (server_side, browser_side)):
                threading.Thread(target=pipe, args=(a, b), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return listener.getsockname()[1], listener
