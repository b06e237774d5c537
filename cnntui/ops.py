"""Batched NCHW layer functions in CS231n style: ``forward(...) -> (out, cache)`` and
``backward(dout, cache)``.

No function has a Python loop over pixels: a convolution is one im2col copy plus one small
matmul per image.

One dtype rule for every function: the result dtype is ``np.result_type`` of the array inputs
(x, w, b, dout, logits; a backward pass also counts the dtype its forward computed in, where
the cache records it), after promoting integer and boolean inputs to float64. So float32
stays float32 only if every input is float32, float32 mixed with float64 gives float64, and an
integer or boolean image is computed in float64 (never truncated into an integer buffer). Other
dtypes (float16, complex, object, ...) raise a TypeError. Pure float32 and pure float64 inputs,
which is what the model, trace and trainer pass, run without any extra copy or cast.

Why the code looks the way it does (measured with ``cnntui bench``, numpy 2.x, 2 cores):
- elementwise ufuncs over views with short rows are ~3x slower than over long contiguous rows,
  plain copies are not: so the stride-1 convolution works on images flattened with their
  padding, where every kernel offset is one flat shift, and col2im is one sum over a strided view;
- the im2col matrix of a whole batch does not fit in cache: the batch is convolved in chunks of
  images whose im2col does (``CHUNK_BYTES``), and the backward pass rebuilds it chunk by chunk;
  each convolution shape keeps its chunk buffers (``_ConvWork``) instead of making them per call;
- 2x2 max-pooling compares four corner planes, chunk by chunk, instead of taking an argmax over
  a window axis;
- glibc's malloc returns large freed blocks to the OS and page-faults them back in on the next
  call (~4,300 faults, ~20% of a batch-256 float64 step): so large arrays, results included,
  come from a small per-thread pool of buffers (``_empty``) that hands a buffer out again only
  once nothing else refers to it. Nothing process-wide (such as glibc's ``mallopt``) is tuned;
- a ReLU followed by a 2x2 max-pool runs as one op (``relu_maxpool2d``), chunk by chunk, so the
  pool reads the ReLU's output from cache: a float64 batch does not fit in it.
"""

from __future__ import annotations

import functools
import math
import operator
import sys
import threading
from collections import OrderedDict

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

_FLOAT64, _FLOAT32 = np.dtype(np.float64), np.dtype(np.float32)
_BOOL, _INTP = np.dtype(bool), np.dtype(np.intp)


def _dtype(op: str, names: tuple[str, ...], *dtypes: np.dtype | None) -> np.dtype:
    """The module's dtype rule (see the docstring) over the inputs' dtypes (None: no input).
    Checked per call, so the common case (one float dtype throughout) is tested first."""
    d = dtypes[0]
    if d is _FLOAT64 or d is _FLOAT32:
        for e in dtypes[1:]:
            if e is not d and e is not None:
                break
        else:
            return d
    found = []
    for name, dt in zip(names, dtypes, strict=True):
        if dt is None:
            continue
        if dt.kind in "biu":
            dt = _FLOAT64
        elif dt not in (_FLOAT64, _FLOAT32):
            raise TypeError(f"{op}: {name} has dtype {dt}; use float32 or float64 (integer "
                            f"and boolean arrays are promoted to float64)")
        found.append(dt)
    return np.result_type(*found)


def _surely_finite(a: np.ndarray) -> bool:
    """True if the contiguous array ``a`` has no NaN or Inf, from one BLAS dot product (~2x
    faster than a sum): a NaN or Inf makes ``a . a`` non-finite. False also when the squares
    overflow (|a| > ~1e154 in float64): callers then take their careful path, merely slower."""
    return math.isfinite(np.vdot(a, a))  # the same dot as ``flat @ flat``, without the reshape


# ---- buffers ------------------------------------------------------------------------------------
# Large arrays, and each convolution shape's workspace, come from a pool per thread (the app
# computes in a worker thread). Items are kept by key, (shape, dtype) for an array, the least
# recently used key dropped first once the pool holds more than POOL_BYTES. An item is handed
# out again only when the pool's own references are the only ones left: every array returned,
# every view of one (NumPy points views at the buffer itself) and every cache holding one adds a
# reference, so nothing a caller can still see is ever overwritten. Callers get a fresh view of
# an array, so reshaping what they got in place cannot reshape the pool's buffer.
# Smaller arrays are left to malloc: it keeps them in its heap and reuses a block just freed,
# likely still in cache, where a pooled buffer was last written a whole step ago. Measured
# (cnntui bench, batch 64 and 256): from 1 MiB up, batch 64 in float64 is 8% slower; from 8 MiB
# up, batch 256 in float64 faults again (~3,400 a step).
_POOL_MIN_BYTES = 4 << 20
POOL_BYTES = 128 << 20  # per thread; a float64 SimpleCNN step pools 27 MiB at batch 256, 84 at 512
_POOL_PER_KEY = 8  # a step holds up to ~4 live arrays of one shape (z1, a1, da1, dz1)
_POOL_KEYS = 256


class _Pool(threading.local):
    def __init__(self) -> None:
        self.items: OrderedDict[tuple, list] = OrderedDict()
        self.nbytes = 0


_pool = _Pool()


def _pooled(key: tuple, make):
    """A free item under ``key``, else ``make()`` (anything with ``nbytes``), kept if it fits."""
    pool = _pool
    items = pool.items.get(key)
    if items is None:
        items = pool.items[key] = []
    else:
        pool.items.move_to_end(key)
        for item in items:
            # the list's reference, ``item`` here and getrefcount's argument: nobody else's
            if sys.getrefcount(item) == 3:
                return item
    item = make()
    if len(items) < _POOL_PER_KEY and item.nbytes <= POOL_BYTES // 8:  # a one-off giant: not kept
        items.append(item)
        pool.nbytes += item.nbytes
        while pool.nbytes > POOL_BYTES or len(pool.items) > _POOL_KEYS:
            _, old = pool.items.popitem(last=False)
            pool.nbytes -= sum(i.nbytes for i in old)
    return item


def _empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """``np.empty(shape, dtype)``, from the pool if it is large."""
    if math.prod(shape) * dtype.itemsize < _POOL_MIN_BYTES:
        return np.empty(shape, dtype)
    return _pooled((shape, dtype), lambda: np.empty(shape, dtype)).view()


def _zeros(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    if math.prod(shape) * dtype.itemsize < _POOL_MIN_BYTES:
        return np.zeros(shape, dtype)  # calloc: cheaper than a fill
    out = _empty(shape, dtype)
    out.fill(0)
    return out


def free_buffers() -> None:
    """Drop this thread's pooled buffers (arrays still in use stay valid)."""
    _pool.items.clear()
    _pool.nbytes = 0


def _as(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return a if a.dtype == dtype else a.astype(dtype)


def _count(op: str, name: str, value: object, least: int = 1) -> int:
    """``value`` as an int, refused with one sentence unless it is an integer >= ``least``."""
    if type(value) is int and value >= least:
        return value
    try:
        n = operator.index(value)
    except TypeError:
        n = None
    if n is None or n < least:
        need = "a positive integer" if least == 1 else f"an integer >= {least}"
        raise ValueError(f"{op}: {name} must be {need}, got {value!r}")
    return n


def _ndim_error(op: str, name: str, a: np.ndarray, ndim: int, layout: str) -> ValueError:
    return ValueError(f"{op}: {name} must be {ndim}-D {layout}, got shape {a.shape}")


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution along one axis. A size that does not divide evenly rounds
    down, as PyTorch and the lesson's loops do: the last padded rows or columns go unused."""
    stride = _count("conv_output_size", "the stride", stride)
    padding = _count("conv_output_size", "the padding", padding, least=0)
    return _output_size(size, kernel, stride, padding)


def _output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """conv_output_size for a stride and padding already checked (conv2d checks them once)."""
    span = size + 2 * padding - kernel
    if span < 0:
        raise ValueError(
            f"a {kernel}-wide kernel does not fit an input of size {size} with padding {padding}"
        )
    return span // stride + 1


def _view(base: np.ndarray, spec: tuple[tuple, int, tuple]) -> np.ndarray:
    """A strided view (shape, offset, strides; in elements) of the contiguous array ``base``;
    checked to stay inside ``base`` (and ~10x cheaper than ``as_strided``)."""
    shape, offset, strides = _in_bytes(spec, base.itemsize)
    return np.ndarray(shape, base.dtype, base, offset, strides)


@functools.lru_cache(maxsize=256)
def _in_bytes(spec: tuple[tuple, int, tuple], itemsize: int) -> tuple[tuple, int, tuple]:
    shape, offset, strides = spec
    return shape, offset * itemsize, tuple(s * itemsize for s in strides)


# The batch is convolved (and max-pooled) in chunks of images whose im2col matrix (corner planes)
# fits in cache: writing and re-reading one big matrix through memory costs more than the extra
# Python calls. The backward pass holds ~2x its chunk's im2col (cols and dcols) at once: 256 KiB
# measured fastest at batch 64 (1 MiB: 6% slower in float64, 12% in float32).
CHUNK_BYTES = 1 << 18


class _Geometry:
    """Sizes shared by the forward and backward pass of one convolution.

    Images are stored channels first and flattened with their padding: xp (C, N*P + shift),
    P = Hp*Wp. Output (y, x) of image n for kernel offset (i, j) reads xp[c, n*P + (y*s + i)*Wp
    + x*s + j]. With stride 1 the output grid gets the row pitch Wq = Wp, so every kernel offset
    is one flat shift of the whole image; its last kW-1 columns are junk, computed and dropped.
    """

    def __init__(self, x_shape: tuple, w_shape: tuple, stride: int, padding: int,
                 groups: int, itemsize: int, chunk_bytes: int) -> None:
        N, C, H, W = x_shape
        F, Cg, kH, kW = w_shape
        if C % groups or F % groups or Cg != C // groups:
            raise ValueError(
                f"conv2d: input has {C} channels and weights {w_shape} with groups={groups}; "
                f"need C == groups * weight.shape[1] and F divisible by groups"
            )
        self.x_shape, self.w_shape, self.stride, self.groups = x_shape, w_shape, stride, groups
        self.H_out = _output_size(H, kH, stride, padding)
        self.W_out = _output_size(W, kW, stride, padding)
        self.Hp, self.Wp = H + 2 * padding, W + 2 * padding
        self.Wq = self.Wp if stride == 1 else self.W_out
        self.P, self.L, self.K = self.Hp * self.Wp, self.H_out * self.Wq, Cg * kH * kW
        self.shift = (kH - 1) * self.Wp + kW - 1  # the largest kernel offset, flat
        self.chunk = B = max(1, min(N, chunk_bytes // ((self.K + 1) * self.L * itemsize)))
        P, L, K, Wp, shift = self.P, self.L, self.K, self.Wp, self.shift
        # strided views as (shape, offset, strides) in elements, made once per shape:
        # cols[g, c, i, j, n, y, x] of xp (C, N*P + shift), no copy
        row = N * P + shift
        self.windows = ((groups, Cg, kH, kW, N, self.H_out, self.Wq), 0,
                        (row * Cg, row, Wp, 1, P, stride * Wp, stride))
        # stride 1, in dcols (C, kH, kW, R) (see conv2d_backward): where the matmul writes a
        # chunk, the junk columns in it, and the col2im view that shifts row (i, j) by i*Wp + j
        self.R = R = shift + B * P
        self.dcols_out = ((B, groups, K, L), shift, (P, K * R, R, 1))
        self.junk = ((B, C * kH * kW, self.H_out, kW - 1), shift + self.W_out, (P, R, Wp, 1))
        self.shifted = ((C, kH, kW, B * P), shift, (kH * kW * R, kW * R - Wp, R - 1, 1))
        # the unpadded images (N, C, H, W) inside xp (C, N*P + shift), and (stride 1) inside dxp
        # (C, N*P): one view each instead of a slice, reshape, slice (and transpose)
        inner = padding * Wp + padding
        self.xp_inner = ((C, N, H, W), inner, (row, P, Wp, 1))
        self.dxp_inner = ((N, C, H, W), inner, (P, N * P, Wp, 1))


# one per shape, so that a convolution finds its workspaces (and batch 1 skips the arithmetic)
_geometry = functools.lru_cache(maxsize=64)(_Geometry)


class _ConvWork:
    """One convolution shape's chunk buffers and their views, pooled (``_pooled``), so a call
    makes neither. What a pass rewrites per chunk is only the data: the row of ones that carries
    the bias through the matmul, and the zeros in ``d``'s junk columns and around each image in
    ``dcols``, are written once, when made."""

    def __init__(self, g: _Geometry, dtype: np.dtype, backward: bool) -> None:
        N, C = g.x_shape[:2]
        F, Cg, kH, kW = g.w_shape
        G, Fg, B, K, L = g.groups, F // g.groups, g.chunk, g.K, g.L
        self.cols = np.empty((G, K + 1, B, L), dtype)
        self.cols[:, K] = 1
        self.cols_view = self.cols[:, :K].reshape(G, Cg, kH, kW, B, g.H_out, g.Wq)
        self.cols_t = self.cols.transpose(2, 0, 1, 3)  # per image: (G, K + 1, L)
        arrays = [self.cols]
        if not backward:
            self.res = np.empty((B, G, Fg, L), dtype)
            self.res_valid = self.res.reshape(B, F, g.H_out, g.Wq)[..., :g.W_out]
            arrays.append(self.res)
        else:
            self.d = np.zeros((B, F, g.H_out, g.Wq), dtype)
            self.d_valid = self.d[..., :g.W_out]
            self.dn = self.d.reshape(B, G, Fg, L)
            self.dn_t = self.dn.transpose(0, 1, 3, 2)
            self.dwb = np.empty((N, G, K + 1, Fg), dtype)
            arrays += [self.d, self.dwb]
            if g.stride == 1:
                self.dcols = np.zeros((C, kH, kW, g.R), dtype)
                self.dcols_out = _view(self.dcols, g.dcols_out)
                self.shifted = _view(self.dcols, g.shifted)
                self.junk = _view(self.dcols, g.junk)
                arrays.append(self.dcols)
        self.nbytes = sum(a.nbytes for a in arrays)


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, stride: int = 1,
           padding: int = 0, groups: int = 1) -> tuple[np.ndarray, tuple]:
    """x (N, C, H, W), w (F, C/groups, kH, kW), b (F,) -> out (N, F, H_out, W_out)."""
    x, w = np.asarray(x), np.asarray(w)
    b = None if b is None else np.asarray(b)
    dtype = _dtype("conv2d", ("x", "w", "b"), x.dtype, w.dtype, None if b is None else b.dtype)
    stride = _count("conv2d", "stride", stride)
    padding = _count("conv2d", "padding", padding, least=0)
    groups = _count("conv2d", "groups", groups)
    if x.ndim != 4:
        raise _ndim_error("conv2d", "x", x, 4, "(N, C, H, W)")
    if w.ndim != 4:
        raise _ndim_error("conv2d", "w", w, 4, "(F, C/groups, kH, kW)")
    if 0 in w.shape:
        raise ValueError(f"conv2d: the weights {w.shape} have an empty axis")
    if b is not None and b.shape != (w.shape[0],):
        raise ValueError(f"conv2d: b must have shape ({w.shape[0]},), one per filter, "
                         f"got {b.shape}")
    N, C, H, W = x.shape
    F, K = w.shape[0], w[0].size
    g = _geometry(x.shape, w.shape, stride, padding, groups, dtype.itemsize, CHUNK_BYTES)
    B = g.chunk
    xp = _zeros((C, N * g.P + g.shift), dtype)
    _view(xp, g.xp_inner)[...] = x.transpose(1, 0, 2, 3)
    windows = _view(xp, g.windows)
    ws = _pooled(("conv2d", g, dtype), lambda: _ConvWork(g, dtype, backward=False))
    wb = np.empty((groups, F // groups, K + 1), dtype=dtype)
    wb[:, :, :K] = w.reshape(groups, F // groups, K)
    wb[:, :, K] = 0 if b is None else b.reshape(groups, F // groups)
    out = _empty((N, F, g.H_out, g.W_out), dtype)
    for n0 in range(0, N, B):
        n = min(B, N - n0)
        ws.cols_view[:, :, :, :, :n] = windows[:, :, :, :, n0:n0 + n]
        # one small matmul per image: a single GEMM of these skinny shapes is slower
        np.matmul(wb, ws.cols_t[:n], out=ws.res[:n])
        out[n0:n0 + n] = ws.res_valid[:n]
    # the cache owns everything it holds, so a caller may change x, w or b in place before the
    # backward pass, as an optimiser does: xp and wb are already copies
    return out, (x.shape, w.shape, wb, b is not None, stride, padding, groups, xp)


def conv2d_backward(dout: np.ndarray,
                    cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Gradients of conv2d: (dx, dw, db); db is None when the forward had no bias."""
    x_shape, w_shape, wb, has_bias, stride, padding, groups, xp = cache
    dout = np.asarray(dout)
    dtype = _dtype("conv2d_backward", ("dout", "the forward's dtype"), dout.dtype, xp.dtype)
    N, C, H, W = x_shape
    F, Cg, kH, kW = w_shape
    g = _geometry(x_shape, w_shape, stride, padding, groups, dtype.itemsize, CHUNK_BYTES)
    K, P, B = g.K, g.P, g.chunk
    windows = _view(xp, g.windows)
    ws = _pooled(("conv2d_backward", g, dtype), lambda: _ConvWork(g, dtype, backward=True))
    w_t = wb[:, :, :K].transpose(0, 2, 1)
    # The junk columns of the stride-1 grid (see _Geometry) hold neighbouring pixels, and the
    # matmuls multiply them by d's zeros: harmless unless a pixel (or weight) is NaN or Inf, whose
    # product with 0 is NaN, in a dw (or dx) entry that PyTorch leaves finite. Then the junk
    # columns of cols (or of dcols) are zeroed too. Such a pixel always makes dw non-finite (at
    # stride 1 every pixel is in a valid window), so x is checked only then, and dw redone.
    junk = stride == 1 and kW > 1
    junk_w = junk and not _surely_finite(wb)
    if stride == 1:
        # ws.dcols holds a chunk's dcols, each row (c, i, j) the chunk's images flat as in xp after
        # `shift` zeros; junk stays zero. col2im is then one sum over (i, j) of a strided view
        # that shifts row (i, j) by i*Wp + j: dx[c, q] = sum_ij dcols[c, i, j, q - (i*Wp + j)].
        dxp = _empty((C, N * P), dtype)
    else:
        dxp = _zeros((N, C, g.Hp, g.Wp), dtype)
    # per image: cols @ d.T = [dw.T; db] (this way round the matmul is faster for conv1)
    dwb = ws.dwb

    for n0 in range(0, N, B):
        n = min(B, N - n0)
        ws.cols_view[:, :, :, :, :n] = windows[:, :, :, :, n0:n0 + n]
        ws.d_valid[:n] = dout[n0:n0 + n]
        np.matmul(ws.cols_t[:n], ws.dn_t[:n], out=dwb[n0:n0 + n])
        if stride == 1:
            np.matmul(w_t, ws.dn[:n], out=ws.dcols_out[:n])
            if junk_w:
                ws.junk[:n] = 0
            np.add.reduce(ws.shifted[..., :n * P], axis=(1, 2), out=dxp[:, n0 * P:(n0 + n) * P])
        else:  # strided: col2im as kH*kW strided adds (not a path SimpleCNN takes)
            dcn = np.matmul(w_t, ws.dn[:n]).reshape(n, C, kH, kW, g.H_out, g.W_out)
            dxn = dxp[n0:n0 + n]
            for i in range(kH):
                for j in range(kW):
                    dxn[:, :, i:i + stride * g.H_out:stride, j:j + stride * g.W_out:stride] += \
                        dcn[:, :, i, j]
    if junk and not _surely_finite(dwb) and not _surely_finite(xp):
        for n0 in range(0, N, B):  # dw again, with the junk columns of cols zeroed
            n = min(B, N - n0)
            ws.cols_view[:, :, :, :, :n] = windows[:, :, :, :, n0:n0 + n]
            ws.cols_view[..., g.W_out:] = 0
            ws.d_valid[:n] = dout[n0:n0 + n]
            np.matmul(ws.cols_t[:n], ws.dn_t[:n], out=dwb[n0:n0 + n])
    dwb = dwb.sum(axis=0)
    dw = dwb[:, :K].transpose(0, 2, 1).reshape(F, Cg, kH, kW)
    db = dwb[:, K].reshape(F) if has_bias else None
    dx = _empty((N, C, H, W), dtype)
    dx[...] = (_view(dxp, g.dxp_inner) if stride == 1
               else dxp[:, :, padding:padding + H, padding:padding + W])
    return dx, dw, db


def maxpool2d(x: np.ndarray, size: int = 2, stride: int = 2) -> tuple[np.ndarray, tuple]:
    """Max-pool over H and W. The cache holds ``argmax``: for every output cell, the flat index
    (row * W + col) into its channel of the input where the window's maximum was. Ties go to the
    first maximum in row-major order, as in PyTorch."""
    x = np.asarray(x)
    x = _as(x, _dtype("maxpool2d", ("x",), x.dtype))
    size, stride, H_out, W_out = _pool_args(x, size, stride)
    N, C, H, W = x.shape
    if size == stride == 2:
        pooled = _maxpool2x2(x, H_out, W_out)
        if pooled is not None:
            return pooled[0], (x.shape, pooled[1], size, stride)
    windows = sliding_window_view(x, (size, size), axis=(2, 3))[:, :, ::stride, ::stride]
    windows = windows[:, :, :H_out, :W_out].reshape(N, C, H_out, W_out, size * size)
    k = windows.argmax(axis=-1)  # first maximum in row-major order within the window
    out = np.take_along_axis(windows, k[..., None], axis=-1)[..., 0]
    if out.dtype.kind == "f" and np.isnan(out).any():
        # np.argmax takes a window's first NaN, PyTorch its last: route the gradient as it does
        nan = np.isnan(windows)
        k = np.where(nan.any(axis=-1), size * size - 1 - nan[..., ::-1].argmax(axis=-1), k)
    rows = np.arange(H_out)[:, None] * stride + k // size
    cols = np.arange(W_out)[None, :] * stride + k % size
    argmax = rows * W + cols
    return out, (x.shape, argmax, size, stride)


def _pool_args(x: np.ndarray, size: int, stride: int) -> tuple[int, int, int, int]:
    """maxpool2d's checks: (size, stride, H_out, W_out), or one sentence."""
    size = _count("maxpool2d", "size", size)
    stride = _count("maxpool2d", "stride", stride)
    if x.ndim != 4:
        raise _ndim_error("maxpool2d", "x", x, 4, "(N, C, H, W)")
    H, W = x.shape[2:]
    if size > H or size > W:
        raise ValueError(f"max-pool window {size} is larger than the input {H}x{W}")
    return size, stride, (H - size) // stride + 1, (W - size) // stride + 1


def _pool_chunk(x: np.ndarray) -> int:
    """How many images the 2x2 pool takes at a time."""
    return max(1, CHUNK_BYTES // (x.itemsize * math.prod(x.shape[1:]) or 1))


def _maxpool2x2(x: np.ndarray, H_out: int, W_out: int, relu_out: tuple | None = None
                ) -> tuple[np.ndarray, np.ndarray] | None:
    """2x2 windows, stride 2, without an argmax over a window axis (~5x slower): the maximum of
    the four corners, then the first corner (row-major, as PyTorch) equal to it. With l_i =
    (corner i is less), its offset from the top-left is l0 * (1 + l1 * (W - 1 + l2)): 0, 1, W
    or W + 1. A few images at a time, so that the corner planes and the temporaries stay in
    cache (~25% faster in float64 at batch 64). Given ``relu_out`` (out, mask), it pools
    ``relu(x)`` instead, writing ReLU's out and mask chunk by chunk (see relu_maxpool2d).
    Returns None if there is a NaN, whose rule (PyTorch's: the last NaN wins) the general
    path keeps."""
    N, C, _, W = x.shape
    out = _empty((N, C, H_out, W_out), x.dtype)
    argmax = _empty(out.shape, _INTP)
    corners = _corners(H_out, W_out, W)
    row = np.uint16(W - 1) if W < 0xFFFF else np.intp(W - 1)  # the offset's small dtype
    B = _pool_chunk(x)
    for n0 in range(0, N, B):
        xn = x[n0:n0 + B]
        n = len(xn)
        if relu_out is not None:  # relu's own two passes, on a chunk
            xn = np.maximum(0, xn, out=relu_out[0][n0:n0 + n])
            np.not_equal(xn, 0, out=relu_out[1][n0:n0 + n])
        # one copy into four contiguous corner planes; ufuncs over strided views are much slower
        q4 = np.empty((4, n, C, H_out, W_out), x.dtype)
        q = q4.reshape(2, 2, n, C, H_out, W_out)
        q[...] = xn[:, :, :2 * H_out, :2 * W_out].reshape(n, C, H_out, 2, W_out, 2
                                                           ).transpose(3, 5, 0, 1, 2, 4)
        top, bottom = np.maximum(q[0, 0], q[0, 1]), np.maximum(q[1, 0], q[1, 1])
        out_n = np.maximum(top, bottom, out=out[n0:n0 + n])
        # corners (0, 0), (0, 1), (1, 0); the last one is never asked
        less = (q4[:3] != out_n).view(np.uint8)
        offset = less[2] + row
        offset *= less[1]
        offset += 1
        offset *= less[0]
        np.add(offset, corners, out=argmax[n0:n0 + n])
    if not _surely_finite(out) and np.isnan(out).any():
        return None
    return out, argmax


def _shared(a: np.ndarray) -> np.ndarray:
    """An array cached and shared by every call (and thread): read-only."""
    a.setflags(write=False)
    return a


@functools.lru_cache(maxsize=16)
def _corners(H_out: int, W_out: int, W: int) -> np.ndarray:
    """The flat index of each 2x2 window's top-left cell."""
    return _shared(np.arange(H_out)[:, None] * (2 * W) + np.arange(W_out) * 2)


@functools.lru_cache(maxsize=16)
def _starts(size: int, step: int) -> np.ndarray:
    """The flat index of each input map's first cell, as a column."""
    return _shared(np.arange(0, size, step)[:, None])


def maxpool2d_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """The gradient flows only to the input cell each window took its maximum from."""
    (N, C, H, W), argmax, size, stride = cache
    dout = np.asarray(dout)
    dtype = _dtype("maxpool2d_backward", ("dout",), dout.dtype)
    if stride >= size:  # windows do not overlap: every index is unique, so one scatter
        size = N * C * H * W
        big = size * dtype.itemsize >= _POOL_MIN_BYTES  # else NumPy's own allocation is cheaper
        dx = _zeros((size,), dtype)
        idx = argmax.reshape(N * C, -1)
        idx = np.add(idx, _starts(size, H * W),
                     out=_empty(idx.shape, idx.dtype) if big else None)
        dx[idx.reshape(-1)] = dout.reshape(-1)
        return dx.reshape(N, C, H, W)
    dx = np.zeros((N, C, H * W), dtype=dtype)
    flat_idx = argmax.reshape(N, C, -1)
    n, c = np.indices(flat_idx.shape[:2])
    np.add.at(dx, (n[..., None], c[..., None], flat_idx), dout.reshape(N, C, -1))
    return dx.reshape(N, C, H, W)


def relu(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """max(0, x) as the lesson writes it (``x * mask`` would give -0.0 for negative inputs);
    the cache is the mask of the inputs that pass their gradient on: the positive ones and, as
    in PyTorch (whose test is ``not x <= 0``), NaN. ``out != 0`` is that mask in one pass."""
    x = np.asarray(x)
    x = _as(x, _dtype("relu", ("x",), x.dtype))
    if x.nbytes < _POOL_MIN_BYTES:  # NumPy's own allocations are cheaper than a call to _empty
        out = np.maximum(0, x)
        return out, out != 0
    out = np.maximum(0, x, out=_empty(x.shape, x.dtype))
    return out, np.not_equal(out, 0, out=_empty(x.shape, _BOOL))


def relu_maxpool2d(x: np.ndarray, size: int = 2, stride: int = 2
                   ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, tuple]]:
    """``relu(x)`` and ``maxpool2d`` of its output, ((out, mask), (pooled, cache)): the very
    arrays of the two calls, but the 2x2 pool reads each chunk of ReLU's output while it is still
    in cache. A float64 batch does not fit in cache: the pool would read it back from memory
    (~20% of the pair's time at batch 64). A batch of one chunk gains nothing: it makes the two
    calls themselves (as a test that plants an error in ``relu`` expects)."""
    x = np.asarray(x)
    if size == stride == 2 and x.ndim == 4 and len(x) > _pool_chunk(x):
        x = _as(x, _dtype("relu", ("x",), x.dtype))
        _, _, H_out, W_out = _pool_args(x, size, stride)
        out = np.empty(x.shape, x.dtype) if x.nbytes < _POOL_MIN_BYTES else \
            _empty(x.shape, x.dtype)
        mask = np.empty(x.shape, _BOOL) if x.nbytes < _POOL_MIN_BYTES else \
            _empty(x.shape, _BOOL)
        pooled = _maxpool2x2(x, H_out, W_out, (out, mask))
        if pooled is not None:
            return (out, mask), (pooled[0], (x.shape, pooled[1], size, stride))
        return (out, mask), maxpool2d(out, size, stride)
    relu_out = relu(x)
    return relu_out, maxpool2d(relu_out[0], size, stride)


def relu_backward(dout: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``dout * mask`` (the mask records no dtype: the result follows dout's). PyTorch selects
    instead of multiplying, so a NaN or Inf in dout where the mask is off gives 0: the same
    here, tested with one dot product (``_surely_finite``) so the common case stays a single
    multiply."""
    dout = np.asarray(dout)
    dtype = _dtype("relu_backward", ("dout",), dout.dtype)
    if dout.nbytes < _POOL_MIN_BYTES or dout.shape != mask.shape:
        dx = np.multiply(dout, mask, dtype=dtype)
    else:
        dx = np.multiply(dout, mask, out=_empty(dout.shape, dtype), dtype=dtype)
    if not _surely_finite(dx):
        dx[~mask] = 0
    return dx


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, tuple]:
    """x (N, D) @ w (D, M) + b (M,), as the lesson's ``flat @ W3 + b3``."""
    x, w, b = np.asarray(x), np.asarray(w), np.asarray(b)
    dtype = _dtype("linear", ("x", "w", "b"), x.dtype, w.dtype, b.dtype)
    # copies (cast on the way if need be), so that the cache does not alias the caller's arrays
    x, w = np.array(x, dtype=dtype), np.array(w, dtype=dtype)
    # np.dot: the same BLAS call as @, with less overhead on small shapes
    return np.dot(x, w) + _as(b, dtype), (x, w)


def linear_backward(dout: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, w = cache
    dout = np.asarray(dout)
    dout = _as(dout, _dtype("linear_backward", ("dout", "the forward's dtype"), dout.dtype,
                                x.dtype))
    # np.dot hands x.T to BLAS as a transposed operand; @ is several times slower on it
    return dout @ w.T, np.dot(x.T, dout), dout.sum(axis=0)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by the row maximum so that large logits cannot overflow."""
    logits = np.asarray(logits)
    logits = _as(logits, _dtype("softmax", ("logits",), logits.dtype))
    e = logits - logits.max(axis=-1, keepdims=True)
    np.exp(e, out=e)
    e /= e.sum(axis=-1, keepdims=True)
    return e


LOG_EPS = 1e-15  # the lesson's guard inside the log


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray,
                          probs: np.ndarray | None = None) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean over the batch of the lesson's loss ``-log(probs[label] + 1e-15)``.

    Returns (loss, probs, dlogits) with ``dlogits = (probs - onehot(labels)) / N``. The label's
    entry, ``p - 1``, is computed as ``-(sum of the other probabilities)``: the same number, but
    when the network is sure (p = 1 - 1e-10) the subtraction would keep only ~6 of its digits.
    ``probs``, if given, is ``softmax(logits)`` already computed (a forward pass has it); it is
    used only if it has the logits' shape and dtype.
    """
    logits = np.asarray(logits)
    logits = _as(logits, _dtype("softmax_cross_entropy", ("logits",), logits.dtype))
    if logits.ndim != 2:
        raise _ndim_error("softmax_cross_entropy", "logits", logits, 2, "(N, classes)")
    N, classes = logits.shape
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise ValueError(f"softmax_cross_entropy: labels must be integers (class indices), "
                         f"got dtype {labels.dtype}")
    if labels.shape != (N,):
        raise ValueError(f"softmax_cross_entropy: labels must have shape ({N},), one per row "
                         f"of logits, got {labels.shape}")
    if N:
        # checked per call, so cheaply: on a few labels Python's min/max beat NumPy reductions
        few = labels.tolist() if N <= 64 else None
        lo, hi = (min(few), max(few)) if few else (labels.min(), labels.max())
        if lo < 0 or hi >= classes:
            bad = labels[(labels < 0) | (labels >= classes)][0]
            raise ValueError(f"softmax_cross_entropy: label {bad} is not a class: labels must "
                             f"be from 0 to {classes - 1}")
    rows = np.arange(N)
    if probs is None or probs.shape != logits.shape or probs.dtype != logits.dtype:
        probs = softmax(logits)
    picked = probs[rows, labels]
    # np.mean's arithmetic (a sum, then / N in the same dtype), negated once, without its overhead
    loss = -float(np.log(picked + LOG_EPS).sum() / N) if N else math.nan
    dlogits = probs.copy()
    dlogits[rows, labels] = 0
    dlogits[rows, labels] = -dlogits.sum(axis=1)
    dlogits /= N
    return loss, probs, dlogits
