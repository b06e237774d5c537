"""The headless commands, run as a user runs them: the installed ``cnntui`` in another directory."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# the console script installed beside this Python (the venv need not be on PATH)
CNNTUI = str(next((p for p in (Path(sys.executable).parent / "cnntui",) if p.exists()), None)
             or shutil.which("cnntui") or "cnntui")


def run(*args, cwd):
    return subprocess.run([CNNTUI, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_trace_json_from_another_directory(tmp_path):
    r = run("trace", "--json", "--index", "5", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["index"] == 5 and doc["label"] == 5
    assert len(doc["probs"]) == 10 and abs(sum(doc["probs"]) - 1) < 1e-12
    assert doc["prediction"] == max(range(10), key=doc["probs"].__getitem__)
    names = [s["name"] for s in doc["steps"]]
    assert names[:3] == ["x", "z1", "a1"] and names[-1] == "dx" and len(names) == 25
    for s in doc["steps"]:
        assert {"phase", "layer", "name", "shape", "min", "max", "mean", "std", "nan", "inf",
                "torch_max_abs_diff"} <= set(s)
        assert s["torch_max_abs_diff"] < 1e-12 and s["nan"] == 0
        assert "values" not in s
    assert doc["steps"][4]["shape"] == [8, 14, 14] and doc["steps"][4]["phase"] == "forward"


def test_trace_json_values(tmp_path):
    r = run("trace", "--json", "--values", "--dtype", "float32", cwd=tmp_path)
    doc = json.loads(r.stdout)
    z1 = next(s for s in doc["steps"] if s["name"] == "z1")
    assert len(z1["values"]) == 4 and len(z1["values"][0]) == 28
    assert z1["dtype"] == "float32"
    assert list(doc["params"]) == ["W1", "b1", "W2", "b2", "W3", "b3"]
    assert len(doc["params"]["W3"]) == 392 and len(doc["params"]["W3"][0]) == 10


def test_trace_table(tmp_path):
    r = run("trace", "--index", "1", cwd=tmp_path)
    assert r.returncode == 0
    assert "dW2" in r.stdout and "8x14x14" in r.stdout and "label 1" in r.stdout


def test_verify_passes(tmp_path):
    r = run("verify", "--index", "9", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all tensors agree" in r.stdout and "DISAGREES" not in r.stdout
    r = run("verify", "--json", "--dtype", "float32", cwd=tmp_path)
    doc = json.loads(r.stdout)
    assert doc["ok"] is True and len(doc["tensors"]) == 25


@pytest.mark.parametrize("args,message", [
    (["trace", "--index", "99999"], "there is no digit 99999"),
    (["trace", "--weights", "nowhere.npz"], "does not exist"),
    (["verify", "--index", "-3"], "negative"),
    (["trace", "--dtype", "float16"], "invalid choice"),
])
def test_user_errors_are_one_sentence(tmp_path, args, message):
    r = run(*args, cwd=tmp_path)
    assert r.returncode != 0
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_python_dash_m(tmp_path):
    r = subprocess.run([sys.executable, "-m", "cnntui", "trace", "--json"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and json.loads(r.stdout)["label"] == 0


def test_engine_never_imports_the_ui():
    """Importing every module of cnntui/ loads neither textual nor screens."""
    code = (
        "import pkgutil, sys, importlib, cnntui\n"
        "for m in pkgutil.iter_modules(cnntui.__path__):\n"
        "    if m.name != '__main__': importlib.import_module('cnntui.' + m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('textual', 'screens'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_engine_source_has_no_ui_imports():
    import ast
    import pathlib

    import cnntui

    for path in pathlib.Path(cnntui.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                if name.split(".")[0] in ("textual", "screens"):
                    # cli.py alone may import the app, lazily, to launch it
                    assert path.name == "cli.py" and node.col_offset > 0, f"{path.name}: {name}"


def test_verify_exits_nonzero_when_a_gradient_is_wrong(monkeypatch, capsys):
    from cnntui import cli, ops

    real = ops.maxpool2d_backward
    monkeypatch.setattr(ops, "maxpool2d_backward", lambda dout, cache: real(dout, cache) * 0.5)
    assert cli.main(["verify", "--index", "2"]) == 1
    out = capsys.readouterr().out
    assert "DISAGREES" in out and "tensor(s) disagree" in out
    assert "da2 disagrees: the lesson loops: relative error 5.0e-01 > 1e-09" in out


def test_debugger_options_before_a_command_are_refused(tmp_path):
    r = run("--index", "5", "trace", cwd=tmp_path)
    assert r.returncode == 2 and "--index goes after the command" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_file_that_is_not_npz_is_refused_without_advice_to_unpickle(tmp_path):
    bogus = tmp_path / "notes.txt"
    bogus.write_text("not weights\n")
    r = run("trace", "--weights", str(bogus), cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.strip() == f"cnntui: weights file {bogus} is not a readable .npz file"


def test_screens_never_import_the_command_line():
    """The UI takes what it needs from the engine; cnntui.cli imports the UI, not the reverse."""
    import ast
    import pathlib

    import screens

    root = pathlib.Path(screens.__file__).parent
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert "cnntui.cli" not in names, path
