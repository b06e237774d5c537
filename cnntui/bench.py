"""``cnntui bench``: per-image forward+backward time of the lesson's loops, the fast NumPy path
and PyTorch CPU on the same SimpleCNN, weights and digits.

How it stays fair:
- NumPy (and the lesson's loops) and PyTorch run in two worker processes, so their thread pools
  never spin against each other and their allocators do not share a heap. The parent asks one
  worker at a time for one measurement, so only one of them runs at any moment.
- Both workers get the same thread count through OMP/OpenBLAS/MKL variables set before they
  start, and ``torch.set_num_threads``. The default is one each: the NumPy path is single-threaded
  (its per-image matmuls are below OpenBLAS's threading threshold), so that compares like with
  like; ``--threads 2`` lets PyTorch use both cores of this machine.
- Neither tunes anything process-wide (glibc's malloc included): the workers import
  ``cnntui`` and time ``model.loss_and_grads`` as a library user calls it (``malloc_tuned`` in
  the report is always false; it stays for readers of older reports). The report names the
  OpenBLAS kernel NumPy runs (``openblas_coretype``), and OPENBLAS_CORETYPE if it is set.
- Every configuration is warmed up, then measured in ``--repeat`` interleaved rounds (the order
  rotates each round); a round times enough calls for ~30 ms, and the report is the median.

The lesson's loops handle one image at a time, so they are timed at batch 1 on a few images; the
speedup at every batch size compares against that per-image time.

JSON document (``--json``)::

    {"threads": 2, "rounds": 15, "versions": {...}, "malloc_tuned": false,
     "results": [{"impl": "lesson"|"numpy"|"torch", "dtype": "float64"|"float32", "batch": 64,
                  "us_per_image": median, "us_per_image_min": ..., "us_per_image_max": ...,
                  "calls_per_round": ..., "faults_per_call": median minor page faults per
                  forward+backward call (not per image)}, ...],
     "ratios": [{"dtype", "batch", "numpy_over_torch"}],
     "speedups": [{"dtype", "batch", "numpy_over_lesson"}],
     "target": {"batch": 64, "max_ratio": 0.8, "min_speedup": 500.0, "met": bool}}
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np

from cnntui import model

BATCHES = (1, 64, 256)
DTYPES = ("float64", "float32")
LESSON_IMAGES = 2  # the loops take ~30 ms per image
ROUND_SECONDS = 0.03
# issue 11: at batch 64, NumPy at most 0.8x PyTorch's time, and 500x the lesson's loops; at
# every other batch at most PyTorch's time
TARGET_BATCH, TARGET_RATIO, TARGET_SPEEDUP, OTHER_RATIO = 64, 0.8, 500.0, 1.0
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


# ---- the workers ------------------------------------------------------------------------------


def _inputs(batch: int, dtype: str, arch: str, data: str = "digits"
            ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """The seed weights and the first ``batch`` digits of ``data`` (real inputs: ReLU zeros,
    pooling ties)."""
    from cnntui.data import load_dataset
    from cnntui.model import ARCHITECTURES, cast_params

    digits = load_dataset(data)
    x = np.ascontiguousarray(digits.prepared(np.arange(batch), dtype))
    params = ARCHITECTURES[arch].init_params()
    return cast_params(params, dtype), x, digits.labels[:batch].copy()


def _numpy_step(dtype: str, batch: int, arch: str, data: str = "digits") -> Callable[[], object]:
    from cnntui.model import ARCHITECTURES, loss_and_grads

    params, x, labels = _inputs(batch, dtype, arch, data)
    return lambda: loss_and_grads(ARCHITECTURES[arch], params, x, labels)


def _lesson_step(dtype: str, batch: int, arch: str, data: str = "digits") -> Callable[[], object]:
    """One image per call through the lesson's loop functions, forward and backward."""
    from cnntui import lesson
    from cnntui.model import ARCHITECTURES

    params, x, labels = _inputs(LESSON_IMAGES, "float64", arch, data)
    order = itertools.cycle(range(LESSON_IMAGES))

    def step() -> None:
        i = next(order)
        lesson.lesson_tensors(params, x[i], int(labels[i]), arch=ARCHITECTURES[arch])

    return step


def _torch_step(dtype: str, batch: int, arch: str, data: str = "digits") -> Callable[[], object]:
    """The same network in functional PyTorch with the same weights; autograd for every grad."""
    import torch
    import torch.nn.functional as F

    from cnntui.model import ARCHITECTURES
    from cnntui.reference import torch_logits

    params, x, labels = _inputs(batch, dtype, arch, data)
    tdtype = getattr(torch, dtype)
    p = {k: torch.tensor(v, dtype=tdtype, requires_grad=True) for k, v in params.items()}
    xt = torch.tensor(x, requires_grad=True)  # dx is computed by NumPy too
    yt = torch.tensor(labels)
    leaves = [xt, *p.values()]

    def step() -> None:
        for t in leaves:
            t.grad = None
        F.cross_entropy(torch_logits(ARCHITECTURES[arch], p, xt), yt).backward()

    return step


STEPS = {"lesson": _lesson_step, "numpy": _numpy_step, "torch": _torch_step}


def _coretype() -> str:
    """The OpenBLAS kernel in use, as OpenBLAS itself names it (threadpoolctl's
    ``architecture``), and OPENBLAS_CORETYPE if set: it forces a kernel, and some CPUs set it."""
    forced = os.environ.get("OPENBLAS_CORETYPE")
    try:
        from threadpoolctl import threadpool_info

        archs = [i["architecture"] for i in threadpool_info()
                 if i.get("internal_api") == "openblas" and i.get("architecture")]
    except ImportError:
        archs = []
    core = ", ".join(dict.fromkeys(archs)) or "unknown"
    return f"{core} (OPENBLAS_CORETYPE={forced})" if forced else core


def _blas() -> str:
    """NumPy's BLAS and the kernel it runs."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return f"unknown (coretype {_coretype()})"
    info = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    text = ", ".join(f"{i.get('internal_api')} {i.get('version')}" for i in info) or "unknown"
    return f"{text} (coretype {_coretype()})"


def _worker(impls: list[str], threads: int) -> None:
    """Serve measurements over stdin/stdout, one JSON object per line."""
    versions = {"numpy": np.__version__, "blas": _blas(), "openblas_coretype": _coretype()}
    if "torch" in impls:
        import torch

        torch.set_num_threads(threads)
        versions["torch"] = torch.__version__
    steps: dict[tuple, tuple[Callable[[], object], int]] = {}
    print(json.dumps({"ready": True, "malloc_tuned": False, "versions": versions}),
          flush=True)
    for line in sys.stdin:
        msg = json.loads(line)
        key = (msg["impl"], msg["dtype"], msg["batch"])
        if msg["cmd"] == "prepare":  # build, warm up, and choose calls per round
            step = STEPS[msg["impl"]](msg["dtype"], msg["batch"], msg["arch"], msg["data"])
            start, calls = time.perf_counter(), 0
            while calls < 3 or (time.perf_counter() - start < 0.15 and calls < 200):
                step()
                calls += 1
            per_call = (time.perf_counter() - start) / calls
            steps[key] = (step, max(1, round(ROUND_SECONDS / per_call)))
            print(json.dumps({"calls": steps[key][1]}), flush=True)
        elif msg["cmd"] == "time":
            step, calls = steps[key]
            # minor page faults: memory the allocator gave back to the OS and took again
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            for _ in range(calls):
                step()
            seconds = (time.perf_counter() - start) / calls
            faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / calls
            print(json.dumps({"seconds": seconds, "faults": faults}), flush=True)


class _Worker:
    def __init__(self, impls: list[str], threads: int) -> None:
        env = dict(os.environ, **{v: str(threads) for v in THREAD_VARS})
        # the child imports this very package, wherever it was found
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cnntui.bench", "--worker", ",".join(impls),
             "--threads", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def ask(self, msg: dict | None = None) -> dict:
        if msg is not None:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise OSError(f"a benchmark worker stopped (exit status {self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


# ---- the parent -------------------------------------------------------------------------------


def run(rounds: int = 15, threads: int | None = None, batches: tuple[int, ...] = BATCHES,
        with_torch: bool | None = None, arch: str = "simple", data: str = "digits") -> dict:
    """Measure everything; returns the JSON document described in the module docstring."""
    threads = threads or 1
    if with_torch is None:
        with_torch = importlib.util.find_spec("torch") is not None
    configs = [("lesson", "float64", 1)]
    impls = ["numpy"] + (["torch"] if with_torch else [])
    for batch in batches:
        for dtype in DTYPES:
            configs += [(impl, dtype, batch) for impl in impls]
    workers = {"numpy": _Worker(["lesson", "numpy"], threads)}
    if with_torch:  # start both first: importing torch takes seconds
        workers["torch"] = _Worker(["torch"], threads)
    owner = {"lesson": "numpy", "numpy": "numpy", "torch": "torch"}
    try:
        hello = {name: w.ask() for name, w in workers.items()}
        calls = {}
        for c in configs:
            msg = {"cmd": "prepare", "impl": c[0], "dtype": c[1], "batch": c[2], "arch": arch,
                   "data": data}
            calls[c] = workers[owner[c[0]]].ask(msg)["calls"]
        samples: dict[tuple, list[float]] = {c: [] for c in configs}
        faults: dict[tuple, list[float]] = {c: [] for c in configs}
        for r in range(rounds):
            for c in configs[r % len(configs):] + configs[:r % len(configs)]:
                time.sleep(0.002)  # let the other worker's spinning threads go to sleep
                msg = {"cmd": "time", "impl": c[0], "dtype": c[1], "batch": c[2]}
                answer = workers[owner[c[0]]].ask(msg)
                samples[c].append(answer["seconds"] / c[2])
                faults[c].append(answer["faults"])
    finally:
        for w in workers.values():
            w.close()
    return {"arch": arch, "data": data,
            **_document(configs, samples, faults, calls, rounds, threads, hello)}


def _document(configs, samples, faults, calls, rounds, threads, hello) -> dict:
    us = {c: statistics.median(samples[c]) * 1e6 for c in configs}
    results = [{"impl": c[0], "dtype": c[1], "batch": c[2], "us_per_image": us[c],
                "us_per_image_min": min(samples[c]) * 1e6,
                "us_per_image_max": max(samples[c]) * 1e6, "calls_per_round": calls[c],
                "faults_per_call": statistics.median(faults[c])}
               for c in configs]
    lesson_us = us[("lesson", "float64", 1)]
    ratios, speedups = [], []
    for c in configs:
        if c[0] != "numpy":
            continue
        torch_c = ("torch", c[1], c[2])
        if torch_c in us:
            ratios.append({"dtype": c[1], "batch": c[2], "numpy_over_torch": us[c] / us[torch_c]})
        speedups.append({"dtype": c[1], "batch": c[2], "numpy_over_lesson": lesson_us / us[c]})
    at = [r for r in ratios if r["batch"] == TARGET_BATCH]
    fast = [s for s in speedups if s["batch"] == TARGET_BATCH]
    met = (bool(at) and all(r["numpy_over_torch"] <= TARGET_RATIO for r in at)
           and bool(fast) and all(s["numpy_over_lesson"] >= TARGET_SPEEDUP for s in fast))
    versions = {k: v for h in hello.values() for k, v in h["versions"].items()}
    return {"threads": threads, "rounds": rounds, "versions": versions,
            "malloc_tuned": all(h["malloc_tuned"] for h in hello.values()),
            "results": results, "ratios": ratios, "speedups": speedups,
            "target": {"batch": TARGET_BATCH, "max_ratio": TARGET_RATIO,
                       "min_speedup": TARGET_SPEEDUP, "met": met}}


def _fmt_us(us: float) -> str:
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.1f} us"


def print_table(doc: dict) -> None:
    from rich.table import Table

    from cnntui.terminal import Console

    ratio = {(r["dtype"], r["batch"]): r["numpy_over_torch"] for r in doc["ratios"]}
    speedup = {(s["dtype"], s["batch"]): s["numpy_over_lesson"] for s in doc["speedups"]}
    name = model.ARCHITECTURES[doc["arch"]].name
    table = Table(title=f"{name} forward + backward per image: median of {doc['rounds']} "
                        f"rounds, {doc['threads']} thread(s) each")
    # np/torch: NumPy's time over PyTorch's (below 1 is faster); vs loops: the lesson's loops'
    # time over NumPy's
    for name in ("", "dtype", "batch", "median", "min", "max", "faults/call", "np/torch",
                 "vs loops"):
        table.add_column(name, justify="left" if name in ("", "dtype") else "right", no_wrap=True)
    names = {"lesson": "lesson loops", "numpy": "NumPy", "torch": "PyTorch"}
    order = {"lesson": 0, "numpy": 1, "torch": 2}
    rows = sorted(doc["results"], key=lambda r: (order[r["impl"]], r["dtype"] != "float64",
                                                 r["batch"]))
    for r in rows:
        key = (r["dtype"], r["batch"])
        mine = r["impl"] == "numpy"
        table.add_row(names[r["impl"]], r["dtype"], str(r["batch"]), _fmt_us(r["us_per_image"]),
                      _fmt_us(r["us_per_image_min"]), _fmt_us(r["us_per_image_max"]),
                      f"{r['faults_per_call']:,.0f}",
                      f"{ratio[key]:.2f}" if mine and key in ratio else "",
                      f"{speedup[key]:,.0f}x" if mine else "")
    console = Console()
    console.print(table)
    t = doc["target"]
    verdict = "[green]met[/]" if t["met"] else "[red]not met[/]"
    console.print(f"np/torch = NumPy time / PyTorch time; vs loops = lesson loops / NumPy.\n"
                  f"Target at batch {t['batch']}, float64 and float32: np/torch <= "
                  f"{t['max_ratio']:g} and >= {t['min_speedup']:g}x the loops: {verdict}")
    others = [r for r in doc["ratios"] if r["batch"] != t["batch"]]
    if others:
        ok = all(r["numpy_over_torch"] <= OTHER_RATIO for r in others)
        batches = ", ".join(str(b) for b in sorted({r["batch"] for r in others}))
        console.print(f"At batch {batches}: np/torch <= {OTHER_RATIO:g}: "
                      f"{'[green]met[/]' if ok else '[red]not met[/]'}")
    versions = ", ".join(f"{k} {v}" for k, v in doc["versions"].items())
    console.print(f"[dim]{versions}; malloc tuned: {doc['malloc_tuned']}[/]")


@dataclass(frozen=True)
class BenchOptions:
    """What ``cnntui bench`` is asked for."""

    repeat: int | None = None  # None: 15 rounds
    threads: int | None = None  # None: 1
    batch: tuple[int, ...] | None = None  # None: BATCHES
    arch: str | None = None  # None: simple
    data: str = "digits"
    json: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> BenchOptions:
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})


def main(args: BenchOptions) -> int:
    rounds = args.repeat if args.repeat is not None else 15
    if rounds < 1:
        raise ValueError("--repeat must be at least 1")
    threads = args.threads
    if threads is not None and threads < 1:
        raise ValueError("--threads must be at least 1")
    batches = tuple(args.batch or BATCHES)
    from cnntui.data import load_dataset

    n = len(load_dataset(args.data))  # and a clear error before any worker starts
    if not all(1 <= b <= n for b in batches):
        raise ValueError(f"--batch sizes must be between 1 and {n} (the size of {args.data})")
    doc = run(rounds=rounds, threads=threads, batches=batches, arch=args.arch or "simple",
              data=args.data)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print_table(doc)
    return 0


if __name__ == "__main__":
    worker = argparse.ArgumentParser()
    worker.add_argument("--worker", required=True)
    worker.add_argument("--threads", type=int, required=True)
    a = worker.parse_args()
    try:
        _worker(a.worker.split(","), a.threads)
    except (KeyboardInterrupt, BrokenPipeError):  # the parent reports it
        sys.exit(130)
