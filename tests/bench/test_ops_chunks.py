"""The paths the benchmarks time: ``cnntui.ops`` convolves a batch in chunks of images sized to
fit L2 (``ops.CHUNK_BYTES``). The unit tests in tests/test_ops.py use batches of one chunk; here
tiny chunks force several, including a short last one, against PyTorch."""

from __future__ import annotations

import numpy as np
import pytest

from cnntui import ops

torch = pytest.importorskip("torch")
F = torch.nn.functional

# (N, C, H, W, F, k, stride, padding, groups)
CASES = [
    (13, 1, 28, 28, 4, 3, 1, 1, 1),  # SimpleCNN's conv1
    (11, 4, 14, 14, 8, 3, 1, 1, 1),  # and conv2
    (9, 4, 9, 11, 6, 3, 2, 1, 2),
    (7, 6, 10, 10, 6, 3, 1, 1, 6),
    (5, 3, 8, 10, 2, 5, 1, 2, 1),
    (6, 4, 12, 12, 4, 4, 4, 0, 1),
]


@pytest.mark.parametrize("chunk_bytes", [1, 4096, 1 << 20])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "N{}C{}H{}W{}F{}k{}s{}p{}g{}".format(*c))
@pytest.mark.parametrize("bias", [True, False])
def test_chunked_conv_matches_torch(case, chunk_bytes, bias, monkeypatch, rng):
    monkeypatch.setattr(ops, "CHUNK_BYTES", chunk_bytes)
    N, C, H, W, F_, k, stride, padding, groups = case
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((F_, C // groups, k, k))
    b = rng.standard_normal(F_) if bias else None
    out, cache = ops.conv2d(x, w, b, stride=stride, padding=padding, groups=groups)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = ops.conv2d_backward(dout, cache)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True) if bias else None
    ot = F.conv2d(xt, wt, bt, stride=stride, padding=padding, groups=groups)
    ot.backward(torch.tensor(dout))
    np.testing.assert_allclose(out, ot.detach().numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(dw, wt.grad.numpy(), rtol=0, atol=1e-10)
    if bias:
        np.testing.assert_allclose(db, bt.grad.numpy(), rtol=0, atol=1e-10)
    else:
        assert db is None


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_chunked_conv_keeps_dtype(dtype, monkeypatch, rng):
    monkeypatch.setattr(ops, "CHUNK_BYTES", 4096)
    x = rng.standard_normal((9, 4, 14, 14)).astype(dtype)
    w = rng.standard_normal((8, 4, 3, 3)).astype(dtype)
    out, cache = ops.conv2d(x, w, np.zeros(8, dtype), padding=1)
    grads = ops.conv2d_backward(out, cache)
    assert out.dtype == np.dtype(dtype) and all(g.dtype == np.dtype(dtype) for g in grads)
