"""Forward + backward of SimpleCNN at batch 64: NumPy (cnntui.ops) and PyTorch, float64 and
float32, with pytest-benchmark. Reported, never asserted: ``cnntui bench`` is the fair comparison
(separate processes, equal threads, interleaved rounds); these track regressions in the suite.

A few rounds keep them quick in the normal run; ``pytest tests/bench --benchmark-only`` shows them
alone, and ``--benchmark-disable`` runs each body once as a smoke test.
"""

from __future__ import annotations

import numpy as np
import pytest

from cnntui import bench
from cnntui.model import SIMPLE_CNN, loss_and_grads
from cnntui.reference import torch_logits

BATCH = 64
DTYPES = ["float64", "float32"]


@pytest.fixture(scope="module", autouse=True)
def _fair_setup():
    """One thread for NumPy's BLAS and for torch (their pools spin against each other in one
    process on two cores), restored afterwards. malloc is not tuned: this times the path a
    library user gets, as ``cnntui bench`` does."""
    from threadpoolctl import threadpool_limits

    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)


def _run(benchmark, step, impl: str, dtype: str) -> None:
    benchmark.group = f"SimpleCNN forward+backward, batch {BATCH}, {dtype}"
    benchmark.extra_info.update(impl=impl, dtype=dtype, batch=BATCH)
    benchmark.pedantic(step, rounds=15, iterations=3, warmup_rounds=3)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["us_per_image"] = benchmark.stats.stats.median / BATCH * 1e6


@pytest.mark.parametrize("dtype", DTYPES)
def test_numpy_forward_backward(benchmark, dtype):
    step = bench._numpy_step(dtype, BATCH, "simple")
    p = step()
    assert p.grads["dW1"].dtype == np.dtype(dtype) and np.isfinite(p.loss)
    _run(benchmark, step, "numpy", dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_forward_backward(benchmark, dtype):
    pytest.importorskip("torch")
    _run(benchmark, bench._torch_step(dtype, BATCH, "simple"), "torch", dtype)


def test_numpy_and_torch_compute_the_same_gradients():
    """The two benchmarked steps do the same work: equal loss and weight gradients."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    params, x, labels = bench._inputs(BATCH, "float64", "simple")
    ours = loss_and_grads(SIMPLE_CNN, params, x, labels)
    p = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    logits = torch_logits(SIMPLE_CNN, p, torch.tensor(x))
    loss = F.cross_entropy(logits, torch.tensor(labels))
    loss.backward()
    assert abs(ours.loss - loss.item()) < 1e-10
    for name, t in p.items():
        np.testing.assert_allclose(ours.grads["d" + name], t.grad.numpy(), rtol=0, atol=1e-12)


def test_bench_reports_the_openblas_kernel_in_use():
    """The kernel OpenBLAS runs, as it names it; a forced OPENBLAS_CORETYPE is named too (it
    changes the kernel, so it changes every NumPy time in the table)."""
    import os
    import subprocess
    import sys

    from threadpoolctl import threadpool_info

    ours = [i["architecture"] for i in threadpool_info() if i.get("internal_api") == "openblas"]
    if not ours:
        pytest.skip("NumPy does not use OpenBLAS here")
    code = "from cnntui import bench; print(bench._coretype())"
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    plain = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                           text=True, check=True).stdout.strip()
    assert plain == ours[0]
    forced = subprocess.run([sys.executable, "-c", code],
                            env=dict(env, OPENBLAS_CORETYPE="Haswell"), capture_output=True,
                            text=True, check=True).stdout.strip()
    assert forced == "Haswell (OPENBLAS_CORETYPE=Haswell)"


def test_ops_tunes_nothing_process_wide():
    from cnntui import ops

    assert not hasattr(ops, "tune_malloc")
