"""Batched NCHW layer functions in CS231n style: ``forward(...) -> (out, cache)`` and
``backward(dout, cache)``.

Every function keeps the dtype of its input (float64 by default, float32 on request) and has no
Python loop over pixels: a convolution is one im2col copy plus one small matmul per image.

Speed notes (numpy 2.x, see ``cnntui bench``): elementwise ufuncs over views with short rows are
~3x slower than over long contiguous rows, while plain copies are not; so the stride-1 convolution
works on images flattened with their padding, where every kernel offset is one flat shift, and
col2im is kH*kW adds of long contiguous rows.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution along one axis; raises if it would not be whole."""
    span = size + 2 * padding - kernel
    if span < 0:
        raise ValueError(
            f"a {kernel}-wide kernel does not fit an input of size {size} with padding {padding}"
        )
    if span % stride:
        raise ValueError(
            f"convolution output size is not whole: ({size} + 2*{padding} - {kernel}) / {stride}"
            f" + 1 = {span / stride + 1:g}; change the padding or the stride"
        )
    return span // stride + 1


def _geometry(x_shape: tuple, w_shape: tuple, stride: int, padding: int) -> tuple[int, ...]:
    """(H_out, W_out, Hp, Wp, Wq, tail): Wq is the row pitch of the output grid. With stride 1 it
    is the padded width Wp, so output (y, x) for kernel offset (i, j) reads flat position
    (y*Wp + x) + (i*Wp + j) of the padded image: the last kW-1 columns of each row are junk."""
    _, _, H, W = x_shape
    _, _, kH, kW = w_shape
    H_out = conv_output_size(H, kH, stride, padding)
    W_out = conv_output_size(W, kW, stride, padding)
    Hp, Wp = H + 2 * padding, W + 2 * padding
    Wq = Wp if stride == 1 else W_out
    tail = (kH - 1) * Wp + kW - 1  # room past the last image for the junk columns' reads
    return H_out, W_out, Hp, Wp, Wq, tail


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, stride: int = 1,
           padding: int = 0, groups: int = 1) -> tuple[np.ndarray, tuple]:
    """x (N, C, H, W), w (F, C/groups, kH, kW), b (F,) -> out (N, F, H_out, W_out)."""
    N, C, H, W = x.shape
    F, Cg, kH, kW = w.shape
    if C % groups or F % groups or Cg != C // groups:
        raise ValueError(
            f"conv2d: input has {C} channels and weights {w.shape} with groups={groups}; "
            f"need C == groups * weight.shape[1] and F divisible by groups"
        )
    H_out, W_out, Hp, Wp, Wq, tail = _geometry(x.shape, w.shape, stride, padding)
    P, L, K = Hp * Wp, H_out * Wq, Cg * kH * kW
    # channels first, images flattened with their padding: (C, N*Hp*Wp + tail)
    xp = np.zeros((C, N * P + tail), dtype=x.dtype)
    xp[:, :N * P].reshape(C, N, Hp, Wp)[:, :, padding:padding + H, padding:padding + W] = \
        x.transpose(1, 0, 2, 3)
    # im2col as one copy of a strided view: cols[c, i, j, n, y, x] = xp[c, n, y*s + i, x*s + j];
    # the extra row of ones carries the bias through the matmul (and gives db from the dw matmul)
    cols = np.empty((groups, K + 1, N, L), dtype=x.dtype)
    e = xp.itemsize
    view = as_strided(xp, (C, kH, kW, N, H_out, Wq),
                      (xp.strides[0], Wp * e, e, P * e, stride * Wp * e, stride * e))
    cols[:, :K].reshape(groups, Cg, kH, kW, N, H_out, Wq)[...] = view.reshape(
        groups, Cg, kH, kW, N, H_out, Wq)  # (splitting axes: both sides stay views)
    cols[:, K] = 1
    wb = np.empty((groups, F // groups, K + 1), dtype=x.dtype)
    wb[:, :, :K] = w.reshape(groups, F // groups, K)
    wb[:, :, K] = 0 if b is None else b.reshape(groups, F // groups)
    # one small matmul per image: big single GEMMs of these skinny shapes are slower
    out = np.matmul(wb, cols.transpose(2, 0, 1, 3))  # (N, groups, F/groups, L)
    out = out.reshape(N, F, H_out, Wq)[..., :W_out].copy()
    return out, (x.shape, w, b is not None, stride, padding, groups, cols)


def conv2d_backward(dout: np.ndarray,
                    cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Gradients of conv2d: (dx, dw, db); db is None when the forward had no bias."""
    x_shape, w, has_bias, stride, padding, groups, cols = cache
    N, C, H, W = x_shape
    F, Cg, kH, kW = w.shape
    H_out, W_out, Hp, Wp, Wq, tail = _geometry(x_shape, w.shape, stride, padding)
    P, L, K, Fg = Hp * Wp, H_out * Wq, Cg * kH * kW, F // groups
    # dout on the output grid, zero in the junk columns so they contribute nothing
    d = np.zeros((N, F, H_out, Wq), dtype=dout.dtype)
    d[..., :W_out] = dout
    d = d.reshape(N, groups, Fg, L)
    dwb = np.matmul(d, cols.transpose(2, 0, 3, 1)).sum(axis=0)  # (groups, Fg, K+1)
    dw = dwb[..., :K].reshape(F, Cg, kH, kW)
    db = dwb[..., K].reshape(F) if has_bias else None
    w_t = w.reshape(groups, Fg, K).transpose(0, 2, 1)
    if stride == 1:
        # dcols laid out like the flat padded images (junk rows zero): col2im is kH*kW adds of
        # long contiguous rows, one flat shift per kernel offset
        dcols = np.empty((groups, K, N, P), dtype=dout.dtype)
        dcols[..., L:] = 0
        np.matmul(w_t, d, out=dcols[..., :L].transpose(2, 0, 1, 3))
        dcols = dcols.reshape(C, kH, kW, N * P)
        dxp = np.zeros((C, N * P + tail), dtype=dout.dtype)
        for i in range(kH):
            for j in range(kW):
                s = i * Wp + j
                dxp[:, s:s + N * P] += dcols[:, i, j]
        dxp = dxp[:, :N * P].reshape(C, N, Hp, Wp).transpose(1, 0, 2, 3)
    else:
        dcols = np.matmul(w_t, d).reshape(N, C, kH, kW, H_out, W_out)
        dxp = np.zeros((N, C, Hp, Wp), dtype=dout.dtype)
        for i in range(kH):
            for j in range(kW):
                dxp[:, :, i:i + stride * H_out:stride, j:j + stride * W_out:stride] += \
                    dcols[:, :, i, j]
    dx = dxp[:, :, padding:padding + H, padding:padding + W].copy()
    return dx, dw, db
def maxpool2d(x: np.ndarray, size: int = 2, stride: int = 2) -> tuple[np.ndarray, tuple]:
    """Max-pool over H and W. The cache holds ``argmax``: for every output cell, the flat index
    (row * W + col) into its channel of the input where the window's maximum was. Ties go to the
    first maximum in row-major order, as in PyTorch."""
    N, C, H, W = x.shape
    if size > H or size > W:
        raise ValueError(f"max-pool window {size} is larger than the input {H}x{W}")
    H_out = (H - size) // stride + 1
    W_out = (W - size) // stride + 1
    if size == stride == 2:
        pooled = _maxpool2x2(x, H_out, W_out)
        if pooled is not None:
            return pooled[0], (x.shape, pooled[1], size, stride)
    windows = sliding_window_view(x, (size, size), axis=(2, 3))[:, :, ::stride, ::stride]
    windows = windows[:, :, :H_out, :W_out].reshape(N, C, H_out, W_out, size * size)
    k = windows.argmax(axis=-1)  # first maximum in row-major order within the window
    out = np.take_along_axis(windows, k[..., None], axis=-1)[..., 0]
    rows = np.arange(H_out)[:, None] * stride + k // size
    cols = np.arange(W_out)[None, :] * stride + k % size
    argmax = rows * W + cols
    return out, (x.shape, argmax, size, stride)


def _maxpool2x2(x: np.ndarray, H_out: int, W_out: int) -> tuple[np.ndarray, np.ndarray] | None:
    """2x2 windows, stride 2: a tournament between the windows' four corners, ~5x faster than an
    argmax over a window axis. Strict comparisons keep the first maximum in row-major order;
    returns None if there is a NaN, whose rule (the first NaN wins) the general path keeps."""
    N, C, _, W = x.shape
    x = x[:, :, :2 * H_out, :2 * W_out]
    # one copy into four contiguous corner planes; ufuncs over strided views are much slower
    q = np.ascontiguousarray(x.reshape(N, C, H_out, 2, W_out, 2).transpose(3, 5, 0, 1, 2, 4))
    tl, tr, bl, br = q[0, 0], q[0, 1], q[1, 0], q[1, 1]
    top, bottom = np.maximum(tl, tr), np.maximum(bl, br)
    top_right, bottom_right = tr > tl, br > bl
    down = bottom > top  # ties stay in the top row
    out = np.maximum(top, bottom)
    if out.dtype.kind == "f" and np.isnan(out).any():
        return None
    right = top_right ^ (down & (top_right ^ bottom_right))
    argmax = down * W  # row offset in the window, as flat index
    argmax += right
    argmax += np.arange(H_out)[:, None] * (2 * W) + np.arange(W_out) * 2  # window corner
    return out, argmax


def maxpool2d_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """The gradient flows only to the input cell each window took its maximum from."""
    (N, C, H, W), argmax, size, stride = cache
    if stride >= size:  # windows do not overlap: every index is unique, so one scatter
        dx = np.zeros(N * C * H * W, dtype=dout.dtype)
        idx = argmax.reshape(N * C, -1) + np.arange(0, N * C * H * W, H * W)[:, None]
        dx[idx.ravel()] = dout.ravel()
        return dx.reshape(N, C, H, W)
    dx = np.zeros((N, C, H * W), dtype=dout.dtype)
    flat_idx = argmax.reshape(N, C, -1)
    n, c = np.indices(flat_idx.shape[:2])
    np.add.at(dx, (n[..., None], c[..., None], flat_idx), dout.reshape(N, C, -1))
    return dx.reshape(N, C, H, W)


def relu(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """max(0, x); the cache is the mask of positive inputs."""
    mask = x > 0
    return x * mask, mask


def relu_backward(dout: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return dout * mask


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, tuple]:
    """x (N, D) @ w (D, M) + b (M,), as the lesson's ``flat @ W3 + b3``."""
    return x @ w + b, (x, w)


def linear_backward(dout: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, w = cache
    return dout @ w.T, x.T @ dout, dout.sum(axis=0)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by the row maximum so that large logits cannot overflow."""
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


LOG_EPS = 1e-15  # the lesson's guard inside the log


def softmax_cross_entropy(logits: np.ndarray,
                          labels: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean over the batch of the lesson's loss ``-log(probs[label] + 1e-15)``.

    Returns (loss, probs, dlogits) with ``dlogits = (probs - onehot(labels)) / N``.
    """
    labels = np.asarray(labels)
    N = logits.shape[0]
    probs = softmax(logits)
    picked = probs[np.arange(N), labels]
    loss = float(np.mean(-np.log(picked + LOG_EPS)))
    dlogits = probs.copy()
    dlogits[np.arange(N), labels] -= 1
    dlogits /= N
    return loss, probs, dlogits
