"""cnntui/explain.py: every explained cell adds up to its traced value, its parts agree with the
lesson's loops and PyTorch (float64), the receptive fields are what the geometry says, and a
planted error in the explanation makes its total differ from the value."""

from __future__ import annotations

import dataclasses
import json
from functools import cache

import numpy as np
import pytest

from cnntui import cli, explain, model, reference
from cnntui.trace import Trace, trace_digit

ARCHS = list(model.ARCHITECTURES)
WEIGHTS = [model.SEED, model.PRETRAINED]
TOL = 1e-12  # float64: sums of a few hundred products in another order agree to ~1e-15


@cache
def traced(arch: str, weights: str, index: int = 0) -> Trace:
    a = model.ARCHITECTURES[arch]
    params, _ = model.weights_from(weights, a)
    return trace_digit(params, index, arch=a, weights=weights)


def fresh(arch: str, weights: str = model.PRETRAINED) -> Trace:
    """A trace of its own, for a test that plants an error in it."""
    a = model.ARCHITECTURES[arch]
    return trace_digit(model.weights_from(weights, a)[0], 0, arch=a)


@cache
def torch_ref(arch: str, weights: str) -> dict[str, np.ndarray]:
    return reference.torch_reference(traced(arch, weights)).tensors


@cache
def lesson_ref(arch: str, weights: str) -> dict[str, np.ndarray]:
    return reference.lesson_reference(traced(arch, weights)).tensors


def assert_total(e: explain.Explained) -> None:
    """The explanation's own sum of its parts is the traced value."""
    assert e.total == pytest.approx(e.value, rel=TOL, abs=1e-300), (e.step, e.cell, e.total,
                                                                     e.value)


def cells(shape: tuple[int, ...], n: int = 4, seed: int = 0) -> list[tuple[int, ...]]:
    """The first and last cell, the middle one, a corner on each edge (padding for a conv with
    padding; the last row and column of a strided conv) and ``n`` random ones."""
    rng = np.random.default_rng(seed)
    out = {tuple(0 for _ in shape), tuple(s - 1 for s in shape), tuple(s // 2 for s in shape)}
    if len(shape) == 3:
        C, H, W = shape
        out |= {(C - 1, 0, W - 1), (0, H - 1, 0), (C // 2, H - 1, W // 2), (0, H // 2, W - 1)}
    out |= {tuple(int(rng.integers(s)) for s in shape) for _ in range(n)}
    return sorted(out)


def close(ours: float, theirs: float, scale: np.ndarray) -> bool:
    """Within TOL of the reference tensor's scale, as cnntui.reference.compare measures."""
    return abs(ours - theirs) <= TOL * float(np.max(np.abs(scale)))


# ---- total == value, and against the lesson's loops and PyTorch --------------------------------


@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("arch", ARCHS)
def test_every_steps_total_is_its_traced_value(arch, weights):
    t = traced(arch, weights)
    for step in t.steps:
        for cell in cells(step.value.shape):
            e = explain.explain_cell(t, step.name, cell)
            assert e.value == float(step.value[cell])
            assert_total(e)
            assert e.lines and all(isinstance(line, str) and "\n" not in line
                                   for line in e.lines)
            json.dumps(e.to_json(), allow_nan=False)


@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("arch", ARCHS)
def test_every_total_agrees_with_pytorch_and_the_lesson_loops(arch, weights):
    """The references run in float64 from the trace's weights and input, following its ReLU and
    pooling choices, backward from its dlogits (cnntui/reference.py)."""
    t = traced(arch, weights)
    for who, ref in (("torch", torch_ref(arch, weights)), ("lesson", lesson_ref(arch, weights))):
        for step in t.steps:
            theirs = np.asarray(ref[step.name]).reshape(step.value.shape)
            for cell in cells(step.value.shape, n=2):
                e = explain.explain_cell(t, step.name, cell)
                assert close(e.total, theirs[cell], theirs), (who, step.name, cell)


def test_strided_last_row_and_column_read_the_last_padded_cells():
    t = traced("strided", model.PRETRAINED)
    for name, last in (("z1", 13), ("z2", 6)):
        for cell in ((0, last, last), (3, last, 0), (2, 0, last)):
            e = explain.explain_cell(t, name, cell)
            assert_total(e)
            (region,) = e.regions
            # stride 2, padding 1: output row i reads input rows 2i-1 .. 2i+1
            assert region.rows == (2 * cell[1] - 1, 2 * cell[1] + 2)
            assert region.cols == (2 * cell[2] - 1, 2 * cell[2] + 2)
    e = explain.explain_cell(t, "z1", (0, 13, 13))  # rows 25..27 of 28: no padding reached
    assert not np.any(e.data["padding"])
    e = explain.explain_cell(t, "z1", (0, 0, 13))  # the top row is padding
    assert np.asarray(e.data["padding"])[0, 0].tolist() == [True, True, True]


@pytest.mark.parametrize("arch", ARCHS)
def test_conv_forward_parts(arch):
    """window, kernel, products, bias: the padded patch the lesson's loop reads, the filter, and
    their sum equal to the lesson's conv2d_multi and PyTorch's F.conv2d at that cell."""
    import torch
    import torch.nn.functional as F

    t = traced(arch, model.PRETRAINED)
    for step in t.steps:
        if step.kind != "conv" or step.phase != "forward":
            continue
        layer = step.layer_object
        (inp, x), = step.inputs.items()
        W, b = step.params[layer.weight], step.params[layer.bias]
        k, s, p = layer.kernel, layer.stride, layer.padding
        lesson_out = layer.loops(step.params, x)[0]
        torch_out = F.conv2d(torch.tensor(x[None]), torch.tensor(W), torch.tensor(b), stride=s,
                             padding=p, groups=layer.groups).numpy()[0]
        xp = np.pad(x, ((0, 0), (p, p), (p, p)))
        for cell in cells(step.value.shape):
            f, i, j = cell
            e = explain.explain_cell(t, step.name, cell)
            Cg = x.shape[0] // layer.groups
            g = f // (layer.filters // layer.groups)
            patch = xp[g * Cg:(g + 1) * Cg, i * s:i * s + k, j * s:j * s + k]  # the lesson's
            np.testing.assert_array_equal(e.data["window"], patch)
            np.testing.assert_array_equal(e.data["kernel"], W[f])
            np.testing.assert_array_equal(e.data["products"], patch * W[f])
            assert e.data["bias"] == b[f]
            assert np.sum(e.data["channel_sums"]) + e.data["bias"] == pytest.approx(e.total,
                                                                                    rel=TOL)
            assert close(e.total, lesson_out[cell], lesson_out)
            assert close(e.total, torch_out[cell], torch_out)
            assert e.regions[0].tensor == inp
            assert len(e.grids) == 3 * Cg


def test_padding_cells_are_marked_zeros():
    t = traced("simple", model.PRETRAINED)
    e = explain.explain_cell(t, "z2", (5, 0, 13))  # top-right corner of p1 (14x14)
    window, pad = np.asarray(e.data["window"]), np.asarray(e.data["padding"])
    assert pad.shape == (4, 3, 3)
    assert pad[:, 0, :].all() and pad[:, :, 2].all() and not pad[:, 1:, :2].any()
    assert (window[pad] == 0).all()
    assert e.regions[0].rows == (-1, 2) and e.regions[0].cols == (12, 15)
    assert e.grids[0].label == "p1[0] window (padded)" and e.grids[1].label == "W2[5,0]"
    np.testing.assert_array_equal(e.grids[0].marks, pad[0])


@pytest.mark.parametrize("arch", ARCHS)
def test_conv_weight_and_input_gradients_against_torch(arch):
    """dW[f,c,u,v] as the sum of its products map, db as the sum of dout[f], dx[c,y,x] as its
    terms dout[f,i,j] * W[f,c',u,v]: each equal to PyTorch's autograd."""
    t = traced(arch, model.PRETRAINED)
    ref = torch_ref(arch, model.PRETRAINED)
    for step in t.steps:
        if step.kind != "conv" or step.phase != "backward":
            continue
        theirs = ref[step.name]
        for cell in cells(step.value.shape, n=3):
            e = explain.explain_cell(t, step.name, cell)
            if "products" in e.data:  # dW
                assert close(float(np.sum(e.data["products"])), theirs[cell], theirs)
                assert np.asarray(e.data["products"]).shape == t["d" + step.layer_object.out
                                                                 ].value.shape[1:]
            elif "terms" in e.data:  # the input's gradient
                terms = e.data["terms"]
                assert close(sum(term["dout"] * term["weight"] for term in terms), theirs[cell],
                             theirs)
                layer = step.layer_object
                W = step.params[layer.weight]
                for term in terms:  # every term is a real tap of the kernel on this cell
                    s, p = layer.stride, layer.padding
                    assert term["i"] * s + term["u"] - p == cell[1]
                    assert term["j"] * s + term["v"] - p == cell[2]
                    assert term["weight"] in W[term["f"]].ravel()
            else:  # db
                assert close(float(np.sum(e.data["dout"])), theirs[cell], theirs)


def test_an_input_gradient_cell_counts_every_tap_once():
    """An interior cell of dp1 (simple: 8 filters, 3x3, stride 1) gets 8 * 9 terms; a corner
    8 * 4; a cell of strided dx (stride 2) only the taps of the windows that reach it."""
    t = traced("simple", model.PRETRAINED)
    assert len(explain.explain_cell(t, "dp1", (1, 6, 6)).data["terms"]) == 72
    assert len(explain.explain_cell(t, "dp1", (1, 0, 0)).data["terms"]) == 32
    s = traced("strided", model.PRETRAINED)
    # dx (1, 28, 28) from dz1 (4, 14, 14): row y is read by windows i with 2i-1 <= y <= 2i+1;
    # y = 2: only i = 1 (tap u = 1); y = 1: i = 0 (u = 2) and i = 1 (u = 0)
    assert len(explain.explain_cell(s, "dx", (0, 2, 2)).data["terms"]) == 4 * 1
    assert len(explain.explain_cell(s, "dx", (0, 1, 1)).data["terms"]) == 4 * 4
    assert len(explain.explain_cell(s, "dx", (0, 27, 27)).data["terms"]) == 4 * 1
    sep = traced("separable", model.PRETRAINED)  # depthwise: one filter per channel
    terms = explain.explain_cell(sep, "dp1", (2, 5, 5)).data["terms"]
    assert len(terms) == 9 and {term["f"] for term in terms} == {2}


@pytest.mark.parametrize("arch", ["simple", "separable"])
def test_pool_forward_and_backward(arch):
    t = traced(arch, model.PRETRAINED)
    for name in ("p1", "p2"):
        step = t[name]
        (inp, a), = step.inputs.items()
        for cell in cells(step.value.shape):
            c, i, j = cell
            e = explain.explain_cell(t, name, cell)
            window = a[c, 2 * i:2 * i + 2, 2 * j:2 * j + 2]
            np.testing.assert_array_equal(e.data["window"], window)
            r, q = e.data["argmax"]
            assert 2 * i <= r < 2 * i + 2 and 2 * j <= q < 2 * j + 2
            assert a[c, r, q] == window.max() == e.total
            assert e.grids[0].marks.sum() == 1 and e.grids[0].marks[r - 2 * i, q - 2 * j]
    # backward: the argmax cell of a window receives its gradient, the other three get 0
    dname = "da2"  # the gradient of pool2's input
    c, i, j = 3, 2, 4
    r, q = explain.explain_cell(t, "p2", (c, i, j)).data["argmax"]
    got = explain.explain_cell(t, dname, (c, r, q))
    assert got.data["received"] == [{"i": i, "j": j, "dout": float(t["dp2"].value[c, i, j])}]
    assert any("argmax" in line for line in got.lines)
    other = (c, 2 * i + (1 - (r - 2 * i)), q)  # the other row of the same window
    lost = explain.explain_cell(t, dname, other)
    assert lost.total == 0 and lost.data["received"] == []
    assert any(f"[{c},{r},{q}]" in line and "not here" in line for line in lost.lines)


def test_relu_softmax_linear_flatten_parts():
    t = traced("simple", model.PRETRAINED)
    z, mask = t["z1"].value, t["a1"].cache["mask"]
    on = tuple(int(v) for v in np.argwhere(mask)[0])
    off = tuple(int(v) for v in np.argwhere(~mask)[0])
    e = explain.explain_cell(t, "a1", on)
    assert e.data["input"] == z[on] and e.data["mask"] is True and e.total == z[on] > 0
    assert explain.explain_cell(t, "a1", off).total == 0
    assert explain.explain_cell(t, "dz1", off).total == 0
    assert explain.explain_cell(t, "dz1", on).total == t["da1"].value[on]
    # softmax: exp(logit - max) / sum; the label's dlogits entry is -(sum of the others)
    e = explain.explain_cell(t, "probs", (3,))
    logits = t["logits"].value
    assert e.data["max"] == logits.max() and e.data["sum"] == pytest.approx(
        np.exp(logits - logits.max()).sum(), rel=TOL)
    assert e.data["loss"] == pytest.approx(t.loss, rel=TOL)
    d = explain.explain_cell(t, "dlogits", (t.label,))
    assert d.total == t["dlogits"].value[t.label]
    assert d.total == pytest.approx(t.probs[t.label] - 1, abs=1e-15)
    assert explain.explain_cell(t, "dlogits", (3,)).total == t.probs[3]
    # linear: the products shown, one grid per channel of p2
    e = explain.explain_cell(t, "logits", (7,))
    np.testing.assert_array_equal(e.data["products"], t["flat"].value * t.steps[
        t.position("logits")].params["W3"][:, 7])
    assert [g.data.shape for g in e.grids] == [(7, 7)] * 8
    assert len(explain.explain_cell(t, "dflat", (5,)).data["products"]) == 10
    # flatten: index 60 of flat is p2[1, 1, 4] (49 per channel, 7 per row)
    assert explain.explain_cell(t, "flat", (60,)).data["source"] == [1, 1, 4]
    assert explain.explain_cell(t, "dp2", (1, 1, 4)).data["source"] == [60]


# ---- receptive fields ---------------------------------------------------------------------------

# derived by hand from kernel 3, padding 1 (a conv widens by 1 each side, times the stride
# below it) and 2x2/2 pools (double, then +1): simple z1 3x3, p1 4x4, z2 8x8, p2 10x10;
# strided z1 rows 2i-1..2i+1, z2 rows 4i-3..4i+3 (7x7)
KNOWN_RF = [
    ("simple", "x", (0, 5, 6), (5, 5, 6, 6)),
    ("simple", "z1", (0, 0, 0), (0, 1, 0, 1)),
    ("simple", "z1", (2, 5, 7), (4, 6, 6, 8)),
    ("simple", "a1", (2, 27, 27), (26, 27, 26, 27)),
    ("simple", "p1", (0, 3, 4), (5, 8, 7, 10)),
    ("simple", "z2", (0, 5, 5), (7, 14, 7, 14)),
    ("simple", "p2", (0, 3, 3), (9, 18, 9, 18)),
    ("simple", "p2", (7, 6, 6), (21, 27, 21, 27)),
    ("simple", "p2", (0, 0, 0), (0, 6, 0, 6)),
    ("simple", "flat", (1 * 49 + 3 * 7 + 3,), (9, 18, 9, 18)),
    ("simple", "logits", (4,), (0, 27, 0, 27)),
    ("simple", "probs", (4,), (0, 27, 0, 27)),
    ("strided", "z1", (0, 13, 13), (25, 27, 25, 27)),
    ("strided", "z2", (0, 6, 6), (21, 27, 21, 27)),
    ("strided", "z2", (0, 3, 2), (9, 15, 5, 11)),
    ("separable", "z2d", (0, 5, 5), (7, 14, 7, 14)),
    ("separable", "z2", (6, 5, 5), (7, 14, 7, 14)),
    ("separable", "p2", (0, 3, 3), (9, 18, 9, 18)),
]


@pytest.mark.parametrize("arch,name,cell,rf", KNOWN_RF)
def test_receptive_field_known_values(arch, name, cell, rf):
    a = model.ARCHITECTURES[arch]
    assert explain.receptive_field(a, name, cell) == rf
    e = explain.explain_cell(traced(arch, model.PRETRAINED), name, cell)
    assert e.receptive_field == rf
    assert e.data["receptive_field"] == {"rows": [rf[0], rf[1]], "cols": [rf[2], rf[3]]}


def outside(erf: np.ndarray, rf: tuple[int, int, int, int]) -> np.ndarray:
    r0, r1, c0, c1 = rf
    mask = np.ones(erf.shape, dtype=bool)
    mask[r0:r1 + 1, c0:c1 + 1] = False
    return erf[mask]


@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("arch", ARCHS)
def test_effective_rf_lies_inside_the_receptive_field(arch, weights):
    t = traced(arch, weights)
    for step in t.steps:
        if step.phase != "forward":
            continue
        live = tuple(int(v) for v in np.unravel_index(np.argmax(np.abs(step.value)),
                                                      step.value.shape))
        for cell in [*cells(step.value.shape, n=2), live]:
            erf = explain.effective_rf(t, step.name, cell)
            rf = explain.receptive_field(t.arch, step.name, cell)
            assert erf.shape == (28, 28)
            assert not outside(erf, rf).any(), (step.name, cell)
        assert explain.effective_rf(t, step.name, live).sum() > 0, step.name
    # a first conv's cell: |W1[f]| exactly on its window
    erf = explain.effective_rf(t, "z1", (1, 10, 12))
    s, k = t.arch.layer("conv1").stride, 3
    r0, c0 = 10 * s - 1, 12 * s - 1
    np.testing.assert_array_equal(erf[r0:r0 + k, c0:c0 + k], np.abs(t["z1"].params["W1"][1, 0]))
    assert not outside(erf, (r0, r0 + k - 1, c0, c0 + k - 1)).any()


def torch_erf(t: Trace, name: str, cell: tuple[int, ...], follow: bool) -> np.ndarray:
    """|d cell / d x| by torch.autograd.grad in float64; ``follow``: ReLUs and pools take the
    trace's choices, as cnntui.reference does."""
    import torch

    params, x, ours, _ = reference.reference_inputs(t)
    leaf = {k: torch.tensor(v) for k, v in params.items()}
    xt = torch.tensor(x[None], requires_grad=True)
    keep = {"x": xt}
    logits = reference.torch_logits(t.arch, leaf, xt, keep=keep,
                                     choices=ours if follow else None)
    if name == t.arch.layers[-1].out:
        # p_k = 1 / (1 + sum_{j != k} exp(l_j - l_k)). Autograd of torch.softmax forms
        # p_k (1 - p_k), as would 1 / sum_j exp(l_j - l_k) (its l_k gets 1 - sum_j ...): for a
        # sure network (p_k = 1 - 5e-8) that keeps ~8 digits. This form cancels nothing.
        k, row = cell[0], logits[0]
        others = torch.cat([row[:k], row[k + 1:]])
        out = 1 / (1 + torch.exp(others - row[k]).sum())
    else:
        out = keep[name][(0, *cell)]
    (g,) = torch.autograd.grad(out, xt)
    return np.abs(g.numpy()[0]).sum(axis=0)


@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("arch", ARCHS)
def test_effective_rf_is_torchs_gradient(arch, weights):
    t = traced(arch, weights)
    for name in t.names[:t.first_backward]:
        if name == "x":
            continue
        shape = t[name].value.shape
        for cell in cells(shape, n=1):
            ours = explain.effective_rf(t, name, cell)
            theirs = torch_erf(t, name, cell, follow=True)
            assert np.max(np.abs(ours - theirs)) <= TOL * max(np.max(theirs), 1e-300), \
                (name, cell)
            if weights == model.PRETRAINED:  # no ties here: PyTorch's own choices are ours
                plain = torch_erf(t, name, cell, follow=False)
                assert np.max(np.abs(ours - plain)) <= TOL * max(np.max(plain), 1e-300)


# ---- im2col -------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_im2col_is_the_convolution(arch):
    t = traced(arch, model.PRETRAINED)
    for step in t.steps:
        if step.kind != "conv" or step.phase != "forward":
            continue
        layer = step.layer_object
        F_, H_out, W_out = step.value.shape
        Fg = F_ // layer.groups
        for g in range(layer.groups):
            v = explain.im2col_view(t, step.name, (g * Fg, 0, 0))
            assert v.group == g and v.filters == tuple(range(g * Fg, (g + 1) * Fg))
            out = (v.cols @ v.weights + v.bias).T.reshape(Fg, H_out, W_out)
            z = step.value[g * Fg:(g + 1) * Fg]
            assert np.max(np.abs(out - z)) <= TOL * np.max(np.abs(z))
            dW = t["d" + layer.weight].value[g * Fg:(g + 1) * Fg]
            dw = (v.cols.T @ v.dout).T.reshape(dW.shape)
            assert np.max(np.abs(dw - dW)) <= TOL * np.max(np.abs(dW))
            assert len(v.col_labels) == v.cols.shape[1]
        cell = (F_ - 1, H_out - 1, W_out // 2)
        v = explain.im2col_view(t, step.name, cell)
        assert v.row == cell[1] * W_out + cell[2] and v.column == cell[0] % Fg
        assert v.cols[v.row] @ v.weights[:, v.column] + v.bias[v.column] == pytest.approx(
            step.value[cell], rel=TOL)
        # the row is the explained window, padding zeros included
        window = explain.explain_cell(t, step.name, cell).data["window"]
        np.testing.assert_array_equal(v.cols[v.row], np.ravel(window))


def test_im2col_shapes_and_dw_cells():
    shapes = {("simple", "z1"): "(784, 9) @ (9, 4) = (784, 4)",
              ("simple", "z2"): "(196, 36) @ (36, 8) = (196, 8)",
              ("strided", "z1"): "(196, 9) @ (9, 4) = (196, 4)",
              ("strided", "z2"): "(49, 36) @ (36, 8) = (49, 8)",
              ("separable", "z2d"): "(196, 9) @ (9, 1) = (196, 1)",
              ("separable", "z2"): "(196, 4) @ (4, 8) = (196, 8)"}
    for (arch, name), shape in shapes.items():
        v = explain.im2col_view(traced(arch, model.SEED), name)
        assert v.shape == shape and v.group == 0 and v.row is None
    t = traced("simple", model.SEED)
    assert explain.im2col_view(t, "dW2").dw_shape == "(36, 196) @ (196, 8) = (36, 8)"
    v = explain.im2col_view(t, "dW2", (5, 2, 1, 0))
    assert v.column == 2 * 9 + 1 * 3 + 0 and v.col_labels[v.column] == "p1[2] (1,0)"
    assert v.cols[:, v.column] @ v.dout[:, 5] == pytest.approx(t["dW2"].value[5, 2, 1, 0],
                                                                rel=TOL)
    assert explain.im2col_view(traced("separable", model.SEED), "z2d", (3, 0, 0)).channels == (3,)
    with pytest.raises(ValueError, match="no im2col"):
        explain.im2col_view(t, "p1")
    with pytest.raises(ValueError, match="no im2col"):
        explain.im2col_view(t, "db2")


# ---- one SGD step ------------------------------------------------------------------------------


@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("arch", ARCHS)
def test_sgd_update_is_torchs_sgd_step(arch, weights):
    import torch
    import torch.nn.functional as F

    t = traced(arch, weights)
    lr = 0.05
    u = explain.sgd_update(t, lr)
    params = {k: v for s in t.steps for k, v in s.params.items()}
    assert set(u.params_after) == set(params) == set(t.arch.param_shapes)
    for k, w in params.items():
        np.testing.assert_array_equal(u.params_before[k], w)
        np.testing.assert_array_equal(u.params_after[k], w - lr * t["d" + k].value)
        assert u.ratios[k] == pytest.approx(
            np.linalg.norm(lr * t["d" + k].value) / np.linalg.norm(w), rel=TOL) \
            if np.linalg.norm(w) else u.ratios[k] == float("inf")
    # torch.optim.SGD on the same parameters, from PyTorch's own gradients of the lesson's loss
    leaf = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    xt = torch.tensor(t["x"].value[None])
    logits = reference.torch_logits(t.arch, leaf, xt)
    F.cross_entropy(logits, torch.tensor([t.label])).backward()
    torch.optim.SGD(list(leaf.values()), lr=lr).step()
    for k, v in leaf.items():
        after = v.detach().numpy()
        assert np.max(np.abs(u.params_after[k] - after)) <= TOL * max(np.max(np.abs(after)),
                                                                      1e-300), k
    # the loss after, recomputed by PyTorch with the lesson's -log(p + 1e-15)
    with torch.no_grad():
        probs = torch.softmax(reference.torch_logits(t.arch, leaf, xt), dim=1).numpy()[0]
    assert u.loss_after == pytest.approx(-np.log(probs[t.label] + 1e-15), rel=1e-9)
    np.testing.assert_allclose(u.probs_after, probs, rtol=0, atol=1e-12)
    assert u.loss_before == t.loss and u.label == t.label
    assert u.gained == bool(probs[t.label] > t.probs[t.label])
    assert u.gained == (u.loss_after < u.loss_before)
    after = u.trace_after
    assert after.arch is t.arch and after.label == t.label and after.index == t.index
    np.testing.assert_array_equal(after["x"].value, t["x"].value)
    np.testing.assert_array_equal(after["z1"].params["W1"], u.params_after["W1"])
    json.dumps(u.to_json(), allow_nan=False)


def test_a_small_step_on_a_seed_network_raises_the_labels_probability():
    """The gradient points downhill: a small enough step lowers this digit's loss."""
    u = explain.sgd_update(traced("simple", model.SEED), lr=1e-3)
    assert u.gained and u.loss_after < u.loss_before
    assert u.ratios["b1"] == float("inf")  # zero biases at the seed: any step is infinite
    assert json.loads(json.dumps(u.to_json(), allow_nan=False))["ratios"]["b1"] is None


# ---- planted errors: the checks can fail ---------------------------------------------------------


def test_a_window_off_by_the_padding_makes_the_total_differ(monkeypatch):
    t = fresh("simple")
    cell = (2, 10, 11)
    assert_total(explain.explain_cell(t, "z2", cell))
    real = explain._padded_window

    def shifted(x, rows, cols, padding):  # unpadded coordinates read as padded ones
        return real(x, slice(rows.start + padding, rows.stop + padding),
                    slice(cols.start + padding, cols.stop + padding), padding)

    monkeypatch.setattr(explain, "_padded_window", shifted)
    with pytest.raises(AssertionError):
        assert_total(explain.explain_cell(t, "z2", cell))


def test_a_wrong_stride_or_padding_in_the_layer_makes_the_total_differ():
    t = fresh("strided")
    for name, cell, change in (("z2", (3, 3, 3), {"stride": 1}),
                               ("z1", (1, 5, 6), {"padding": 0}),
                               ("da1", (1, 5, 6), {"stride": 1}),
                               ("da1", (1, 5, 6), {"padding": 0})):
        step = t[name]
        assert_total(explain.explain_cell(t, name, cell))
        right = step.layer_object
        step.layer_object = dataclasses.replace(right, **change)
        try:
            with pytest.raises(AssertionError):
                assert_total(explain.explain_cell(t, name, cell))
        finally:
            step.layer_object = right


def test_one_perturbed_weight_or_argmax_makes_the_total_differ():
    t = fresh("simple")
    step = t["z2"]
    W2 = step.params["W2"].copy()
    W2[4, 1, 2, 0] += 1e-9
    step.params = dict(step.params, W2=W2)
    with pytest.raises(AssertionError):  # a 1e-9 error in one product is seen
        assert_total(explain.explain_cell(t, "z2", (4, 7, 7)))
    assert_total(explain.explain_cell(t, "z2", (3, 7, 7)))  # another filter is untouched
    # a pool told the wrong argmax
    p = t["p1"]
    c, i, j = 0, 4, 4
    window = p.inputs["a1"][c, 8:10, 8:10]
    assert np.ptp(window) > 0
    argmax = p.cache["argmax"].copy()
    r, q = divmod(int(argmax[c, i, j]), 28)
    wrong = [(rr, qq) for rr in (8, 9) for qq in (8, 9)
             if p.inputs["a1"][c, rr, qq] != p.inputs["a1"][c, r, q]][0]
    argmax[c, i, j] = wrong[0] * 28 + wrong[1]
    p.cache = {"argmax": argmax}
    with pytest.raises(AssertionError):
        assert_total(explain.explain_cell(t, "p1", (c, i, j)))


# ---- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name,cell,words", [
    ("z9", (0, 0, 0), "no step named 'z9'"),
    ("z1", (0, 0), "needs 3 indices, not 2"),
    ("z1", (0, 0, 0, 0), "needs 3 indices, not 4"),
    ("z1", (4, 0, 0), "outside z1"),
    ("z1", (0, 28, 0), "outside z1"),
    ("z1", (0, -1, 0), "outside z1"),
    ("logits", (10,), "outside logits"),
    ("dW2", (0, 0, 0), "needs 4 indices"),
    ("z1", ("a", 0, 0), "whole numbers"),
])
def test_bad_step_or_cell_is_one_sentence(name, cell, words):
    t = traced("simple", model.SEED)
    with pytest.raises(ValueError) as info:
        explain.explain_cell(t, name, cell)
    message = str(info.value)
    assert words in message and "\n" not in message and message.count(". ") == 0


def test_receptive_field_and_effective_rf_refuse_bad_input():
    t = traced("simple", model.SEED)
    with pytest.raises(ValueError, match="not a forward tensor"):
        explain.receptive_field(t.arch, "dz1", (0, 0, 0))
    with pytest.raises(ValueError, match="needs 3 indices"):
        explain.receptive_field(t.arch, "z1", (0, 0))
    with pytest.raises(ValueError, match="is a gradient"):
        explain.effective_rf(t, "dz1", (0, 0, 0))
    with pytest.raises(ValueError, match="outside"):
        explain.effective_rf(t, "z1", (0, 0, 99))


# ---- the command -------------------------------------------------------------------------------


def test_cli_prints_the_lines_and_the_receptive_field(capsys):
    # the default weights: the pretrained ones, as for trace, verify and the debugger
    assert cli.main(["explain", "--step", "z1", "--cell", "0,0,0"]) == 0
    out = capsys.readouterr().out
    t = traced("simple", model.PRETRAINED)
    e = explain.explain_cell(t, "z1", (0, 0, 0))
    for line in e.lines:
        assert line in out
    assert "x[0] window (padded):" in out and out.rstrip().endswith(
        "receptive field: 2x2 pixels of x")


def test_cli_json_is_strict_and_complete(capsys):
    assert cli.main(["explain", "--arch", "strided", "--weights", "pretrained", "--index", "3",
                     "--step", "z2", "--cell", "7,6,6", "--json"]) == 0

    def no_constants(name):
        raise AssertionError(f"{name} in strict JSON")

    doc = json.loads(capsys.readouterr().out, parse_constant=no_constants)
    t = traced("strided", model.PRETRAINED, 3)
    assert doc["step"] == "z2" and doc["cell"] == [7, 6, 6]
    assert doc["value"] == float(t["z2"].value[7, 6, 6])
    assert {"window", "kernel", "products", "bias", "receptive_field",
            "effective_rf"} <= set(doc)
    assert np.asarray(doc["window"]).shape == (4, 3, 3)
    assert np.asarray(doc["effective_rf"]).shape == (28, 28)
    assert doc["receptive_field"] == {"rows": [21, 27], "cols": [21, 27]}


@pytest.mark.parametrize("argv,words", [
    (["--step", "p1", "--cell", "0,0,0", "--arch", "strided"], "no step named 'p1'"),
    (["--step", "z1", "--cell", "0,0"], "needs 3 indices"),
    (["--step", "z1", "--cell", "0,a,1"], "comma-separated list of whole numbers"),
    (["--step", "probs", "--cell", "10"], "outside probs"),
])
def test_cli_bad_step_or_cell_is_one_sentence_and_exit_1(capsys, argv, words):
    assert cli.main(["explain", *argv]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1 and lines[0].startswith("cnntui: ")
    assert words in lines[0] and "Traceback" not in captured.err


def test_cli_as_a_process():
    from test_cli_robust import cnntui, one_sentence

    r = cnntui("explain", "--step", "dp1", "--cell", "1,2,3")
    assert r.returncode == 0 and "dp1[1,2,3] = sum of dz2[f,i,j] * W2[f,1,u,v]" in r.stdout
    r = cnntui("explain", "--step", "dq", "--cell", "1")
    assert r.returncode == 1
    one_sentence(r.stderr, "no step named 'dq'")
