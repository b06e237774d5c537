"""The fused ops give the very arrays of the ops they fuse, bit for bit: ``relu_maxpool2d`` is
``relu`` then ``maxpool2d``, and the model's forward (which fuses every ReLU read by a max-pool)
equals the layers run one by one, NaN, Inf, -0.0 and ties included."""

from __future__ import annotations

import numpy as np
import pytest

from cnntui import layers, model, ops
from cnntui.model import ARCHITECTURES, SIMPLE_CNN


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal dtype, shape and bytes: NaN payloads and the sign of zero included."""
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _hard(rng, shape, dtype) -> np.ndarray:
    """Values on a coarse grid (exact zeros, -0.0 and ties in a window), with NaN and +-Inf."""
    x = np.round(rng.standard_normal(shape) * 2) / 2
    x.flat[rng.choice(x.size, x.size // 10, replace=False)] = -0.0
    x.flat[rng.choice(x.size, 3, replace=False)] = [np.inf, -np.inf, np.nan]
    return x.astype(dtype)


def _unfused(x, size, stride):
    a, mask = ops.relu(x)
    return (a, mask), ops.maxpool2d(a, size, stride)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", [(13, 4, 28, 28), (9, 3, 7, 9), (5, 2, 2, 2), (1, 4, 28, 28)])
@pytest.mark.parametrize("chunk_bytes", [1, 3000, 1 << 18])
@pytest.mark.parametrize("finite", [True, False])
def test_relu_maxpool2d_is_relu_then_maxpool2d(dtype, shape, chunk_bytes, finite, monkeypatch,
                                               rng):
    monkeypatch.setattr(ops, "CHUNK_BYTES", chunk_bytes)  # 1: one image a chunk
    x = _hard(rng, shape, dtype)
    if finite:
        x[~np.isfinite(x)] = 1.5
    (a, mask), (p, cache) = ops.relu_maxpool2d(x, 2, 2)
    (a0, mask0), (p0, cache0) = _unfused(x, 2, 2)
    for got, want in ((a, a0), (mask, mask0), (p, p0), (cache[1], cache0[1])):
        assert _same(got, want)
    assert cache[0] == cache0[0] and cache[2:] == cache0[2:]


@pytest.mark.parametrize(("size", "stride"), [(3, 2), (2, 1), (3, 3)])
def test_relu_maxpool2d_other_windows(size, stride, monkeypatch, rng):
    monkeypatch.setattr(ops, "CHUNK_BYTES", 1)
    x = _hard(rng, (6, 3, 9, 10), "float64")
    (a, mask), (p, cache) = ops.relu_maxpool2d(x, size, stride)
    (a0, mask0), (p0, cache0) = _unfused(x, size, stride)
    assert all(_same(u, v) for u, v in ((a, a0), (mask, mask0), (p, p0), (cache[1], cache0[1])))


def test_relu_maxpool2d_refuses_what_maxpool2d_refuses(monkeypatch):
    monkeypatch.setattr(ops, "CHUNK_BYTES", 1)
    with pytest.raises(ValueError, match="max-pool window 2 is larger than the input 1x5"):
        ops.relu_maxpool2d(np.zeros((70, 3, 1, 5)))
    with pytest.raises(ValueError, match="4-D"):
        ops.relu_maxpool2d(np.zeros((3, 28, 28)))
    with pytest.raises(TypeError, match="float16"):
        ops.relu_maxpool2d(np.zeros((70, 3, 4, 4), np.float16))
    (a, _), (p, _) = ops.relu_maxpool2d(np.ones((70, 3, 4, 4), np.int64))  # promoted, as relu
    assert a.dtype == p.dtype == np.float64


def _layer_by_layer(arch, params, x):
    acts, caches, h = {"x": x}, {}, x
    for layer in arch.layers:
        h, caches[layer.name] = layer.forward(params, h)
        acts[layer.out] = h
    return acts, caches


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_model_forward_is_the_layers_one_by_one(arch, dtype, monkeypatch, rng):
    """...and it does fuse: the batch spans several chunks, so the ReLU before a pool is never
    called on its own."""
    monkeypatch.setattr(ops, "CHUNK_BYTES", 1 << 14)  # several chunks of every tensor
    a = ARCHITECTURES[arch]
    params = model.cast_params(a.init_params(), dtype)
    x = _hard(rng, (37, 1, 28, 28), dtype)
    with np.errstate(invalid="ignore"):
        acts0, caches0 = _layer_by_layer(a, params, x)
        relus = []
        real_relu = ops.relu
        monkeypatch.setattr(ops, "relu", lambda h: relus.append(h.shape) or real_relu(h))
        p = model.forward(a, params, x)
    assert list(p.acts) == list(acts0)
    for name in acts0:
        assert _same(p.acts[name], acts0[name]), name
    for layer in a.layers:
        c = layer.choice(p.caches[layer.name])
        if c is not None:
            assert _same(c, layer.choice(caches0[layer.name])), layer.name
    pooled = [layer.name for i, layer in enumerate(a.layers) if i in a.relu_pools]
    assert len(relus) == sum(isinstance(la, layers.ReLU) for la in a.layers) - len(pooled)
    assert pooled == (["relu1", "relu2"] if arch != "strided" else [])


def test_a_batch_of_one_chunk_calls_relu_itself(monkeypatch):
    """verify and the debugger run batch 1: an error planted in ops.relu must reach them."""
    calls = []
    real = ops.relu
    monkeypatch.setattr(ops, "relu", lambda h: calls.append(h.shape) or real(h))
    params = SIMPLE_CNN.init_params()
    model.forward(SIMPLE_CNN, params, np.ones((1, 1, 28, 28)))
    assert calls == [(1, 4, 28, 28), (1, 8, 14, 14)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_softmax_cross_entropy_reuses_given_probs(dtype, rng):
    logits = (rng.standard_normal((9, 10)) * 30).astype(dtype)
    labels = rng.integers(0, 10, 9)
    probs = ops.softmax(logits)
    loss0, probs0, d0 = ops.softmax_cross_entropy(logits, labels)
    loss, probs1, d = ops.softmax_cross_entropy(logits, labels, probs=probs)
    assert probs1 is probs and loss == loss0 and _same(d, d0) and _same(probs, probs0)
    # probs of another dtype or shape are not the logits' softmax: computed afresh
    wrong = np.zeros((9, 10), "float16")
    assert _same(ops.softmax_cross_entropy(logits, labels, probs=wrong)[2], d0)
