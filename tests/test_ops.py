"""The fast layers against the lesson's loops and against PyTorch, forward and backward."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnntui import lesson, ops

# (N, C, H, W, F, k, stride, padding, groups); every output size here is whole
CONV_CASES = [
    (2, 1, 8, 8, 3, 3, 1, 0, 1),
    (3, 3, 9, 7, 4, 3, 1, 1, 1),
    (2, 4, 9, 9, 5, 3, 2, 0, 1),
    (2, 2, 11, 9, 3, 3, 2, 1, 1),
    (1, 3, 8, 10, 2, 5, 1, 2, 1),
    (2, 4, 7, 7, 6, 1, 2, 2, 1),
    (2, 4, 8, 8, 8, 3, 1, 1, 2),
    (2, 6, 9, 9, 6, 3, 2, 1, 6),  # depthwise
    (1, 8, 6, 6, 4, 1, 1, 0, 4),
]


def lesson_conv(x, w, b, stride, padding, groups):
    """The lesson's loops per image and per group (the lesson has no groups argument)."""
    Cg, Fg = w.shape[1], w.shape[0] // groups
    outs = []
    for n in range(x.shape[0]):
        parts = []
        for g in range(groups):
            fs, cs = slice(g * Fg, (g + 1) * Fg), slice(g * Cg, (g + 1) * Cg)
            parts.append(lesson.conv2d_multi(x[n, cs], w[fs], b[fs], stride, padding))
        outs.append(np.concatenate(parts))
    return np.stack(outs)


def lesson_conv_backward(dout, x, w, stride, padding, groups):
    Cg, Fg = w.shape[1], w.shape[0] // groups
    dx, dw, db = np.zeros_like(x), np.zeros_like(w), np.zeros(w.shape[0])
    for n in range(x.shape[0]):
        for g in range(groups):
            fs, cs = slice(g * Fg, (g + 1) * Fg), slice(g * Cg, (g + 1) * Cg)
            a, bw, bb = lesson.conv2d_backward(dout[n, fs], x[n, cs], w[fs], stride, padding)
            dx[n, cs] += a
            dw[fs] += bw
            db[fs] += bb
    return dx, dw, db


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "N{}C{}H{}W{}F{}k{}s{}p{}g{}".format(*c))
def test_conv2d_matches_lesson_and_torch(case, rng):
    N, C, H, W, F_, k, stride, padding, groups = case
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((F_, C // groups, k, k))
    b = rng.standard_normal(F_)
    out, cache = ops.conv2d(x, w, b, stride=stride, padding=padding, groups=groups)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = ops.conv2d_backward(dout, cache)

    np.testing.assert_allclose(out, lesson_conv(x, w, b, stride, padding, groups),
                               rtol=0, atol=1e-12)
    ldx, ldw, ldb = lesson_conv_backward(dout, x, w, stride, padding, groups)
    for ours, theirs in ((dx, ldx), (dw, ldw), (db, ldb)):
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)

    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ot = F.conv2d(xt, wt, bt, stride=stride, padding=padding, groups=groups)
    ot.backward(torch.tensor(dout))
    np.testing.assert_allclose(out, ot.detach().numpy(), rtol=0, atol=1e-10)
    for ours, t in ((dx, xt), (dw, wt), (db, bt)):
        np.testing.assert_allclose(ours, t.grad.numpy(), rtol=0, atol=1e-10)


def test_conv2d_float32_within_float32_tolerance(rng):
    x = rng.standard_normal((4, 4, 14, 14)).astype(np.float32)
    w = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    out, cache = ops.conv2d(x, w, b, padding=1)
    assert out.dtype == np.float32
    dout = rng.standard_normal(out.shape).astype(np.float32)
    dx, dw, db = ops.conv2d_backward(dout, cache)
    assert dx.dtype == dw.dtype == db.dtype == np.float32
    out64, cache64 = ops.conv2d(*(a.astype(np.float64) for a in (x, w, b)), padding=1)
    grads64 = ops.conv2d_backward(dout.astype(np.float64), cache64)
    # float32 has 24 bits: a sum of 36 products is good to ~1e-6 relative to its magnitude
    for ours, exact in ((out, out64), *zip((dx, dw, db), grads64, strict=True)):
        assert np.max(np.abs(ours - exact)) <= 1e-5 * np.max(np.abs(exact))


@pytest.mark.parametrize("size,kernel,stride,padding,groups", [
    (28, 3, 2, 1, 1),  # (28 + 2 - 3) / 2 + 1 = 14.5: rounds down to 14, as the strided CNN needs
    (6, 3, 2, 0, 1), (7, 4, 3, 1, 2), (14, 3, 2, 1, 4), (9, 2, 4, 0, 1)])
def test_conv2d_sizes_that_do_not_divide_round_down_as_pytorch(size, kernel, stride, padding,
                                                                groups, rng):
    import torch
    import torch.nn.functional as F

    C, Fo = 4, 8
    x = rng.standard_normal((2, C, size, size))
    w = rng.standard_normal((Fo, C // groups, kernel, kernel))
    b = rng.standard_normal(Fo)
    out, cache = ops.conv2d(x, w, b, stride=stride, padding=padding, groups=groups)
    H_out = (size + 2 * padding - kernel) // stride + 1
    assert out.shape == (2, Fo, H_out, H_out)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ref = F.conv2d(xt, wt, bt, stride=stride, padding=padding, groups=groups)
    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=0, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    ref.backward(torch.tensor(dout))
    for ours, theirs in zip(ops.conv2d_backward(dout, cache), (xt, wt, bt), strict=True):
        np.testing.assert_allclose(ours, theirs.grad.numpy(), rtol=0, atol=1e-11)


def test_conv2d_channel_mismatch_raises():
    with pytest.raises(ValueError, match="channels"):
        ops.conv2d(np.zeros((1, 3, 5, 5)), np.zeros((2, 2, 3, 3)))


@pytest.mark.parametrize("size,stride,H,W", [(2, 2, 8, 8), (2, 2, 7, 9), (3, 3, 9, 9), (3, 2, 9, 7),
                                             (2, 1, 5, 5)])
def test_maxpool_matches_lesson_and_torch(size, stride, H, W, rng):
    x = rng.standard_normal((2, 3, H, W))
    out, cache = ops.maxpool2d(x, size, stride)
    dout = rng.standard_normal(out.shape)
    dx = ops.maxpool2d_backward(dout, cache)
    for n in range(2):
        lout, lidx = lesson.maxpool2d(x[n], size, stride)
        np.testing.assert_array_equal(out[n], lout)
        np.testing.assert_array_equal(cache[1][n], lidx[..., 0] * W + lidx[..., 1])
        np.testing.assert_array_equal(
            dx[n], lesson.maxpool_backward(dout[n], lidx, x[n].shape, size, stride))
    xt = torch.tensor(x, requires_grad=True)
    ot, idx = F.max_pool2d(xt, size, stride, return_indices=True)
    ot.backward(torch.tensor(dout))
    np.testing.assert_array_equal(out, ot.detach().numpy())
    np.testing.assert_array_equal(cache[1], idx.numpy())
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=0, atol=1e-15)


def test_maxpool_ties_route_gradient_like_torch(rng):
    # ReLU output: many windows are all zeros or share their maximum
    x = np.maximum(0, np.round(rng.standard_normal((2, 4, 8, 8)), 0))
    x[0, 0, :2, :2] = 0.0  # an all-zero window
    x[0, 1, 2:4, 2:4] = 1.0  # a window whose four entries tie
    out, cache = ops.maxpool2d(x)
    dout = rng.standard_normal(out.shape)
    dx = ops.maxpool2d_backward(dout, cache)
    xt = torch.tensor(x, requires_grad=True)
    ot, idx = F.max_pool2d(xt, 2, return_indices=True)
    ot.backward(torch.tensor(dout))
    np.testing.assert_array_equal(cache[1], idx.numpy())
    np.testing.assert_array_equal(dx, xt.grad.numpy())
    # exactly one element of each tied window receives the gradient: the first in row-major order
    assert dx[0, 0, 0, 0] == dout[0, 0, 0, 0] and np.count_nonzero(dx[0, 0, :2, :2]) <= 1
    assert dx[0, 1, 2, 2] == dout[0, 1, 1, 1] and np.count_nonzero(dx[0, 1, 2:4, 2:4]) == 1


def test_maxpool_float32_keeps_dtype(rng):
    x = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    out, cache = ops.maxpool2d(x)
    assert out.dtype == np.float32
    assert ops.maxpool2d_backward(out, cache).dtype == np.float32


def test_relu_and_linear_match_torch(rng):
    x = rng.standard_normal((5, 7))
    w, b = rng.standard_normal((7, 3)), rng.standard_normal(3)
    out, cache = ops.linear(x, w, b)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = ops.linear_backward(dout, cache)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ot = xt @ wt + bt
    ot.backward(torch.tensor(dout))
    np.testing.assert_allclose(out, ot.detach().numpy(), atol=1e-12)
    for ours, t in ((dx, xt), (dw, wt), (db, bt)):
        np.testing.assert_allclose(ours, t.grad.numpy(), atol=1e-12)
    r, mask = ops.relu(x)
    np.testing.assert_array_equal(r, torch.relu(torch.tensor(x)).numpy())
    np.testing.assert_array_equal(ops.relu_backward(dout[:, :1].repeat(7, 1), mask),
                                  dout[:, :1].repeat(7, 1) * (x > 0))


def test_softmax_cross_entropy_matches_torch(rng):
    logits = rng.standard_normal((6, 10)) * 3
    labels = rng.integers(0, 10, 6)
    loss, probs, dlogits = ops.softmax_cross_entropy(logits, labels)
    lt = torch.tensor(logits, requires_grad=True)
    ref = F.cross_entropy(lt, torch.tensor(labels))
    ref.backward()
    # the lesson's +1e-15 inside the log moves the loss by at most ~1e-15 / min(p)
    assert abs(loss - ref.item()) < 1e-10
    np.testing.assert_allclose(probs, torch.softmax(lt, 1).detach().numpy(), atol=1e-15)
    np.testing.assert_allclose(dlogits, lt.grad.numpy(), atol=1e-15)


def test_softmax_of_huge_logits_is_finite():
    loss, probs, dlogits = ops.softmax_cross_entropy(np.array([[1000.0, 0.0, 0.0]]), np.array([0]))
    assert np.all(np.isfinite(probs)) and np.all(np.isfinite(dlogits)) and np.isfinite(loss)
    np.testing.assert_allclose(probs, [[1.0, 0.0, 0.0]])
    assert loss == pytest.approx(0.0, abs=1e-14)
    # the wrong class: exp(-1000) underflows to 0, and the lesson's 1e-15 keeps the log finite
    loss, _, _ = ops.softmax_cross_entropy(np.array([[1000.0, 0.0, 0.0]]), np.array([1]))
    assert loss == pytest.approx(-np.log(1e-15))


def test_dlogits_keeps_its_precision_when_the_network_is_sure():
    logits = np.array([[25.0, 0.0, 0.0]])
    _, probs, dlogits = ops.softmax_cross_entropy(logits, np.array([0]))
    tail = np.exp(-25.0) / (1 + 2 * np.exp(-25.0))
    # p - 1 computed by subtraction keeps only ~5 digits of -2*tail; ours keeps all of them
    assert dlogits[0, 0] == pytest.approx(-2 * tail, rel=1e-14)
    assert abs((probs[0, 0] - 1) / (-2 * tail) - 1) > 1e-10
    assert dlogits.sum() == pytest.approx(0.0, abs=1e-25)


# ---- ops as an API (issue 7) -------------------------------------------------------------------


def _all_ops(x, w, b, dout_scale=1.0):
    """Every forward and backward of the module on x (N, C, 6, 6), w (F, C, 3, 3), b (F,), in the
    given dtypes; returns {name: array} of every result."""
    out, cache = ops.conv2d(x, w, b, padding=1)
    res = {"conv": out}
    res["conv_dx"], res["conv_dw"], res["conv_db"] = ops.conv2d_backward(
        np.ones(out.shape, dtype=out.dtype) * dout_scale, cache)
    res["pool"], pcache = ops.maxpool2d(x)
    res["pool_dx"] = ops.maxpool2d_backward(res["pool"], pcache)
    res["relu"], mask = ops.relu(x)
    res["relu_dx"] = ops.relu_backward(res["relu"], mask)
    flat = x.reshape(x.shape[0], -1)
    lw = np.resize(w, (flat.shape[1], 2))
    res["linear"], lcache = ops.linear(flat, lw, b[:2])
    res["linear_dx"], res["linear_dw"], res["linear_db"] = ops.linear_backward(res["linear"],
                                                                               lcache)
    res["softmax"] = ops.softmax(res["linear"])
    return res


@pytest.mark.parametrize("kind", [np.int64, np.int32, np.uint8, np.bool_])
def test_integer_and_bool_inputs_are_promoted_to_float64(kind, rng):
    x = rng.integers(0, 2 if kind is np.bool_ else 5, (2, 2, 6, 6)).astype(kind)
    w = rng.standard_normal((3, 2, 3, 3))
    b = rng.standard_normal(3)
    ours = _all_ops(x, w, b)
    exact = _all_ops(x.astype(np.float64), w, b)
    for name, value in ours.items():
        assert value.dtype == np.float64, name
        np.testing.assert_array_equal(value, exact[name], err_msg=name)
    # integer weights too, and an integer image with float32 weights: never an integer buffer
    w_int = np.round(w * 4).astype(np.int64)
    out, cache = ops.conv2d(x, w_int, b.astype(np.float32), padding=1)
    assert out.dtype == np.float64
    ref, _ = ops.conv2d(x.astype(np.float64), w_int.astype(np.float64),
                        b.astype(np.float32).astype(np.float64), padding=1)
    np.testing.assert_array_equal(out, ref)
    dx, dw, db = ops.conv2d_backward(np.ones(out.shape, dtype=np.int64), cache)
    assert dx.dtype == dw.dtype == db.dtype == np.float64
    loss, probs, dlogits = ops.softmax_cross_entropy(np.arange(6).reshape(2, 3), np.array([0, 2]))
    assert probs.dtype == dlogits.dtype == np.float64


def test_conv2d_with_float_x_and_int_weights_keeps_the_weights(rng):
    # the bug: conv2d cast w into x's buffer; with an int x it wrote float weights into ints
    x = rng.integers(0, 3, (1, 1, 5, 5))
    w = rng.standard_normal((2, 1, 3, 3))
    out, _ = ops.conv2d(x, w, np.zeros(2), padding=1)
    ref = lesson_conv(x.astype(np.float64), w, np.zeros(2), 1, 1, 1)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-12)


def test_mixed_float32_and_float64_give_float64_in_every_op(rng):
    x32 = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    w, b = rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3)
    # conv2d used to cast w into float32 (x's dtype) while linear promoted to float64
    out, cache = ops.conv2d(x32, w, b, padding=1)
    assert out.dtype == np.float64
    ref, ref_cache = ops.conv2d(x32.astype(np.float64), w, b, padding=1)
    np.testing.assert_array_equal(out, ref)
    dout32 = rng.standard_normal(out.shape).astype(np.float32)
    for ours, exact in zip(ops.conv2d_backward(dout32, cache),
                           ops.conv2d_backward(dout32.astype(np.float64), ref_cache), strict=True):
        assert ours.dtype == np.float64
        np.testing.assert_array_equal(ours, exact)
    # a float64 dout into a float32 forward gives float64 gradients, as the rule says
    _, cache32 = ops.conv2d(x32, w.astype(np.float32), b.astype(np.float32), padding=1)
    assert all(g.dtype == np.float64 for g in ops.conv2d_backward(dout32.astype(np.float64),
                                                                  cache32))
    lout, lcache = ops.linear(x32.reshape(2, -1), rng.standard_normal((72, 4)), b[:1])
    assert lout.dtype == np.float64
    assert all(g.dtype == np.float64 for g in ops.linear_backward(
        np.ones((2, 4), np.float32), lcache))
    # and float32 throughout stays float32 throughout
    res = _all_ops(x32, w.astype(np.float32), b.astype(np.float32))
    assert {name: v.dtype for name, v in res.items()} == {name: np.float32 for name in res}


@pytest.mark.parametrize("dtype", [np.float16, np.complex128, object])
def test_unsupported_dtypes_are_refused(dtype):
    x = np.ones((1, 1, 4, 4), dtype=dtype)
    w = np.ones((1, 1, 3, 3))
    for call in (lambda: ops.conv2d(x, w, None, padding=1), lambda: ops.maxpool2d(x),
                 lambda: ops.relu(x), lambda: ops.linear(x.reshape(1, 16), np.ones((16, 2)),
                                                         np.zeros(2)),
                 lambda: ops.softmax(x.reshape(1, 16))):
        with pytest.raises(TypeError, match="float32 or float64"):
            call()


@pytest.mark.parametrize("kwargs,match", [
    ({"stride": 0}, "stride must be a positive integer, got 0"),
    ({"stride": -1}, "stride must be a positive integer, got -1"),
    ({"stride": 1.5}, "stride must be a positive integer, got 1.5"),
    ({"groups": 0}, "groups must be a positive integer, got 0"),
    ({"groups": -2}, "groups must be a positive integer, got -2"),
    ({"padding": -1}, "padding must be an integer >= 0, got -1"),
    ({"padding": 0.5}, "padding must be an integer >= 0, got 0.5"),
])
def test_conv2d_bad_hyperparameters_raise_one_clear_sentence(kwargs, match):
    x, w = np.zeros((1, 2, 6, 6)), np.zeros((2, 2, 3, 3))
    with pytest.raises(ValueError, match=match):
        ops.conv2d(x, w, np.zeros(2), **kwargs)


@pytest.mark.parametrize("stride,padding", [(0, 0), (-1, 0), (1, -1)])
def test_conv_output_size_refuses_bad_stride_and_padding(stride, padding):
    with pytest.raises(ValueError, match="must be"):
        ops.conv_output_size(6, 3, stride, padding)


@pytest.mark.parametrize("size,stride,match", [
    (0, 2, "size must be a positive integer, got 0"),
    (-2, 2, "size must be a positive integer, got -2"),
    (2, 0, "stride must be a positive integer, got 0"),
    (2, -1, "stride must be a positive integer, got -1"),
])
def test_maxpool_bad_size_or_stride_raise_one_clear_sentence(size, stride, match):
    with pytest.raises(ValueError, match=match):
        ops.maxpool2d(np.zeros((1, 1, 4, 4)), size, stride)


def test_conv2d_bad_shapes_raise_one_clear_sentence():
    with pytest.raises(ValueError, match="x must be 4-D"):
        ops.conv2d(np.zeros((2, 6, 6)), np.zeros((2, 2, 3, 3)))
    with pytest.raises(ValueError, match="w must be 4-D"):
        ops.conv2d(np.zeros((1, 2, 6, 6)), np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="empty axis"):
        ops.conv2d(np.zeros((1, 2, 6, 6)), np.zeros((2, 2, 0, 3)))
    with pytest.raises(ValueError, match="b must have shape"):
        ops.conv2d(np.zeros((1, 2, 6, 6)), np.zeros((2, 2, 3, 3)), np.zeros(3))
    with pytest.raises(ValueError, match="x must be 4-D"):
        ops.maxpool2d(np.zeros((6, 6)))


@pytest.mark.parametrize("labels,match", [
    ([0, -1], "label -1 is not a class: labels must be from 0 to 2"),
    ([3, 0], "label 3 is not a class: labels must be from 0 to 2"),
    ([0, 7], "label 7 is not a class"),
    ([0.0, 1.0], "labels must be integers"),
    ([True, False], "labels must be integers"),
    ([0, 1, 2], r"labels must have shape \(2,\)"),
    ([[0], [1]], r"labels must have shape \(2,\)"),
])
def test_softmax_cross_entropy_refuses_bad_labels(labels, match):
    with pytest.raises(ValueError, match=match):
        ops.softmax_cross_entropy(np.zeros((2, 3)), np.array(labels))


def test_softmax_cross_entropy_accepts_every_class_and_unsigned_labels():
    logits = np.arange(6.0).reshape(2, 3)
    loss, _, dlogits = ops.softmax_cross_entropy(logits, np.array([0, 2], dtype=np.uint8))
    ref, _, ref_d = ops.softmax_cross_entropy(logits, [0, 2])
    assert loss == ref
    np.testing.assert_array_equal(dlogits, ref_d)


def _scribble(*arrays):
    """What an optimiser does between the forward and the backward pass: change arrays in place."""
    for a in arrays:
        a *= -3.0
        a += 1.0


def test_backward_does_not_see_in_place_changes_to_the_callers_arrays(rng):
    def fresh(*shapes):
        return [rng.standard_normal(s) for s in shapes]

    # conv2d: the cache held the caller's w itself
    x, w, b = fresh((2, 3, 7, 7), (4, 3, 3, 3), (4,))
    dout = rng.standard_normal((2, 4, 7, 7))
    expected = ops.conv2d_backward(dout, ops.conv2d(x.copy(), w.copy(), b.copy(), padding=1)[1])
    out, cache = ops.conv2d(x, w, b, padding=1)
    _scribble(x, w, b, out)
    for ours, exact in zip(ops.conv2d_backward(dout, cache), expected, strict=True):
        np.testing.assert_array_equal(ours, exact)
    # strided and grouped convolutions too
    x, w, b = fresh((2, 4, 9, 9), (4, 2, 3, 3), (4,))
    dout = rng.standard_normal((2, 4, 4, 4))
    expected = ops.conv2d_backward(dout, ops.conv2d(x.copy(), w.copy(), b.copy(), stride=2,
                                                    groups=2)[1])
    out, cache = ops.conv2d(x, w, b, stride=2, groups=2)
    _scribble(x, w, b, out)
    for ours, exact in zip(ops.conv2d_backward(dout, cache), expected, strict=True):
        np.testing.assert_array_equal(ours, exact)
    # linear: the cache held x and w themselves
    x, w, b = fresh((5, 7), (7, 3), (3,))
    dout = rng.standard_normal((5, 3))
    expected = ops.linear_backward(dout, ops.linear(x.copy(), w.copy(), b.copy())[1])
    out, cache = ops.linear(x, w, b)
    _scribble(x, w, b, out)
    for ours, exact in zip(ops.linear_backward(dout, cache), expected, strict=True):
        np.testing.assert_array_equal(ours, exact)
    # relu and max-pool (their caches were already their own: keep it so)
    x, = fresh((2, 3, 6, 6))
    dout = rng.standard_normal(x.shape)
    expected = ops.relu_backward(dout, ops.relu(x.copy())[1])
    out, mask = ops.relu(x)
    _scribble(x, out)
    np.testing.assert_array_equal(ops.relu_backward(dout, mask), expected)
    for size, stride in ((2, 2), (3, 1)):
        x, = fresh((2, 3, 6, 6))
        out, cache = ops.maxpool2d(x.copy(), size, stride)
        dout = rng.standard_normal(out.shape)
        expected = ops.maxpool2d_backward(dout, cache)
        out, cache = ops.maxpool2d(x, size, stride)
        _scribble(x, out)
        np.testing.assert_array_equal(ops.maxpool2d_backward(dout, cache), expected)


def test_linear_backward_after_an_sgd_step_uses_the_forwards_weights(rng):
    # the trainer's order: forward, then update the parameters in place, then (say, for a
    # second look) backward from the same cache: the gradients are those of the forward's W
    x, w, b = rng.standard_normal((4, 6)), rng.standard_normal((6, 2)), rng.standard_normal(2)
    dout = rng.standard_normal((4, 2))
    _, cache = ops.linear(x, w, b)
    dx0, dw0, _ = ops.linear_backward(dout, cache)
    w -= 0.1 * dw0
    dx1, dw1, _ = ops.linear_backward(dout, cache)
    np.testing.assert_array_equal(dx1, dx0)
    np.testing.assert_array_equal(dw1, dw0)


# ---- NaN and Inf: every gradient entry PyTorch leaves finite is finite here, and equal ----------


def _assert_same_where_finite(ours, theirs, what):
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else theirs
    fin = np.isfinite(theirs)
    np.testing.assert_array_equal(np.isfinite(ours), fin, err_msg=f"{what}: finite masks differ")
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs), err_msg=f"{what}: NaN masks")
    scale = np.max(np.abs(theirs[fin]), initial=0.0)
    np.testing.assert_allclose(ours[fin], theirs[fin], rtol=1e-12, atol=1e-12 * scale,
                               err_msg=what)
    np.testing.assert_array_equal(ours[~fin], theirs[~fin], err_msg=f"{what}: the non-finite")


NAN_CONV_CASES = [
    (2, 2, 7, 6, 3, 3, 1, 1, 1),  # SimpleCNN's shape of convolution
    (1, 2, 6, 6, 2, 3, 1, 0, 1),
    (1, 1, 8, 9, 2, 5, 1, 2, 1),
    (1, 4, 6, 6, 4, 3, 1, 1, 2),
    (1, 2, 9, 9, 3, 3, 2, 1, 1),
    (1, 3, 6, 6, 3, 3, 1, 1, 3),  # depthwise
]
SPOTS = {"top-left": (0, 0), "top-right": (0, -1), "bottom-left": (-1, 0), "bottom-right": (-1, -1),
         "top edge": (0, 2), "left edge": (3, 0), "right edge": (2, -1), "bottom edge": (-1, 3),
         "interior": (3, 2)}


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("where", ["x", "dout"])
@pytest.mark.parametrize("case", NAN_CONV_CASES,
                         ids=lambda c: "N{}C{}H{}W{}F{}k{}s{}p{}g{}".format(*c))
def test_conv2d_non_finite_inputs_spread_only_where_torch_spreads_them(case, where, bad, rng):
    N, C, H, W, F_, k, stride, padding, groups = case
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((F_, C // groups, k, k))
    w[0, 0, 0, 0] = 0.0  # 0 * Inf is NaN: in both or in neither
    b = rng.standard_normal(F_)
    out_shape = ops.conv2d(x, w, b, stride=stride, padding=padding, groups=groups)[0].shape
    for name, (i, j) in SPOTS.items():
        xs, dout = x.copy(), rng.standard_normal(out_shape)
        if where == "x":
            xs[-1, 0, i, j] = bad
        else:
            dout[0, -1, i % out_shape[2], j % out_shape[3]] = bad
        out, cache = ops.conv2d(xs, w, b, stride=stride, padding=padding, groups=groups)
        grads = ops.conv2d_backward(dout, cache)
        xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (xs, w, b))
        ot = F.conv2d(xt, wt, bt, stride=stride, padding=padding, groups=groups)
        ot.backward(torch.tensor(dout))
        _assert_same_where_finite(out, ot, f"out, {bad} in {where} at {name}")
        for g, t, label in zip(grads, (xt, wt, bt), ("dx", "dw", "db"), strict=True):
            _assert_same_where_finite(g, t.grad, f"{label}, {bad} in {where} at {name}")


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_conv2d_non_finite_weights_spread_only_where_torch_spreads_them(bad, rng):
    x = rng.standard_normal((2, 2, 6, 7))
    for f, c, i, j in ((0, 0, 0, 0), (1, 1, 2, 2), (2, 0, 1, 2), (0, 1, 2, 0)):
        w, b = rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3)
        w[f, c, i, j] = bad
        out, cache = ops.conv2d(x, w, b, padding=1)
        dout = rng.standard_normal(out.shape)
        grads = ops.conv2d_backward(dout, cache)
        xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
        ot = F.conv2d(xt, wt, bt, padding=1)
        ot.backward(torch.tensor(dout))
        _assert_same_where_finite(out, ot, f"out, w[{f},{c},{i},{j}] = {bad}")
        for g, t, label in zip(grads, (xt, wt, bt), ("dx", "dw", "db"), strict=True):
            _assert_same_where_finite(g, t.grad, f"{label}, w[{f},{c},{i},{j}] = {bad}")


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("size,stride", [(2, 2), (3, 1), (3, 2)])
def test_maxpool_and_relu_non_finite_inputs_route_like_torch(size, stride, rng):
    x = rng.standard_normal((2, 2, 7, 7))
    x[0, 0, 0, 0] = np.nan  # a corner
    x[0, 1, 2:4, 2:4] = np.nan  # four NaNs in one window: PyTorch routes to the last of them
    x[1, 0, 3, 3] = np.inf
    x[1, 1, -1, -1] = -np.inf
    x[1, 1, 0, :] = -np.inf  # a row of -Inf
    out, cache = ops.maxpool2d(x, size, stride)
    dout = rng.standard_normal(out.shape)
    dout[0, 0, -1, -1] = np.nan
    xt = torch.tensor(x, requires_grad=True)
    ot = F.max_pool2d(xt, size, stride)
    ot.backward(torch.tensor(dout))
    _assert_same_where_finite(out, ot, "max-pool out")
    _assert_same_where_finite(ops.maxpool2d_backward(dout, cache), xt.grad, "max-pool dx")
    # ReLU: a NaN input passes its gradient on (NaN <= 0 is false), a NaN gradient at a
    # negative input is stopped (PyTorch's threshold_backward selects, it does not multiply)
    r, mask = ops.relu(x)
    dr = rng.standard_normal(x.shape)
    dr[0, 0, 1, :] = np.nan
    dr[1, 1, 0, 0] = np.inf
    xt = torch.tensor(x, requires_grad=True)
    rt = torch.relu(xt)
    rt.backward(torch.tensor(dr))
    _assert_same_where_finite(r, rt, "relu out")
    _assert_same_where_finite(ops.relu_backward(dr, mask), xt.grad, "relu dx")


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_linear_and_softmax_cross_entropy_non_finite_like_torch(rng):
    x, w, b = rng.standard_normal((4, 6)), rng.standard_normal((6, 3)), rng.standard_normal(3)
    x[1, 2], x[3, 0] = np.nan, np.inf
    out, cache = ops.linear(x, w, b)
    dout = rng.standard_normal(out.shape)
    dout[2, 1] = np.nan
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ot = xt @ wt + bt
    ot.backward(torch.tensor(dout))
    _assert_same_where_finite(out, ot, "linear out")
    for g, t, label in zip(ops.linear_backward(dout, cache), (xt, wt, bt), ("dx", "dw", "db"),
                           strict=True):
        _assert_same_where_finite(g, t.grad, f"linear {label}")
    logits = rng.standard_normal((4, 5))
    logits[1, 3], logits[2, 0] = np.nan, -np.inf
    labels = np.array([0, 1, 2, 3])
    _, probs, dlogits = ops.softmax_cross_entropy(logits, labels)
    lt = torch.tensor(logits, requires_grad=True)
    F.cross_entropy(lt, torch.tensor(labels)).backward()
    _assert_same_where_finite(probs, torch.softmax(lt, 1), "probs")
    _assert_same_where_finite(dlogits, lt.grad, "dlogits")
