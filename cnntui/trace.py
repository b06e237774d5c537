"""One digit's forward and backward pass as an ordered list of steps, named as in the lesson.

Everything a pane of the UI shows is on a ``Step``: the tensor, the layer it belongs to, the
inputs, parameters and cache it used, a formula, the NumPy line that computed it, and, once the
PyTorch reference ran, PyTorch's value and the difference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cnntui import layers, model
from cnntui.data import DIGITS_EXPLANATION, Sample

# the input's explanation when none is given; every layer explains itself (cnntui/layers.py)
INPUT_EXPLANATION = layers.Explanation(*DIGITS_EXPLANATION)

SIGNED_KINDS = {"conv", "linear", "input"}  # outputs of these can be negative


@dataclass
class Step:
    index: int
    phase: str  # "forward" | "backward"
    layer: str  # layer name, e.g. "conv2" ("input" for x)
    kind: str  # layer kind: input conv relu pool flatten linear softmax
    name: str  # the lesson's tensor name: z2, dW2, ...
    value: np.ndarray  # without the batch axis
    inputs: dict[str, np.ndarray] = field(default_factory=dict)  # tensors this step read
    params: dict[str, np.ndarray] = field(default_factory=dict)  # parameters this step read
    cache: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. "argmax" for pooling
    formula: str = ""
    code: str = ""
    lesson_function: str | None = None  # the lesson's loop function for this step, if any
    layer_object: layers.Layer | None = None  # None for the input
    torch_value: np.ndarray | None = None
    torch_max_abs_diff: float | None = None
    torch_max_rel_err: float | None = None  # max |diff| / max |torch value|
    torch_tolerance: float | None = None  # the largest torch_max_rel_err that counts as agreeing
    torch_note: str = ""  # e.g. that PyTorch's max-pool would have broken a tie the other way
    torch_ok: bool | None = None  # whether it agrees with PyTorch (None: not compared yet)

    @property
    def signed(self) -> bool:
        """Whether the tensor can be negative (diverging colour map) or not (sequential)."""
        return self.phase == "backward" or self.kind in SIGNED_KINDS

    @property
    def is_param_grad(self) -> bool:
        return self.phase == "backward" and self.name[1:] in self.params

    @property
    def title(self) -> str:
        return f"{self.layer}  {self.name} {tuple(self.value.shape)}"


@dataclass
class Trace:
    index: int | None  # the digit's index, None for an image from elsewhere
    label: int
    prediction: int
    probs: np.ndarray
    loss: float
    dtype: str
    weights: str  # where the weights came from: "seed", "pretrained", a path
    steps: list[Step]
    arch: model.Architecture = model.SIMPLE_CNN
    source: str = ""  # what the input is, for headers: "digit #5", "MNIST #60003", "image 7.png"
    label_given: bool = True  # False: no label was given; the loss is towards the prediction
    original: np.ndarray | None = None  # an own image as read (H, W) in [0, 1], to show beside x

    @property
    def input_name(self) -> str:
        return self.source or f"digit #{self.index}"

    @property
    def label_text(self) -> str:
        """``label 3``, or for an unlabelled input what the loss is taken towards."""
        return f"label {self.label}" if self.label_given else \
            f"no label: loss towards the predicted {self.label}"

    @property
    def confidence(self) -> float:
        return float(self.probs[self.prediction])

    def __getitem__(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(f"no step named {name!r}; steps are {', '.join(self.names)}")

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.steps]

    def position(self, name: str) -> int:
        return self.names.index(name)

    @property
    def first_backward(self) -> int:
        return next(i for i, s in enumerate(self.steps) if s.phase == "backward")


def build_trace(params: dict[str, np.ndarray], x: np.ndarray, label: int | None, *,
                index: int | None = None, dtype: str = "float64", weights: str = "seed",
                arch: model.Architecture = model.SIMPLE_CNN, source: str = "",
                input_explanation: layers.Explanation = INPUT_EXPLANATION) -> Trace:
    """Run one (C, H, W) image forward and backward and return its ordered steps. Without a
    ``label`` the loss is taken towards the predicted class, so the backward pass shows what
    would make the network surer of its own answer."""
    x = np.asarray(x)
    expected = arch.input_shape
    if x.shape != expected:
        raise ValueError(f"{arch.name} takes an image shaped {expected}, not {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("the input image contains NaN or Inf values")
    params = model.cast_params(params, dtype)
    label_given = label is not None
    if label is None:
        probs = model.forward(arch, params, x.astype(dtype)[None]).acts[arch.layers[-1].out]
        label = int(np.argmax(probs[0]))
    p = model.loss_and_grads(arch, params, x.astype(dtype)[None], np.array([label]))
    acts = {k: v[0] for k, v in p.acts.items()}
    grads = {k: (v if k[1:] in params else v[0]) for k, v in p.grads.items()}

    steps: list[Step] = []

    def add(phase: str, layer: layers.Layer | None, name: str, value: np.ndarray, role: str,
            inputs: dict, cache: dict, **names: object) -> None:
        names.setdefault("out", name)
        e = input_explanation if layer is None else layer.explain(role, names)
        steps.append(Step(
            index=len(steps), phase=phase, layer=layer.name if layer else "input",
            kind=layer.kind if layer else "input", name=name, value=value, inputs=inputs,
            params={k: params[k] for k in (layer.params if layer else ())}, cache=cache,
            formula=e.formula, code=e.code, lesson_function=e.lesson_function,
            layer_object=layer))

    def choice_cache(layer: layers.Layer) -> dict[str, np.ndarray]:
        """The choice a layer made (a ReLU's mask, a pool's argmax), which its backward pass
        follows and the checks compare."""
        choice = layer.choice(p.caches[layer.name])
        return {} if choice is None else {layer.choice_key: choice[0]}

    add("forward", None, "x", acts["x"], "out", {}, {})
    for i, layer in enumerate(arch.layers):
        inp = model.layer_input(arch, i)
        add("forward", layer, layer.out, acts[layer.out], "out", {inp: acts[inp]},
            choice_cache(layer), inp=inp, inp_shape=tuple(acts[inp].shape))

    # backward: the loss layer first, then every layer in reverse
    last = arch.layers[-1]
    add("backward", last, "d" + arch.logits, grads["d" + arch.logits], "din",
        {last.out: acts[last.out]}, {}, inp=arch.logits, label=label)
    for i in range(len(arch.layers) - 2, -1, -1):
        layer = arch.layers[i]
        inp, dout = model.layer_input(arch, i), "d" + layer.out
        names = dict(inp=inp, dout=dout, inp_shape=tuple(acts[inp].shape))
        reads = {dout: grads[dout], inp: acts[inp]}
        # a parameterless layer has no dW/db steps
        for pname, role in zip(layer.params, ("dW", "db"), strict=False):
            add("backward", layer, "d" + pname, grads["d" + pname], role, reads, {},
                **{**names, "out": "d" + pname})
        add("backward", layer, "d" + inp, grads["d" + inp], "din", reads, choice_cache(layer),
            **{**names, "out": "d" + inp})

    probs = acts[last.out]
    return Trace(index=index, label=int(label), prediction=int(np.argmax(probs)), probs=probs,
                 loss=float(p.loss), dtype=str(np.dtype(dtype)), weights=weights, steps=steps,
                 arch=arch, source=source, label_given=label_given)


def trace_digit(params: dict[str, np.ndarray], index: int, *, dtype: str = "float64",
                weights: str = "seed", arch: model.Architecture = model.SIMPLE_CNN) -> Trace:
    """The trace of digit ``index`` of the digits set."""
    from cnntui.data import load_digits

    return trace_sample(params, load_digits().sample(index), dtype=dtype, weights=weights,
                        arch=arch)


def trace_sample(params: dict[str, np.ndarray], sample: Sample, *, dtype: str = "float64",
                 weights: str = "seed", arch: model.Architecture = model.SIMPLE_CNN) -> Trace:
    """The trace of one input (a data set's digit or the user's own image)."""
    trace = build_trace(params, sample.x, sample.label, index=sample.index, dtype=dtype,
                        weights=weights, arch=arch, source=sample.name,
                        input_explanation=layers.Explanation(*sample.explanation))
    trace.original = sample.original
    return trace
