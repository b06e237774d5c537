"""Batched NCHW layer functions in CS231n style: ``forward(...) -> (out, cache)``, ``backward(dout, cache)``.

Every function keeps the dtype of its input (float64 by default, float32 on request) and has no
Python loop over pixels: a convolution is one im2col view plus one matmul per group.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution along one axis; raises if it would not be whole."""
    span = size + 2 * padding - kernel
    if span < 0:
        raise ValueError(
            f"a {kernel}-wide kernel does not fit an input of size {size} with padding {padding}"
        )
    if span % stride:
        raise ValueError(
            f"convolution output size is not whole: ({size} + 2*{padding} - {kernel}) / {stride} + 1"
            f" = {span / stride + 1:g}; change the padding or the stride"
        )
    return span // stride + 1


def _pad(x: np.ndarray, padding: int) -> np.ndarray:
    if padding == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))


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
    H_out = conv_output_size(H, kH, stride, padding)
    W_out = conv_output_size(W, kW, stride, padding)
    xp = _pad(x, padding)
    # (N, C, H_out, W_out, kH, kW) view -> rows of patches (N*H_out*W_out, Cg*kH*kW) per group
    windows = sliding_window_view(xp, (kH, kW), axis=(2, 3))[:, :, ::stride, ::stride]
    cols = np.ascontiguousarray(
        windows.reshape(N, groups, Cg, H_out, W_out, kH, kW).transpose(1, 0, 3, 4, 2, 5, 6)
    ).reshape(groups, N * H_out * W_out, Cg * kH * kW)
    w_mat = w.reshape(groups, F // groups, Cg * kH * kW)
    out = np.matmul(cols, w_mat.transpose(0, 2, 1))  # (groups, N*H_out*W_out, F/groups)
    out = out.reshape(groups, N, H_out, W_out, F // groups).transpose(1, 0, 4, 2, 3)
    out = out.reshape(N, F, H_out, W_out)
    if b is not None:
        out = out + b.reshape(1, F, 1, 1)
    else:
        out = np.ascontiguousarray(out)
    cache = (x.shape, w, b is not None, stride, padding, groups, cols)
    return out, cache


def conv2d_backward(dout: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Gradients of conv2d: (dx, dw, db); db is None when the forward had no bias."""
    (N, C, H, W), w, has_bias, stride, padding, groups, cols = cache
    F, Cg, kH, kW = w.shape
    _, _, H_out, W_out = dout.shape
    Fg = F // groups
    # (groups, N*H_out*W_out, F/groups), matching the rows of cols
    dout_mat = dout.reshape(N, groups, Fg, H_out, W_out).transpose(1, 0, 3, 4, 2).reshape(
        groups, N * H_out * W_out, Fg)
    dw = np.matmul(dout_mat.transpose(0, 2, 1), cols).reshape(F, Cg, kH, kW)
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    w_mat = w.reshape(groups, Fg, Cg * kH * kW)
    dcols = np.matmul(dout_mat, w_mat).reshape(groups, N, H_out, W_out, Cg, kH, kW)
    # col2im: one strided add per kernel offset (kH*kW adds), never a loop over pixels
    dcols = dcols.transpose(1, 0, 4, 5, 6, 2, 3).reshape(N, C, kH, kW, H_out, W_out)
    dxp = np.zeros((N, C, H + 2 * padding, W + 2 * padding), dtype=dout.dtype)
    for i in range(kH):
        for j in range(kW):
            dxp[:, :, i:i + stride * H_out:stride, j:j + stride * W_out:stride] += dcols[:, :, i, j]
    dx = dxp[:, :, padding:padding + H, padding:padding + W] if padding else dxp
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
    windows = sliding_window_view(x, (size, size), axis=(2, 3))[:, :, ::stride, ::stride]
    windows = windows[:, :, :H_out, :W_out].reshape(N, C, H_out, W_out, size * size)
    k = windows.argmax(axis=-1)  # first maximum in row-major order within the window
    out = np.take_along_axis(windows, k[..., None], axis=-1)[..., 0]
    rows = np.arange(H_out)[:, None] * stride + k // size
    cols = np.arange(W_out)[None, :] * stride + k % size
    argmax = rows * W + cols
    return out, (x.shape, argmax, size, stride)


def maxpool2d_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """The gradient flows only to the input cell each window took its maximum from."""
    (N, C, H, W), argmax, size, stride = cache
    dx = np.zeros((N, C, H * W), dtype=dout.dtype)
    flat_idx = argmax.reshape(N, C, -1)
    if stride >= size:  # windows do not overlap: every index is unique
        np.put_along_axis(dx, flat_idx, dout.reshape(N, C, -1), axis=-1)
    else:
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


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
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
