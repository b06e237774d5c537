"""cnntui.ops reuses large buffers and per-shape workspaces (the pool in ops.py): nothing it has
returned may be overwritten by a later call, the pool is per thread, and it stays bounded."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from cnntui import ops
from cnntui.model import SIMPLE_CNN, loss_and_grads

BATCH = 96
SMALL_POOL_MIN = 1 << 16  # the tests pool from 64 KiB up: every large array of BATCH images


def _inputs(seed: int, dtype: str, batch: int = BATCH):
    rng = np.random.default_rng(seed)
    params = {k: v.astype(dtype) for k, v in SIMPLE_CNN.init_params().items()}
    x = rng.standard_normal((batch, 1, 28, 28)).astype(dtype)
    return params, x, rng.integers(0, 10, batch)


def _arrays(p) -> dict[str, np.ndarray]:
    """Every array a pass handed back: activations, gradients and what the caches hold."""
    found = {f"act {k}": v for k, v in p.acts.items() if k != "x"}
    found.update({f"grad {k}": v for k, v in p.grads.items()})

    def walk(name, c):
        if isinstance(c, np.ndarray):
            found[name] = c
        elif isinstance(c, tuple):
            for i, item in enumerate(c):
                walk(f"{name}[{i}]", item)

    for layer, c in p.caches.items():
        walk(f"cache {layer}", c)
    return found


@pytest.fixture(autouse=True)
def _fresh_pool(monkeypatch):
    monkeypatch.setattr(ops, "_POOL_MIN_BYTES", SMALL_POOL_MIN)
    ops.free_buffers()
    yield
    ops.free_buffers()


@pytest.mark.parametrize(("dtype", "batch", "pool_min"), [
    ("float32", BATCH, SMALL_POOL_MIN), ("float64", BATCH, SMALL_POOL_MIN),
    ("float32", 336, None),  # the real threshold: z1 is just over it
])
def test_a_second_pass_leaves_the_first_one_alone(dtype, batch, pool_min, monkeypatch):
    """Forward and backward twice on different inputs: the first pass's outputs, caches and
    gradients keep their values and share no memory with the second's."""
    if pool_min is None:
        monkeypatch.undo()
        assert 336 * 4 * 28 * 28 * 4 >= ops._POOL_MIN_BYTES
    first = loss_and_grads(SIMPLE_CNN, *_inputs(0, dtype, batch))
    kept = {k: v.copy() for k, v in _arrays(first).items()}
    second = loss_and_grads(SIMPLE_CNN, *_inputs(1, dtype, batch))
    assert ops._pool.nbytes > 0  # the pool was used
    mine, theirs = _arrays(first), _arrays(second)
    for name, a in mine.items():
        np.testing.assert_array_equal(a, kept[name], err_msg=name)
        for other, b in theirs.items():
            assert not np.shares_memory(a, b), f"first pass's {name} shares memory with {other}"
    # and the second pass is right: the same as computed with a fresh pool
    ops.free_buffers()
    again = _arrays(loss_and_grads(SIMPLE_CNN, *_inputs(1, dtype, batch)))
    for name, b in theirs.items():
        np.testing.assert_array_equal(b, again[name], err_msg=name)


def test_buffers_come_back_once_released():
    """Dropping a pass's results frees their buffers for the next pass (no new ones)."""
    args = _inputs(0, "float64")
    loss_and_grads(SIMPLE_CNN, *args)
    held = ops._pool.nbytes
    for _ in range(3):
        loss_and_grads(SIMPLE_CNN, *args)
    assert ops._pool.nbytes == held


def test_reshaping_a_result_in_place_does_not_reshape_the_pool():
    x = np.random.default_rng(0).standard_normal((BATCH, 4, 28, 28))
    out, _ = ops.relu(x)
    out.shape = (-1,)
    del out
    again, mask = ops.relu(x)
    assert again.shape == x.shape and mask.shape == x.shape


def test_each_thread_has_its_own_pool():
    """Two threads computing at once (the app computes in a worker) get what one thread alone
    gets, and neither sees the other's buffers."""
    args = [_inputs(seed, "float64") for seed in (0, 1)]
    alone = [_arrays(loss_and_grads(SIMPLE_CNN, *a)) for a in args]
    results: dict[int, list] = {0: [], 1: []}
    start = threading.Barrier(2)

    def work(i):
        start.wait()
        for _ in range(4):
            results[i].append(_arrays(loss_and_grads(SIMPLE_CNN, *args[i])))

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in (0, 1):
        for got in results[i]:
            for name, a in got.items():
                np.testing.assert_array_equal(a, alone[i][name], err_msg=name)
        other = results[1 - i][-1]
        for name, a in results[i][-1].items():
            assert not any(np.shares_memory(a, b) for b in other.values()), name


def test_the_pool_stays_bounded(monkeypatch):
    """Past POOL_BYTES the least recently used shapes go, and a one-off giant is not kept."""
    monkeypatch.setattr(ops, "POOL_BYTES", 48 << 20)
    for batch in (96, 160, 224, 288):  # each pass pools ~20-45 MiB
        loss_and_grads(SIMPLE_CNN, *_inputs(0, "float64", batch))
        assert ops._pool.nbytes <= ops.POOL_BYTES
    shapes = {key[0] for key in ops._pool.items if isinstance(key[0], tuple)}
    assert (96, 4, 28, 28) not in shapes and (288, 4, 28, 28) in shapes  # the oldest went
    ops.free_buffers()
    giant = np.zeros((1, 4, 1500, 1500))  # 72 MiB (and a 9 MiB mask): over POOL_BYTES / 8
    ops.relu(giant)
    assert ops._pool.nbytes == 0
