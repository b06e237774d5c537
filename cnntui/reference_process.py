"""PyTorch's side of the reference in a helper process, so that the debugger never imports
torch: a session then costs ~90 MiB PSS instead of ~400 (the README's memory table), and
neither torch's import nor collections over its objects interrupt a step (issue 11).

The helper (``python -m cnntui.reference_process``) reads pickled requests from its stdin and
writes pickled answers to its stdout, one per request, and exits when its stdin closes: when
the session closes it, or when the session ends in any way, killed included, since the kernel
closes the pipe then. ``TorchProcess`` starts it on demand and closes it once it has been idle
for ``linger`` seconds, so it does not stay resident. Only our own child reads these pickles.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import threading
from collections.abc import Callable

from cnntui import reference
from cnntui.trace import Trace

# Seconds a helper stays after its last answer: browsing digits with [ ] reuses it instead of
# importing torch again (~1.5 s of a core each time); then it exits and frees its ~300 MiB.
LINGER = 10.0

NO_TORCH = "PyTorch is not installed, so there is no reference to compare with " \
           "(pip install 'cnntui[torch]' adds it)"


class ReferenceUnavailable(ImportError):
    """The reference cannot run at all (PyTorch is not installed, or --no-torch); one
    sentence, permanent."""


class HelperFailed(Exception):
    """The helper ended or failed on this request; one sentence. A new one may work."""


def torch_missing(e: ImportError) -> bool:
    """Whether ``e`` is torch itself being absent (not a broken install of something else)."""
    return (e.name or "").split(".")[0] == "torch"


def torch_available() -> bool:
    """Whether torch can be found, without importing it."""
    import importlib.util

    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


class TorchProcess:
    """The session's side of the helper. ``results(trace)`` blocks (call it from a worker
    thread) and returns exactly what ``reference.torch_results(trace)`` returns in-process:
    the helper computes PyTorch's tensors, the comparison is NumPy's, here."""

    def __init__(self, linger: float | None = None, command: list[str] | None = None) -> None:
        self.linger = LINGER if linger is None else linger
        self.command = command or [sys.executable, "-m", "cnntui.reference_process"]
        self._lock = threading.Lock()  # one request at a time on the pipe
        self._proc: subprocess.Popen | None = None
        self._timer: threading.Timer | None = None
        self._count = threading.Lock()  # guards _waiting
        self._waiting = 0  # requests queued on the lock: no closing under their feet
        self.started = 0  # helpers started so far (tests, the memory benchmark)

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def results(self, trace: Trace, wanted: Callable[[], bool] = lambda: True
                ) -> dict[str, reference.TorchResult] | None:
        """PyTorch's value of every step of ``trace`` and our agreement with it; None if
        ``wanted()`` says no once this request's turn has come (the user moved on)."""
        params, x, ours, dlogits = reference.reference_inputs(trace)
        with self._count:
            self._waiting += 1
        try:
            with self._lock:
                with self._count:
                    self._waiting -= 1
                if self._timer is not None:
                    self._timer.cancel()
                if not wanted():
                    return None
                tensors, own = self._ask((params, x, trace.label, trace.arch, ours, dlogits))
        finally:
            self._idle()
        ref = reference.Reference.seeded("PyTorch", trace, tensors, own)
        return reference.results_from(trace, ref)

    def _ask(self, request: tuple) -> tuple[dict, dict]:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            proc = self._proc = self._start()
        try:
            pickle.dump(request, proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            proc.stdin.flush()
            kind, *answer = pickle.load(proc.stdout)
        except (OSError, ValueError, EOFError, pickle.UnpicklingError):  # ValueError: closed
            self._proc = None
            raise HelperFailed(self._ended(proc)) from None
        if kind == "missing":  # and it has exited
            self._proc = None
            proc.wait(timeout=5)
            raise ReferenceUnavailable(answer[0])
        if kind == "error":
            raise HelperFailed(answer[0])
        return answer[0], answer[1]

    def _start(self) -> subprocess.Popen:
        self.started += 1
        # its own session: the terminal's keys and signals are the debugger's, not its
        return subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, start_new_session=True,
                                close_fds=True)

    @staticmethod
    def _ended(proc: subprocess.Popen) -> str:
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        if code < 0:
            try:
                how = f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        else:
            how = f"exited with status {code}"
        return f"the PyTorch helper process {how} before answering"

    def _idle(self) -> None:
        """Close the helper once it has had nothing to do for ``linger`` seconds."""
        with self._count:
            if self._waiting:
                return
        if self.linger <= 0:
            self.close()
            return
        timer = threading.Timer(self.linger, self._close_if_idle)
        timer.daemon = True  # never holds the debugger's exit
        self._timer = timer
        timer.start()

    def _close_if_idle(self) -> None:
        if not self._waiting and self._lock.acquire(blocking=False):  # else: busy again
            try:
                proc, self._proc = self._proc, None
                if proc is not None:
                    _end(proc, wait=5)
            finally:
                self._lock.release()

    def close(self) -> None:
        """End the helper: it exits on the EOF of its stdin, at once when idle, else after
        the answer it is computing. Never waits for a request in flight (the debugger's exit);
        that request's thread then gets an EOF."""
        if self._timer is not None:
            self._timer.cancel()
        proc, self._proc = self._proc, None
        if proc is not None:
            _end(proc, wait=1)


def _end(proc: subprocess.Popen, wait: float) -> None:
    try:
        proc.stdin.close()
    except OSError:
        pass
    try:
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        pass  # still computing: it exits once it has answered into the closed pipe


def serve(inp, out) -> int:
    """The helper's loop: a request from ``inp``, its answer to ``out``, until EOF."""
    try:
        import torch  # noqa: F401  (before the first request: the session waits on this once)
    except ImportError as e:
        pickle.dump(("missing", NO_TORCH if torch_missing(e) else
                     f"PyTorch could not be imported: {e}"), out)
        out.flush()
        return 3
    while True:
        try:
            params, x, label, arch, ours, dlogits = pickle.load(inp)
        except EOFError:
            return 0
        try:
            tensors, own = reference.torch_tensors(params, x, label, arch, choices=ours,
                                                   dlogits=dlogits)
            answer = ("ok", tensors, own)
        except Exception as e:
            answer = ("error", f"PyTorch failed on this trace: {type(e).__name__}: {e}")
        pickle.dump(answer, out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()


def main() -> int:
    # background work: where cores are short (a class on one server), the sessions' keys first
    os.nice(10)
    from cnntui.cli import limit_threads

    # the session's $CNNTUI_THREADS (1 unless set), as every command: the sum order, and so the
    # last bits of PyTorch's numbers, depend on the thread count
    limit_threads()
    # answers go to a private copy of stdout; anything else that writes to fd 1 (a library's
    # warning) goes to stderr instead of into the pickles
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    return serve(sys.stdin.buffer, out)


if __name__ == "__main__":
    raise SystemExit(main())
