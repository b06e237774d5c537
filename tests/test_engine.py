"""SimpleCNN, the trace, the PyTorch reference and the gradient check."""

import os

import numpy as np
import pytest

from cnntui import gradcheck, lesson, model, ops, reference
from cnntui.data import load_digits, zoom_bilinear
from cnntui.trace import build_trace, trace_digit

FORWARD = "x z1 a1 p1 z2 a2 p2 flat logits probs".split()
BACKWARD = "dlogits dW3 db3 dflat dp2 da2 dz2 dW2 db2 dp1 da1 dz1 dW1 db1 dx".split()


@pytest.fixture(scope="module")
def seed_params():
    return model.SIMPLE_CNN.init_params()


def test_init_is_the_lessons(seed_params):
    cnn = lesson.SimpleCNN()
    assert list(seed_params) == ["W1", "b1", "W2", "b2", "W3", "b3"]
    for name, value in seed_params.items():
        np.testing.assert_array_equal(value, getattr(cnn, name))
    assert seed_params["W3"].shape == (392, 10)


def test_lesson_input_is_digit_zero_zoomed_and_standardised():
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits as sk_digits

    img = zoom(sk_digits().images[0], 3.5, order=1)
    img = (img - img.mean()) / (img.std() + 1e-5)
    x, label = load_digits().get(0)
    np.testing.assert_allclose(x, img[np.newaxis], rtol=0, atol=1e-13)
    assert label == 0


def test_zoom_equals_scipys_for_every_digit():
    from scipy.ndimage import zoom

    raw = load_digits().raw
    ours = zoom_bilinear(raw)
    theirs = np.stack([zoom(img, 3.5, order=1) for img in raw])
    assert ours.shape == (1797, 28, 28)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-13)


def lesson_input(index: int) -> tuple[np.ndarray, int]:
    """The lesson's own preprocessing, verbatim."""
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits as sk_digits

    digits = sk_digits()
    img = zoom(digits.images[index], 3.5, order=1)
    img = (img - img.mean()) / (img.std() + 1e-5)
    return img[np.newaxis, :, :], int(digits.target[index])


def test_default_network_reproduces_the_lessons_probabilities(seed_params):
    x, label = lesson_input(0)
    cnn = lesson.SimpleCNN()
    expected = cnn.forward(x)  # the lesson's code on the lesson's input
    trace = trace_digit(seed_params, 0)  # ours on ours
    np.testing.assert_allclose(trace.probs, expected, rtol=0, atol=1e-12)
    assert trace.prediction == int(np.argmax(expected))
    assert trace.loss == pytest.approx(cnn.loss(expected, label), abs=1e-12)


@pytest.mark.parametrize("index", [0, 7, 1796])
def test_every_trace_tensor_equals_the_lesson_loops(seed_params, index):
    trace = trace_digit(seed_params, index)
    loops, _ = lesson.lesson_tensors(seed_params, trace["x"].value, trace.label)
    for step in trace.steps:
        np.testing.assert_allclose(step.value, loops[step.name].reshape(step.value.shape),
                                   rtol=0, atol=1e-12, err_msg=step.name)


def test_trace_order_names_and_contents(seed_params):
    trace = trace_digit(seed_params, 0)
    assert trace.names == FORWARD + BACKWARD
    assert [s.phase for s in trace.steps] == ["forward"] * 10 + ["backward"] * 15
    assert trace.first_backward == 10
    assert trace["z2"].value.shape == (8, 14, 14) and trace["z2"].layer == "conv2"
    assert set(trace["z2"].inputs) == {"p1"} and set(trace["z2"].params) == {"W2", "b2"}
    assert trace["dz2"].formula == "dz2 = da2 * (z2 > 0)"
    assert trace["z1"].lesson_function == "conv2d_multi"
    assert trace["dW2"].is_param_grad and not trace["dp1"].is_param_grad
    assert trace["z1"].signed and not trace["a1"].signed and trace["da1"].signed
    for name, source in (("p1", "a1"), ("da1", "a1"), ("p2", "a2"), ("da2", "a2")):
        step = trace[name]
        argmax = step.cache["argmax"]
        src = trace[source].value
        C, H, W = src.shape
        # the argmax names the cell holding each window's maximum
        picked = np.take_along_axis(src.reshape(C, -1), argmax.reshape(C, -1), axis=1)
        np.testing.assert_array_equal(picked.reshape(argmax.shape), trace[name.lstrip("d")
                                      if name.startswith("p") else "p" + source[1]].value)
    # the pooled gradient is non-zero only at argmax cells
    da1 = trace["da1"].value
    mask = np.zeros(da1.size, dtype=bool)
    mask[(trace["da1"].cache["argmax"] + np.arange(4)[:, None, None] * 28 * 28).reshape(-1)] = True
    assert np.all(da1.reshape(-1)[~mask] == 0)


def test_trace_rejects_bad_images(seed_params):
    with pytest.raises(ValueError, match="shaped"):
        build_trace(seed_params, np.zeros((28, 28)), 0)
    bad = np.zeros((1, 28, 28))
    bad[0, 3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        build_trace(seed_params, bad, 0)
    with pytest.raises(IndexError, match="no digit 1797"):
        load_digits().get(1797)


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 1e-5)])
def test_trace_agrees_with_pytorch(seed_params, dtype, tol):
    trace = trace_digit(seed_params, 3, dtype=dtype)
    reference.attach(trace)
    for step in trace.steps:
        assert step.value.dtype == np.dtype(dtype)
        assert step.torch_max_rel_err <= tol, step.name
        assert step.torch_value.dtype == np.float64  # the reference is float64 for both
        v = reference.verdict(step)
        assert v.ok and f"to {reference.TOLERANCE[dtype]:.0e}" in v.text


def test_verdict_catches_a_wrong_tensor(seed_params):
    trace = trace_digit(seed_params, 0)
    trace["dz1"].value = trace["dz1"].value * 1.001
    reference.attach(trace)
    v = reference.verdict(trace["dz1"])
    assert v.ok is False and "DISAGREES: relative error 1.0e-03 > 1e-09" in v.text
    # dz1 is compared with PyTorch's backward from our dlogits, so only dz1 is wrong
    assert [s.name for s in trace.steps if not s.torch_ok] == ["dz1"]


@pytest.mark.parametrize("index", [0, 42])
def test_gradient_check_passes_for_every_parameter(seed_params, index):
    x, label = load_digits().get(index)
    rows = gradcheck.gradcheck(seed_params, x, label)
    assert [r.name for r in rows] == ["dW1", "db1", "dW2", "db2", "dW3", "db3", "dx"]
    for r in rows:
        assert r.checked >= 3, r
        assert r.max_rel_error < 1e-6, r


def test_gradient_check_catches_a_wrong_backward(seed_params, monkeypatch):
    real = ops.relu_backward
    monkeypatch.setattr(ops, "relu_backward", lambda dout, mask: real(dout, mask) * 1.01)
    x, label = load_digits().get(0)
    rows = {r.name: r for r in gradcheck.gradcheck(seed_params, x, label)}
    assert not rows["dW1"].ok and not rows["dW2"].ok
    assert rows["dW3"].ok  # the last layer does not go through a ReLU's backward


def test_data_split_is_fixed_and_stratified():
    d = load_digits()
    assert len(d) == 1797 and d.images.shape == (1797, 1, 28, 28)
    assert len(d.train_idx) == 1437 and len(d.test_idx) == 360
    assert not set(d.train_idx) & set(d.test_idx)
    counts = np.bincount(d.labels[d.test_idx], minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37
    from sklearn.model_selection import train_test_split

    again = train_test_split(np.arange(1797), test_size=0.2, stratify=d.labels, random_state=0)
    np.testing.assert_array_equal(d.test_idx, again[1])


# ---- checkpoints ------------------------------------------------------------------------------


def test_weights_round_trip(tmp_path, seed_params):
    path = model.save_weights(tmp_path / "w.npz", seed_params, epoch=3, test_accuracy=0.5)
    params, meta = model.load_weights(path)
    for k, v in seed_params.items():
        np.testing.assert_array_equal(params[k], v)
    assert meta == {"epoch": 3, "test_accuracy": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["w.npz"]  # no temp file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # as any file the user saves


def test_bad_weight_files_are_refused_clearly(tmp_path, seed_params):
    with pytest.raises(model.WeightsError, match="does not exist"):
        model.load_weights(tmp_path / "missing.npz")
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(model.WeightsError, match="not a readable .npz"):
        model.load_weights(corrupt)
    wrong = dict(seed_params, W2=np.zeros((8, 4, 5, 5)))
    path = model.save_weights(tmp_path / "wrong.npz", wrong)
    with pytest.raises(model.WeightsError, match=r"W2 shaped \(8, 4, 5, 5\)"):
        model.load_weights(path)
    nan = dict(seed_params, b3=np.full(10, np.nan))
    with pytest.raises(model.WeightsError, match="non-finite"):
        model.load_weights(model.save_weights(tmp_path / "nan.npz", nan))
    other = model.Architecture("OtherNet", (1, 28, 28), (), {})
    with pytest.raises(model.WeightsError, match="for a OtherNet"):
        model.load_weights(model.save_weights(tmp_path / "other.npz", seed_params, other))


def test_interrupted_save_keeps_the_old_file(tmp_path, seed_params, monkeypatch):
    path = model.save_weights(tmp_path / "w.npz", seed_params)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(KeyboardInterrupt):
        model.save_weights(path, {k: v + 1 for k, v in seed_params.items()})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["w.npz"]


def test_predict_in_batches_equals_one_pass(seed_params):
    images = load_digits().images[:50]
    probs = model.predict(model.SIMPLE_CNN, seed_params, images, batch_size=16)
    one_pass = model.forward(model.SIMPLE_CNN, seed_params, images).acts["probs"]
    np.testing.assert_allclose(probs, one_pass, rtol=0, atol=1e-15)
    assert probs.shape == (50, 10)


@pytest.fixture(scope="module")
def pretrained_params():
    return model.weights_from("pretrained")[0]


def test_a_sure_network_still_agrees_everywhere(pretrained_params):
    """With trained weights digit 7 gets p = 1 - 1e-10: PyTorch's own p - 1 would keep ~6
    digits; seeded with our dlogits, its backward pass needs no wider tolerance, and an error of
    1e-6 is still caught."""
    trace = trace_digit(pretrained_params, 7, weights="pretrained")
    assert trace.confidence > 1 - 1e-6
    reference.attach(trace)
    assert all(reference.verdict(s).ok for s in trace.steps)
    assert all(s.torch_tolerance == reference.TOLERANCE["float64"] for s in trace.steps)
    trace["dz1"].value = trace["dz1"].value * (1 + 1e-6)
    reference.attach(trace)
    assert reference.verdict(trace["dz1"]).ok is False
    x, label = load_digits().get(7)
    for r in gradcheck.gradcheck(pretrained_params, x, label):
        assert r.max_rel_error < 1e-6, r


def test_stable_cross_entropy_matches_the_plain_formula():
    logits = np.array([3.0, -1.0, 0.5])
    for label in range(3):
        plain = -np.log(ops.softmax(logits)[label])
        assert gradcheck.cross_entropy(logits, label) == pytest.approx(plain, rel=1e-14)
    sure = np.array([30.0, 0.0, 0.0])  # loss = log(1 + 2 e^-30) ~ 1.9e-13, all digits kept
    assert gradcheck.cross_entropy(sure, 0) == pytest.approx(2 * np.exp(-30.0), rel=1e-12)


def test_choice_differences_tell_a_tie_from_a_real_difference(seed_params):
    trace = trace_digit(seed_params, 0)
    ref = reference.torch_reference(trace)
    ours = reference.choices(trace)
    assert reference.choice_differences(trace, ref, 1e-9) == ({}, {})
    a1 = trace["a1"].value.reshape(4, -1)
    window_values = np.take_along_axis(a1, ours["pool1"].reshape(4, -1), 1)

    def other(layer, change):
        own = {k: v.copy() for k, v in ref.own_choices.items()}
        change(own[layer])
        return reference.Reference("other", ref.tensors, own)

    # pooling: a window of ReLU zeros has four equal maxima; one with a clear maximum has one
    c, k = np.argwhere(window_values == 0)[0]
    tied = other("pool1", lambda a: a.reshape(4, -1).__setitem__((c, k), a.reshape(4, -1)[c, k]
                                                                 + 1))
    assert reference.choice_differences(trace, tied, 1e-9) == ({"pool1": 1}, {})
    c, k = np.argwhere(window_values > 0.5)[0]
    row, col = divmod(int(ours["pool1"].reshape(4, -1)[c, k]), 28)
    cells = [(row // 2 * 2 + i) * 28 + col // 2 * 2 + j for i in (0, 1) for j in (0, 1)]
    lower = next(cell for cell in cells if a1[c, cell] < window_values[c, k] - 1e-3)
    wrong = other("pool1", lambda a: a.reshape(4, -1).__setitem__((c, k), lower))
    assert reference.choice_differences(trace, wrong, 1e-9) == ({}, {"pool1": 1})
    # ReLU: flipping a mask cell at a clearly non-zero input is wrong; at a near-zero one, a tie
    z1 = ref.tensors["z1"]
    big = tuple(np.argwhere(np.abs(z1) > 0.5)[0])
    assert reference.choice_differences(
        trace, other("relu1", lambda m: m.__setitem__(big, ~m[big])), 1e-9) == ({}, {"relu1": 1})
    near = np.unravel_index(np.argmin(np.abs(z1)), z1.shape)
    ref.tensors["z1"] = z1.copy()
    ref.tensors["z1"][near] = 1e-12 * np.max(np.abs(z1))
    assert reference.choice_differences(
        trace, other("relu1", lambda m: m.__setitem__(near, ~m[near])), 1e-9) == (
        {"relu1": 1}, {})


def test_choices_are_honoured_by_torch_and_the_loops(seed_params):
    trace = trace_digit(seed_params, 4)
    params, x, chosen, dlogits = reference.reference_inputs(trace)
    swapped = {**chosen, "pool2": chosen["pool2"].copy(), "relu1": chosen["relu1"].copy()}
    flat = swapped["pool2"].reshape(8, -1)
    a2 = trace["a2"].value.reshape(8, -1)
    c, k = np.argwhere(np.take_along_axis(a2, flat, 1) > 0)[0]
    flat[c, k] ^= 1  # the horizontal neighbour in the same 2x2 window
    z1 = trace["z1"].value
    pos = tuple(np.argwhere(z1 > 0.5)[0])
    swapped["relu1"][pos] = False
    for run in (lambda ch: reference.torch_tensors(params, x, trace.label, choices=ch,
                                                   dlogits=dlogits),
                lambda ch: lesson.lesson_tensors(params, x, trace.label, choices=ch,
                                                 dlogits=dlogits)):
        (same, own), (moved, _) = run(chosen), run(swapped)
        for layer in chosen:
            np.testing.assert_array_equal(own[layer], chosen[layer])
        np.testing.assert_allclose(same["da2"], trace["da2"].value, atol=1e-12)
        assert not np.allclose(moved["da2"], trace["da2"].value)
        assert moved["a1"][pos] == 0 and same["a1"][pos] == pytest.approx(z1[pos], rel=1e-12)
        assert moved["dz1"][pos] == 0


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_trained_network_agrees_on_many_digits(pretrained_params, dtype):
    """A sweep: sure predictions and pooling ties (digits 126, 210, 456 have had them) included."""
    for index in [*range(0, 1797, 61), 126, 210, 456]:
        trace = trace_digit(pretrained_params, index, dtype=dtype)
        reference.attach(trace)
        bad = [(s.name, reference.verdict(s).text) for s in trace.steps
               if not reference.verdict(s).ok]
        assert not bad, (index, bad)
