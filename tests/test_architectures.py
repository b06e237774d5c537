"""The three architectures (simple, strided, separable) as data: shapes, steps, three-way checks,
windows and explanations, the summary, weights files and training."""

import json

import numpy as np
import pytest

from cnntui import gradcheck, layers, lesson, model, reference, report, summary
from cnntui.data import load_digits
from cnntui.trace import trace_digit
from cnntui.training import TrainConfig, Trainer

ARCHS = list(model.ARCHITECTURES.values())
STEPS = {
    "simple": "x z1 a1 p1 z2 a2 p2 flat logits probs dlogits dW3 db3 dflat dp2 da2 dz2 dW2 db2 "
              "dp1 da1 dz1 dW1 db1 dx",
    "strided": "x z1 a1 z2 a2 flat logits probs dlogits dW3 db3 dflat da2 dz2 dW2 db2 da1 dz1 dW1 "
               "db1 dx",
    "separable": "x z1 a1 p1 z2d z2 a2 p2 flat logits probs dlogits dW3 db3 dflat dp2 da2 dz2 "
                 "dW2p db2p dz2d dW2d db2d dp1 da1 dz1 dW1 db1 dx",
}


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: a.key)
def test_steps_and_shapes(arch):
    trace = trace_digit(arch.init_params(), 0, arch=arch)
    assert trace.names == STEPS[arch.key].split()
    for step in trace.steps:
        shape = arch.shapes.get(step.name) or arch.shapes.get(step.name[1:])
        expected = arch.param_shapes.get(step.name[1:], shape)
        assert step.value.shape == tuple(expected), step.name
        assert (step.layer_object is None) == (step.name == "x")
    assert arch.shapes["flat"] == (392,) and arch.shapes["logits"] == (10,)


def test_parameter_shapes_are_derived_as_the_issue_gives_them():
    assert model.STRIDED_CNN.param_shapes == {"W1": (4, 1, 3, 3), "b1": (4,), "W2": (8, 4, 3, 3),
                                              "b2": (8,), "W3": (392, 10), "b3": (10,)}
    assert model.SEPARABLE_CNN.param_shapes == {
        "W1": (4, 1, 3, 3), "b1": (4,), "W2d": (4, 1, 3, 3), "b2d": (4,), "W2p": (8, 4, 1, 1),
        "b2p": (8,), "W3": (392, 10), "b3": (10,)}


def test_seed_weights_follow_the_lessons_initialisation():
    """np.random.seed(42), then He-scaled randn per weight in layer order, zero biases."""
    np.random.seed(42)
    W1 = np.random.randn(4, 1, 3, 3) * np.sqrt(2.0 / 9)
    W2d = np.random.randn(4, 1, 3, 3) * np.sqrt(2.0 / 9)
    W2p = np.random.randn(8, 4, 1, 1) * np.sqrt(2.0 / 4)
    W3 = np.random.randn(392, 10) * np.sqrt(2.0 / 392)
    p = model.SEPARABLE_CNN.init_params()
    for name, value in {"W1": W1, "W2d": W2d, "W2p": W2p, "W3": W3}.items():
        np.testing.assert_array_equal(p[name], value)
    assert not any(p[b].any() for b in ("b1", "b2d", "b2p", "b3"))
    cnn = lesson.SimpleCNN()  # the simple network's seed is the lesson's own
    for name in ("W1", "W2", "W3"):
        np.testing.assert_array_equal(model.SIMPLE_CNN.init_params()[name], getattr(cnn, name))


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: a.key)
@pytest.mark.parametrize("index", [0, 7])
def test_every_tensor_agrees_with_pytorch_autograd_and_the_loops(arch, index):
    """Plain autograd (its own cross-entropy, its own choices) to 1e-10, and the lesson's loops."""
    params = arch.init_params()
    trace = trace_digit(params, index, arch=arch)
    x = trace["x"].value
    autograd, _ = reference.torch_tensors(params, x, trace.label, arch)
    loops, _ = lesson.lesson_tensors(params, x, trace.label, arch=arch)
    for step in trace.steps:
        for ref in (autograd, loops):
            _, rel = reference.compare(step.value, ref[step.name].reshape(step.value.shape))
            assert rel <= 1e-10, (step.name, rel)


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: a.key)
@pytest.mark.parametrize("weights", ["seed", "pretrained"])
def test_verify_passes_for_every_architecture(arch, weights):
    params, desc = model.weights_from(weights, arch)
    for dtype in ("float64", "float32"):
        trace = trace_digit(params, 11, arch=arch, dtype=dtype, weights=desc)
        v = report.verify_trace(trace, params)
        assert v.ok, v.problems


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: a.key)
def test_gradient_check_of_every_parameter(arch):
    params = arch.init_params()
    x, label = load_digits().get(2)
    rows = {r.name: r for r in gradcheck.gradcheck(params, x, label, arch=arch)}
    assert set(rows) == {"d" + k for k in params} | {"dx"}
    for r in rows.values():
        assert r.ok is not False and r.max_rel_error < 1e-6, r
    assert sum(r.checked for r in rows.values()) > 50


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: a.key)
def test_a_planted_error_in_a_depthwise_or_strided_kernel_is_caught(arch, monkeypatch):
    params = arch.init_params()
    real = layers.ops.conv2d_backward

    def planted(dout, cache):
        dx, dw, db = real(dout, cache)
        return dx, dw * 1.001, db
    monkeypatch.setattr(layers.ops, "conv2d_backward", planted)
    trace = trace_digit(params, 0, arch=arch)
    v = report.verify_trace(trace, params)
    first_conv_weight = "d" + next(s for s in trace.steps if s.phase == "backward"
                                   and s.kind == "conv").name[1:]
    assert not v.ok and v.problems[0].startswith(f"{first_conv_weight} disagrees")


def test_a_size_that_does_not_divide_rounds_down_and_is_explained():
    """3x3, stride 2, padding 1 on 28x28: (28 + 2 - 3) / 2 + 1 = 14.5, so 14x14, and the last
    padded row and column are read by no window."""
    arch = model.STRIDED_CNN
    trace = trace_digit(arch.init_params(), 0, arch=arch)
    assert trace["z1"].value.shape == (4, 14, 14) and trace["z2"].value.shape == (8, 7, 7)
    z1 = trace["z1"]
    assert "x_padded[:, 2i:2i+3, 2j:2j+3]" in z1.formula and "stride=2, padding=1" in z1.code
    assert "the last 1 padded row and the last 1 padded column" in z1.formula
    simple = trace_digit(model.SIMPLE_CNN.init_params(), 0)
    assert "i:i+3" in simple["z1"].formula and "unused" not in simple["z1"].formula


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: a.key)
def test_a_conv_window_recomputes_its_output_cell(arch):
    trace = trace_digit(arch.init_params(), 5, arch=arch)
    rng = np.random.default_rng(0)
    for step in trace.steps:
        if step.phase != "forward" or step.kind not in ("conv", "pool"):
            continue
        layer = step.layer_object
        (source,) = step.inputs.values()
        pad = getattr(layer, "padding", 0)
        padded = np.pad(source, ((0, 0), (pad, pad), (pad, pad)))
        for _ in range(5):
            cell = tuple(int(rng.integers(n)) for n in step.value.shape)
            ch, rows, cols = layer.window(source.shape, cell)
            window = padded[ch, rows.start + pad:rows.stop + pad, cols.start + pad:cols.stop + pad]
            if step.kind == "pool":
                assert window.max() == step.value[cell]
            else:
                W, b = (step.params[p] for p in layer.params)
                value = np.sum(window * W[cell[0]]) + b[cell[0]]
                assert value == pytest.approx(step.value[cell], rel=1e-12, abs=1e-12)


def test_summary_counts_parameters_and_multiply_adds():
    docs = {d["arch"]: d for d in (summary.summarize(a) for a in ARCHS)}
    for arch in ARCHS:
        assert docs[arch.key]["params"] == sum(v.size for v in arch.init_params().values())
    # conv: output cells x (C_in / groups) x k x k; linear: in x out
    assert [r["macs"] for r in docs["simple"]["layers"] if r["macs"]] == [
        4 * 28 * 28 * 9, 8 * 14 * 14 * 4 * 9, 392 * 10]
    assert [r["macs"] for r in docs["strided"]["layers"] if r["macs"]] == [
        4 * 14 * 14 * 9, 8 * 7 * 7 * 4 * 9, 392 * 10]
    assert [r["macs"] for r in docs["separable"]["layers"] if r["macs"]] == [
        4 * 28 * 28 * 9, 4 * 14 * 14 * 9, 8 * 14 * 14 * 4, 392 * 10]
    # the lesson's exercise: a separable conv2 has far fewer parameters than a full one
    conv2 = next(r for r in docs["simple"]["layers"] if r["name"] == "conv2")["params"]
    separable = sum(r["params"] for r in docs["separable"]["layers"]
                    if r["name"] in ("conv2d", "conv2p"))
    assert (conv2, separable) == (8 * 4 * 9 + 8, 4 * 9 + 4 + 8 * 4 + 8)


def test_a_weights_file_records_its_architecture(tmp_path):
    path = tmp_path / "strided.npz"
    model.save_weights(path, model.STRIDED_CNN.init_params(), model.STRIDED_CNN)
    assert model.architecture_of(str(path)) is model.STRIDED_CNN
    assert model.architecture_of(str(path), "strided") is model.STRIDED_CNN
    assert model.architecture_of("pretrained", "separable") is model.SEPARABLE_CNN
    with pytest.raises(model.WeightsError, match=r"is for a StridedCNN, not a SimpleCNN; use "
                                                 r"--arch strided"):
        model.weights_from(str(path), model.architecture_of(str(path), "simple"))


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: a.key)
def test_training_works_for_every_architecture(arch, tmp_path):
    digits = load_digits()
    trainer = Trainer(TrainConfig(epochs=2, augment=False), arch=arch,
                      train_idx=digits.train_idx[:256])
    result = trainer.run()
    assert result.history[-1].train_loss < result.history[0].train_loss
    path = trainer.save(tmp_path / "w.npz")
    assert model.architecture_of(str(path)) is arch


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: a.key)
def test_shipped_weights_for_every_architecture(arch):
    params, _ = model.weights_from("pretrained", arch)
    _, meta = model.load_weights(model.pretrained_path(arch), arch)
    assert meta["test_accuracy"] >= 0.975
    digits = load_digits()
    probs = model.predict(arch, params, digits.images[digits.test_idx])
    assert np.mean(probs.argmax(1) == digits.labels[digits.test_idx]) == meta["test_accuracy"]


def test_cli_arch_on_trace_verify_and_summary(capsys):
    from cnntui import cli

    assert cli.main(["trace", "--arch", "separable", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["arch"] == "separable" and len(doc["steps"]) == 29
    assert cli.main(["verify", "--arch", "strided", "--index", "3"]) == 0
    assert "StridedCNN" in capsys.readouterr().out
    assert cli.main(["summary", "--json"]) == 0
    docs = json.loads(capsys.readouterr().out)
    assert [d["arch"] for d in docs] == ["simple", "strided", "separable"]
    assert set(docs[0]["layers"][0]) >= {"name", "kind", "output_shape", "params", "macs"}


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: a.key)
@pytest.mark.parametrize("weights", ["seed", "pretrained"])
def test_every_steps_numpy_line_runs_as_shown_and_gives_its_value(arch, weights):
    """One image, no batch axis, in a namespace of np, the lesson's functions, every tensor and
    parameter by name, and the label: each step's line must give the step's value."""
    params, _ = model.weights_from(weights, arch)
    trace = trace_digit(params, 7, arch=arch)
    names = {"np": np, **{f: getattr(lesson, f) for f in (
        "conv2d", "conv2d_multi", "maxpool2d", "conv2d_backward", "maxpool_backward")},
        **params, **{s.name: s.value for s in trace.steps}, "label": trace.label}
    for step in trace.steps[1:]:
        scope = {k: v for k, v in names.items() if k != step.name}
        exec(step.code, scope)  # noqa: S102 - the line the UI shows
        _, rel = reference.compare(scope[step.name], step.value)
        assert rel <= 1e-12, (step.name, step.code, rel)
