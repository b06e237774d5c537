"""Inputs that once broke the command line (issue 7): each gets one sentence on stderr, a fitting
exit status, no traceback, and no lost or half-written file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import numpy as np
import pytest

from cnntui import model
from cnntui.model import SIMPLE_CNN

ROOT = Path(__file__).resolve().parent.parent
ENV = {k: v for k, v in os.environ.items() if k != "COLUMNS"}


def cnntui(*args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnntui", *args], capture_output=True,
                          text=True, cwd=kwargs.pop("cwd", ROOT), env=env or ENV,
                          timeout=kwargs.pop("timeout", 120), **kwargs)


def one_sentence(stderr: str, words: str) -> None:
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnntui: ") and words in lines[0], stderr


# ---- a huge extra array ------------------------------------------------------------------------


def test_a_huge_extra_array_is_never_read(tmp_path):
    """400 MB of zeros beside the weights (400 kB on disk): loading reads only the parameters."""
    path = tmp_path / "padded.npz"
    np.savez_compressed(path, architecture=np.asarray(SIMPLE_CNN.name),
                        **SIMPLE_CNN.init_params(), junk=np.zeros(50_000_000))
    code = textwrap.dedent(f"""
        import tracemalloc
        from cnntui import model
        tracemalloc.start()
        params, meta = model.load_weights({str(path)!r})
        print(tracemalloc.get_traced_memory()[1])
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) < 20_000_000  # bytes, against 400 MB for the junk


def test_a_parameter_with_a_huge_declared_shape_is_refused_unread(tmp_path):
    path = tmp_path / "huge_w3.npz"
    np.savez_compressed(path, **dict(SIMPLE_CNN.init_params(), W3=np.zeros((392, 10, 12_000))))
    code = textwrap.dedent(f"""
        import tracemalloc
        from cnntui import model
        tracemalloc.start()
        try:
            model.load_weights({str(path)!r})
        except model.WeightsError as e:
            print(e)
        print(tracemalloc.get_traced_memory()[1])
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    message, peak = r.stdout.splitlines()
    assert "W3 shaped (392, 10, 12000)" in message and "needs (392, 10)" in message
    assert int(peak) < 20_000_000


def test_parameters_of_the_wrong_dtype_or_an_odd_architecture_entry_are_refused(tmp_path):
    params = SIMPLE_CNN.init_params()
    cases = {
        "int.npz": (dict(params, W1=np.zeros((4, 1, 3, 3), dtype=np.int64)), "non-numeric"),
        "arch.npz": (dict(params, architecture=np.zeros(10**6)), "not a readable"),
    }
    for name, (arrays, words) in cases.items():
        np.savez(tmp_path / name, **arrays)
        with pytest.raises(model.WeightsError, match=words):
            model.load_weights(tmp_path / name)


# ---- a closed pipe -----------------------------------------------------------------------------


def run_into_closed_pipe(*args: str, lines: int = 0) -> tuple[int, str]:
    """Run ``cnntui ARGS | head -LINES``: read ``lines`` lines, then close the pipe."""
    proc = subprocess.Popen([sys.executable, "-m", "cnntui", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env=ENV)
    try:
        for _ in range(lines):
            proc.stdout.readline()
        proc.stdout.close()
        stderr = proc.stderr.read()
        return proc.wait(timeout=120), stderr
    finally:
        proc.kill()


@pytest.mark.parametrize("args, lines", [
    (["verify"], 0),
    (["verify", "--json"], 0),
    (["trace"], 0),
    (["train", "--epochs", "2", "--train-limit", "64"], 1),
    (["train", "--epochs", "2", "--train-limit", "64", "--json"], 0),
])
def test_a_reader_going_away_is_exit_0(args, lines):
    status, stderr = run_into_closed_pipe(*args, lines=lines)
    assert status == 0 and "Traceback" not in stderr and "Exception" not in stderr, stderr


def test_train_into_a_closed_pipe_still_saves_its_out_file(tmp_path):
    out = tmp_path / "w.npz"
    status, stderr = run_into_closed_pipe("train", "--epochs", "2", "--train-limit", "64",
                                          "--out", str(out), lines=1)
    assert status == 0 and "Traceback" not in stderr, stderr
    assert model.load_weights(out)[1]["epoch"] == 2


# ---- an ASCII locale ---------------------------------------------------------------------------

ASCII = {**{k: v for k, v in ENV.items() if not k.startswith(("LC_", "LANG", "PYTHONIOENC"))},
         "LC_ALL": "C", "PYTHONUTF8": "0"}


@pytest.mark.parametrize("args, words", [
    (["trace"], "dW2"),
    (["verify", "--index", "3"], "all tensors agree"),
    (["train", "--epochs", "1", "--train-limit", "64", "--out", "{tmp}/w.npz"],
     "saved the weights"),
    (["bench", "--repeat", "1", "--batch", "1"], "lesson loops"),
])
def test_an_ascii_locale_gets_ascii_output(tmp_path, args, words):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    r = subprocess.run([sys.executable, "-m", "cnntui", *args], capture_output=True, cwd=ROOT,
                       env=ASCII, timeout=300)
    stdout, stderr = r.stdout.decode("ascii"), r.stderr.decode("ascii")  # nothing else
    assert r.returncode == 0, stderr
    assert words in stdout and "?" not in stdout and stderr == ""


# ---- strict JSON -------------------------------------------------------------------------------


def overflowing_weights(tmp_path) -> Path:
    """Finite weights whose activations overflow: inf in z2, then NaN everywhere after it."""
    params = SIMPLE_CNN.init_params()
    params["W1"] = params["W1"] * 1e300
    params["W2"] = params["W2"] * 1e300
    return model.save_weights(tmp_path / "overflow.npz", params)


def strict_json(text: str) -> object:
    def refuse(token):
        raise AssertionError(f"{token} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_trace_json_with_overflowing_weights_is_strict_json(tmp_path):
    r = cnntui("trace", "--json", "--values", "--weights", str(overflowing_weights(tmp_path)))
    assert r.returncode == 0 and r.stderr == "", r.stderr
    doc = strict_json(r.stdout)
    assert doc["loss"] is None and doc["probs"] == [None] * 10
    logits = next(s for s in doc["steps"] if s["name"] == "logits")
    assert logits["nan"] == 10 and logits["min"] is None and logits["values"] == [None] * 10
    assert logits["torch_max_abs_diff"] is None


def test_trace_table_with_overflowing_weights_flags_them(tmp_path):
    r = cnntui("trace", "--weights", str(overflowing_weights(tmp_path)))
    assert r.returncode == 0 and r.stderr == "", r.stderr
    logits = next(line for line in r.stdout.splitlines() if " logits " in line)
    assert "nan" in logits and "10/0" in logits


def test_train_json_with_overflowing_weights_is_strict_json(tmp_path):
    r = cnntui("train", "--json", "--epochs", "1", "--train-limit", "64",
               "--weights", str(overflowing_weights(tmp_path)))
    doc = strict_json(r.stdout)
    assert doc["status"] == "diverged" and doc["test_loss"] is None
    assert "Traceback" not in r.stderr


# ---- piped tables ------------------------------------------------------------------------------


def test_piped_trace_table_has_every_number_whole(tmp_path):
    r = cnntui("trace", "--weights", str(overflowing_weights(tmp_path)))
    assert "\u2026" not in r.stdout
    rows = [line.split() for line in r.stdout.splitlines() if line[:3].strip().isdigit()]
    assert len(rows) == 25 and all(len(row) == 10 for row in rows)  # no cell cut or wrapped
    z1 = rows[1]
    assert z1[1:4] == ["z1", "conv1", "4x28x28"] and z1[5].startswith("3.99e+300")


def test_piped_verify_table_is_whole():
    r = cnntui("verify", "--index", "4")
    assert r.returncode == 0 and "\u2026" not in r.stdout
    footer = [line for line in r.stdout.splitlines() if line.startswith("tolerance on")]
    assert len(footer) == 1 and "Finite differences" in footer[0]  # one line, not wrapped


def test_piped_train_output_is_whole():
    r = cnntui("train", "--epochs", "1", "--train-limit", "64")
    assert r.returncode == 0 and "\u2026" not in r.stdout
    lines = r.stdout.splitlines()
    assert lines[0].startswith("training SimpleCNN") and lines[0].endswith("seed 0")
    wrong = [line for line in lines if line.startswith("misclassified")]
    assert len(wrong) == 1 and wrong[0].endswith("more")


# ---- temp files and paths ----------------------------------------------------------------------

SLOW_SAVE = """
import pathlib, sys, time
import numpy as np
from cnntui import cli

real = np.savez


def slow_savez(f, **arrays):  # the save takes long enough to be killed inside it
    real(f, **arrays)
    pathlib.Path(sys.argv[2]).touch()
    time.sleep(60)


np.savez = slow_savez
sys.exit(cli.main(["train", "--epochs", "1", "--train-limit", "64", "--out", sys.argv[1]]))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP"])
def test_a_kill_inside_a_save_leaves_no_temp_file(tmp_path, signame):
    import signal
    import time

    out, marker = tmp_path / "w.npz", tmp_path.parent / f"{tmp_path.name}.saving"
    model.save_weights(out, SIMPLE_CNN.init_params())
    before = out.read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SAVE, str(out), str(marker)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env=ENV)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), proc.communicate()[1]
        assert len(list(tmp_path.glob(".w.npz.*.tmp"))) == 1  # in the middle of the save
        proc.send_signal(getattr(signal, signame))
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode != 0
    one_sentence(stderr, signame)
    assert [p.name for p in tmp_path.iterdir()] == ["w.npz"] and out.read_bytes() == before


def test_out_that_names_a_directory_is_refused_before_training(tmp_path):
    (tmp_path / "sneaky.npz").mkdir()
    r = cnntui("train", "--epochs", "50", "--out", str(tmp_path / "sneaky"), timeout=30)
    assert r.returncode == 1 and "train loss" not in r.stdout
    one_sentence(r.stderr, "is a directory")


def test_an_empty_out_is_refused_before_training():
    r = cnntui("train", "--epochs", "50", "--out", "", timeout=30)
    assert r.returncode == 1 and "train loss" not in r.stdout
    one_sentence(r.stderr, "--out")


@pytest.mark.skipif(sys.platform == "win32", reason="FIFOs and symlinks")
@pytest.mark.parametrize("kind, words", [
    ("directory", "is a directory"),
    ("fifo", "is not a regular file"),
    ("loop", "is a symlink loop"),
])
def test_weights_that_are_not_a_file_are_named_for_what_they_are(tmp_path, kind, words):
    path = tmp_path / "w.npz"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)  # opening it would wait for a writer forever
    else:
        path.symlink_to(tmp_path / "v.npz")
        (tmp_path / "v.npz").symlink_to(path)
    r = cnntui("trace", "--weights", str(path), timeout=30)
    assert r.returncode == 1
    one_sentence(r.stderr, words)


def test_saving_over_a_private_file_keeps_it_private(tmp_path):
    path = tmp_path / "w.npz"
    model.save_weights(path, SIMPLE_CNN.init_params())
    path.chmod(0o600)
    model.save_weights(path, SIMPLE_CNN.init_params(), epoch=1)
    assert path.stat().st_mode & 0o777 == 0o600
    assert model.load_weights(path)[1] == {"epoch": 1}


# ---- no terminal -------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [[], ["--index", "3"]])
def test_the_debugger_without_a_terminal_says_so_at_once(args):
    r = cnntui(*args, stdin=subprocess.DEVNULL, timeout=30)
    assert r.returncode == 1 and r.stdout == ""
    one_sentence(r.stderr, "needs a terminal")


def test_headless_commands_need_no_terminal():
    r = cnntui("trace", "--json", stdin=subprocess.DEVNULL)
    assert r.returncode == 0 and json.loads(r.stdout)["label"] == 0


THREADS_PROBE = ("from cnntui.cli import limit_threads; limit_threads(); "
                 "from threadpoolctl import threadpool_info; import torch; "
                 "print(sorted({i['num_threads'] for i in threadpool_info()}), "
                 "torch.get_num_threads())")


@pytest.mark.parametrize("value, shown", [(None, "[1] 1"), ("2", "[2] 2")])
def test_blas_and_torch_run_on_cnntui_threads(value, shown):
    """One thread unless $CNNTUI_THREADS says otherwise: BLAS and PyTorch alike."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("CNNTUI_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    if value is not None:
        env["CNNTUI_THREADS"] = value
    out = subprocess.run([sys.executable, "-c", THREADS_PROBE], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == shown


@pytest.mark.parametrize("value", ["0", "two", "-1", ""])
def test_a_bad_thread_count_is_one_sentence(value):
    r = subprocess.run([sys.executable, "-m", "cnntui", "summary"], capture_output=True,
                       text=True, env={**os.environ, "CNNTUI_THREADS": value})
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "CNNTUI_THREADS" in r.stderr, r.stderr


def test_version_names_the_installed_release():
    from importlib.metadata import version

    out = subprocess.run([sys.executable, "-m", "cnntui", "--version"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and out.stdout == f"cnntui {version('cnntui')}\n"
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    assert version("cnntui") == tomllib.loads(pyproject.read_text())["project"]["version"]
