"""The PyTorch reference in a helper process (cnntui/reference_process.py; issues 11 and 12):
the same results as in-process, bit for bit; the helper comes and goes; its death is one
sentence; without PyTorch the debugger, trace and verify say so plainly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from pilot_helpers import make_app, wait_for

from cnntui import cli, model, reference
from cnntui.data import load_digits
from cnntui.reference_process import (
    NO_TORCH,
    HelperFailed,
    ReferenceUnavailable,
    TorchProcess,
    torch_available,
)
from cnntui.trace import trace_sample

SIZE = (100, 32)
DIES = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]
NO_TORCH_HELPER = [sys.executable, "-c", "import sys; sys.modules['torch'] = None; "
                   "from cnntui.reference_process import main; main()"]


def traced(key: str = "simple", index: int = 3, dtype: str = "float64"):
    arch = model.ARCHITECTURES[key]
    params, desc = model.weights_from(model.PRETRAINED, arch)
    return trace_sample(params, load_digits().sample(index), dtype=dtype, weights=desc, arch=arch)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


@pytest.fixture(scope="module")
def helper():
    tp = TorchProcess(linger=60)
    yield tp
    tp.close()


@pytest.fixture(autouse=True)
def one_torch_thread():
    """PyTorch here on the helper's one thread ($CNNTUI_THREADS unset): with another count its
    sums run in another order, and an earlier test may have left this process's at 2."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("key", list(model.ARCHITECTURES))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_results_through_the_process_equal_the_in_process_ones_bit_for_bit(helper, key, dtype):
    for index in (3, 1000):
        trace = traced(key, index, dtype)
        theirs, ours = helper.results(trace), reference.torch_results(trace)
        assert list(theirs) == list(ours) == trace.names
        for name, r in ours.items():
            assert r.value.dtype == theirs[name].value.dtype == np.float64
            assert np.array_equal(theirs[name].value, r.value), name
            assert theirs[name].agreement == r.agreement, name  # every field, exactly
    assert helper.started == 1  # one helper answered them all


def test_the_helper_exits_after_its_linger_and_comes_back_on_demand():
    tp = TorchProcess(linger=0.3)
    trace = traced()
    tp.results(trace)
    pid = tp.pid
    assert pid is not None and alive(pid)
    for _ in range(100):
        if not alive(pid):
            break
        time.sleep(0.05)
    assert not alive(pid) and tp.pid is None  # gone: it does not stay resident
    tp.results(trace)
    assert tp.started == 2
    tp.close()


def test_a_helper_with_no_linger_is_gone_when_the_results_are_back():
    tp = TorchProcess(linger=0)
    tp.results(traced())
    assert tp.pid is None and tp.started == 1


def test_the_helper_ends_when_the_session_is_killed(tmp_path):
    """The helper reads its stdin until EOF, which a SIGKILLed session gives it too."""
    script = textwrap.dedent("""
        import sys, time
        from cnntui import model
        from cnntui.data import load_digits
        from cnntui.reference_process import TorchProcess
        from cnntui.trace import trace_sample
        tp = TorchProcess(linger=600)
        tp.results(trace_sample(model.weights_from("seed")[0], load_digits().sample(0)))
        print(tp.pid, flush=True)
        time.sleep(600)
    """)
    session = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(session.stdout.readline())
        assert alive(pid)
        session.send_signal(signal.SIGKILL)
        session.wait()
        for _ in range(200):
            if not alive(pid):
                break
            time.sleep(0.05)
        assert not alive(pid)
    finally:
        session.kill()
        session.wait()


def test_a_helper_that_dies_is_one_sentence_and_the_next_request_starts_another():
    tp = TorchProcess(command=DIES)
    with pytest.raises(HelperFailed) as e:
        tp.results(traced())
    assert str(e.value) == "the PyTorch helper process was killed by SIGKILL before answering"
    tp.command = TorchProcess().command
    assert tp.results(traced()) is not None and tp.started == 2
    tp.close()


def test_a_helper_killed_while_computing_is_one_sentence_not_a_hang():
    tp = TorchProcess(linger=60)
    trace = traced()
    tp.results(trace)  # torch is loaded: the next request is answered in milliseconds...
    pid = tp.pid
    os.kill(pid, signal.SIGSTOP)  # ...so hold the helper, ask, and kill it mid-request
    threading.Timer(0.5, os.kill, (pid, signal.SIGKILL)).start()
    with pytest.raises(HelperFailed, match="killed by SIGKILL"):
        tp.results(trace)
    tp.close()


def test_a_helper_without_torch_says_pytorch_is_not_installed():
    tp = TorchProcess(command=NO_TORCH_HELPER)
    with pytest.raises(ReferenceUnavailable) as e:
        tp.results(traced())
    assert str(e.value) == NO_TORCH


def test_a_request_no_longer_wanted_is_not_sent():
    tp = TorchProcess()
    assert tp.results(traced(), wanted=lambda: False) is None
    assert tp.started == 0


# ---- the debugger -----------------------------------------------------------------------------

def torch_pane(app) -> str:
    return app.screen.torch_text.plain


async def test_the_default_session_compares_in_a_helper_and_never_imports_torch():
    app = make_app(model.weights_from("seed")[0], reference="process")
    torch_before = "torch" in sys.modules
    async with app.run_test(size=SIZE) as pilot:
        assert app.reference_mode == "process"
        assert "loading PyTorch..." in torch_pane(app)
        await wait_for(pilot, lambda: app.reference_state != "loading")
        assert app.reference_state == "ready"
        assert "agrees with PyTorch's float64 to 1e-09" in torch_pane(app)
        assert app._torch_process.pid is not None
        await pilot.press("right_square_bracket")
        await wait_for(pilot, lambda: app.trace.steps[app.step_index].torch_value is not None)
        await pilot.pause()
        assert "agrees with PyTorch's float64 to 1e-09" in torch_pane(app)
        pid = app._torch_process.pid
    assert ("torch" in sys.modules) == torch_before  # this process did not import it
    for _ in range(100):  # the app's end closes the helper
        if not alive(pid):
            break
        time.sleep(0.05)
    assert not alive(pid)


class Gated(TorchProcess):
    """A helper whose answers wait for ``gate``; counts the requests it actually sent."""

    def __init__(self) -> None:
        super().__init__(linger=60)
        self.gate = threading.Event()
        self.held = threading.Event()  # a request is waiting at the gate
        self.sent: list = []

    def _ask(self, request):
        self.held.set()
        self.gate.wait(30)
        self.sent.append(request)
        return super()._ask(request)


async def test_results_of_a_digit_left_behind_are_dropped():
    app = make_app(model.weights_from("pretrained")[0], reference="process")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.reference_state == "ready")
        gated = app._torch_process = Gated()
        first = app.trace
        await pilot.press("right_square_bracket")
        await wait_for(pilot, gated.held.is_set)  # asked, held at the gate
        second = app.trace
        await pilot.press("right_square_bracket", "right_square_bracket")  # queued behind it
        last = app.trace
        gated.gate.set()
        await wait_for(pilot, lambda: last.steps[0].torch_value is not None)
        await pilot.pause(0.3)  # anything else still coming would have arrived by now
        assert len(gated.sent) == 2  # the one in flight and the last; the one between not sent
        assert all(s.torch_value is None for s in second.steps)  # its answer came: dropped
        assert first.steps[0].torch_value is not None
        expected = reference.torch_results(last)
        for step in last.steps:
            assert np.array_equal(step.torch_value, expected[step.name].value)
        assert "agrees with PyTorch's float64" in torch_pane(app)
        gated.close()


async def test_stale_results_are_not_applied():
    app = make_app(model.weights_from("seed")[0], reference="process")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.reference_state == "ready")
        old = app.trace
        results = reference.torch_results(old)
        for s in old.steps:
            s.torch_value = None
        await pilot.press("right_square_bracket")
        app._reference_done("ready", old, results)
        assert all(s.torch_value is None for s in old.steps)


async def test_a_helper_that_dies_shows_one_sentence_and_a_new_digit_tries_again():
    app = make_app(model.weights_from("seed")[0], reference="process")
    app._torch_process = TorchProcess(command=DIES)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.reference_state != "loading")
        assert torch_pane(app) == ("PyTorch \nfailed: the PyTorch helper process was killed by "
                                   "SIGKILL before answering")
        app._torch_process.command = TorchProcess().command
        await pilot.press("right_square_bracket")
        await wait_for(pilot, lambda: app.reference_state == "ready")
        await pilot.pause()
        assert "agrees with PyTorch's float64" in torch_pane(app)
        app._torch_process.close()


async def test_no_torch_mode_says_why_the_diff_pane_is_empty():
    app = make_app(model.weights_from("seed")[0], reference="no-torch")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("right", "right_square_bracket")
        assert app._torch_process is None and app.reference_state.startswith("off")
        assert torch_pane(app) == ("PyTorch \nstarted with --no-torch: PyTorch is not used, so "
                                   "there are no diffs to show")


@pytest.mark.parametrize("mode", ["process", "thread", "sync"])
async def test_without_torch_installed_the_pane_says_so(monkeypatch, mode):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch: ImportError
    assert not torch_available()
    app = make_app(model.weights_from("seed")[0], reference=mode)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("right", "right_square_bracket")
        await pilot.pause()
        assert torch_pane(app) == f"PyTorch \n{NO_TORCH}"


async def test_a_helper_that_finds_no_torch_turns_the_reference_off():
    app = make_app(model.weights_from("seed")[0], reference="process")
    app._torch_process = TorchProcess(command=NO_TORCH_HELPER)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.reference_state != "loading")
        assert torch_pane(app) == f"PyTorch \n{NO_TORCH}"
        await pilot.press("right_square_bracket")  # no new helper for every digit
        await pilot.pause(0.3)
        assert app._torch_process.started == 1


def test_the_debugger_flag_picks_the_mode(monkeypatch):
    from screens import app as app_module

    seen = []
    monkeypatch.setattr(app_module.CnnApp, "run", lambda self: seen.append(self.reference_mode))
    for argv, mode in ((["--index", "0"], "process"), (["--index", "0", "--no-torch"],
                                                       "no-torch")):
        app_module.run_app(cli.build_parser().parse_args(argv))
        assert seen.pop() == mode


# ---- the commands -----------------------------------------------------------------------------

def run_cli(argv: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnntui", *argv], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=120)


def test_verify_with_no_torch_cannot_run_in_one_sentence(capsys):
    assert cli.main(["verify", "--no-torch"]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err == ("cnntui: verify cannot run with --no-torch: it checks every tensor "
                       "against PyTorch\n")


@pytest.mark.parametrize("argv, what", [(["verify"], "verify"), (["verify", "--json"], "verify"),
                                        (["bench"], "bench"), (["train", "--bench"],
                                                               "train --bench")])
def test_commands_that_need_torch_say_it_is_not_installed(monkeypatch, capsys, argv, what):
    monkeypatch.setitem(sys.modules, "torch", None)
    assert cli.main(argv) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err == f"cnntui: {what} cannot run here: {NO_TORCH}\n"


def test_verify_when_importing_torch_fails_is_one_sentence(tmp_path):
    """torch is found but its import fails as a missing module: still no traceback."""
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n")
    got = run_cli(["verify", "--index", "3"], env={"PYTHONPATH": str(tmp_path)})
    assert got.returncode == 2
    assert got.stderr == f"cnntui: verify cannot run here: {NO_TORCH}\n"


def test_trace_without_torch_leaves_the_column_empty(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)
    assert cli.main(["trace", "--index", "3", "--json"]) == 0
    out = capsys.readouterr()
    assert out.err == f"cnntui: {NO_TORCH}; the vs torch column is empty\n"
    assert '"torch_max_abs_diff": null' in out.out
    assert cli.main(["trace", "--index", "3", "--json", "--no-torch"]) == 0
    assert capsys.readouterr().err == ""


async def test_new_weights_and_architecture_while_computing_get_their_own_diffs():
    app = make_app(model.weights_from("pretrained")[0], reference="process")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.reference_state == "ready")
        gated = app._torch_process = Gated()
        await pilot.press("right_square_bracket")
        await wait_for(pilot, gated.held.is_set)  # asked, held at the gate
        held = app.trace
        app.switch_arch("strided")  # other weights, another network
        gated.gate.set()
        last = app.trace
        assert last.arch is model.STRIDED_CNN
        await wait_for(pilot, lambda: last.steps[0].torch_value is not None)
        assert all(s.torch_value is None for s in held.steps)
        expected = reference.torch_results(last)
        assert all(np.array_equal(s.torch_value, expected[s.name].value) for s in last.steps)
        assert all(s.torch_ok for s in last.steps)
        gated.close()
