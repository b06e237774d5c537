"""One digit's forward and backward pass as an ordered list of steps, named as in the lesson.

Everything a pane of the UI shows is on a ``Step``: the tensor, the layer it belongs to, the
inputs, parameters and cache it used, a formula, the NumPy line that computed it, and, once the
PyTorch reference ran, PyTorch's value and the difference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cnntui import model

# (layer kind, role) -> (formula, NumPy line); {out} {inp} {W} {b} {label} are filled in per step.
# role: "out" for the forward tensor, "dW"/"db"/"din" for the backward tensors.
TEMPLATES: dict[tuple[str, str], tuple[str, str, str | None]] = {
    # kind, role: formula, numpy code, lesson function
    ("input", "out"): ("x = (img - mean) / (std + 1e-5), zoomed 8x8 -> 28x28",
                       "x = prepare(digits.images[i])  # zoom(img, 3.5, order=1), standardise",
                       None),
    ("conv", "out"): ("{out}[f,i,j] = sum({inp}[:, i:i+3, j:j+3] * {W}[f]) + {b}[f]",
                      "{out}, cache = conv2d({inp}, {W}, {b}, padding={padding})  # im2col @ W.T",
                      "conv2d_multi"),
    ("relu", "out"): ("{out} = max(0, {inp})", "{out} = np.maximum(0, {inp})", None),
    ("pool", "out"): ("{out}[c,i,j] = max({inp}[c, 2i:2i+2, 2j:2j+2])",
                      "{out}, cache = maxpool2d({inp}, size={size}, stride={stride})",
                      "maxpool2d"),
    ("flatten", "out"): ("{out} = {inp}.reshape(-1)  (C-order: channel, row, column)",
                         "{out} = {inp}.reshape(N, -1)", None),
    ("linear", "out"): ("{out} = {inp} @ {W} + {b}", "{out} = {inp} @ {W} + {b}", None),
    ("softmax", "out"): ("{out} = exp({inp} - max) / sum(exp({inp} - max))",
                         "{out} = softmax({inp})", None),
    ("softmax", "din"): ("{out} = probs - onehot({label})  (loss = -log(probs[{label}] + 1e-15))",
                         "{out} = probs.copy(); {out}[label] -= 1", None),
    ("linear", "dW"): ("{out} = {inp}.T @ {dout}", "{out} = {inp}.T @ {dout}", None),
    ("linear", "db"): ("{out} = sum of {dout} over the batch", "{out} = {dout}.sum(axis=0)", None),
    ("linear", "din"): ("{out} = {dout} @ {W}.T", "{out} = {dout} @ {W}.T", None),
    ("flatten", "din"): ("{out} = {dout}.reshape({inp_shape})",
                         "{out} = {dout}.reshape({inp_shape})", None),
    ("pool", "din"): ("{out} = {dout} routed to the argmax of each window, 0 elsewhere",
                      "{out} = maxpool2d_backward({dout}, cache)  # put_along_axis at argmax",
                      "maxpool_backward"),
    ("relu", "din"): ("{out} = {dout} * ({inp} > 0)", "{out} = {dout} * ({inp} > 0)", None),
    ("conv", "dW"): ("{out}[f] = sum_ij {dout}[f,i,j] * {inp}_padded[:, i:i+3, j:j+3]",
                     "{out} = dout_mat.T @ cols  # one matmul", "conv2d_backward"),
    ("conv", "db"): ("{out}[f] = sum_ij {dout}[f,i,j]", "{out} = {dout}.sum(axis=(0, 2, 3))",
                     "conv2d_backward"),
    ("conv", "din"): ("{out}[:, i:i+3, j:j+3] += {dout}[f,i,j] * {W}[f]  (conv with flipped W)",
                      "{out} = col2im(dout_mat @ W_mat)  # kH*kW strided adds",
                      "conv2d_backward"),
}

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


def _fmt(template: str, **names: object) -> str:
    return template.format(**names)


def build_trace(params: dict[str, np.ndarray], x: np.ndarray, label: int, *,
                index: int | None = None, dtype: str = "float64", weights: str = "seed",
                arch: model.Architecture = model.SIMPLE_CNN) -> Trace:
    """Run one (C, H, W) image forward and backward and return its ordered steps."""
    x = np.asarray(x)
    expected = arch.input_shape
    if x.shape != expected:
        raise ValueError(f"{arch.name} takes an image shaped {expected}, not {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("the input image contains NaN or Inf values")
    params = model.cast_params(params, dtype)
    p = model.loss_and_grads(arch, params, x.astype(dtype)[None], np.array([label]))
    acts = {k: v[0] for k, v in p.acts.items()}
    grads = {k: (v if k[1:] in params else v[0]) for k, v in p.grads.items()}

    steps: list[Step] = []

    def add(phase: str, layer: model.Layer | None, name: str, value: np.ndarray, role: str,
            inputs: dict, used: dict, cache: dict, **fill: object) -> None:
        kind = layer.kind if layer else "input"
        formula, code, lesson_fn = TEMPLATES[(kind, role)]
        fill.setdefault("out", name)
        if layer is not None:
            fill.update(padding=layer.padding, size=layer.size, stride=layer.stride)
            for pname in layer.params:
                fill[pname[0]] = pname
        steps.append(Step(
            index=len(steps), phase=phase, layer=layer.name if layer else "input", kind=kind,
            name=name, value=value, inputs=inputs, params=used, cache=cache,
            formula=_fmt(formula, **fill), code=_fmt(code, **fill), lesson_function=lesson_fn,
        ))

    def choice_cache(layer: model.Layer) -> dict[str, np.ndarray]:
        """The choices a layer made, which its backward pass follows (the checks compare them)."""
        if layer.kind == "relu":
            return {"mask": p.caches[layer.name][0]}  # where the input was > 0
        if layer.kind != "pool":
            return {}
        argmax = p.caches[layer.name][1][0]  # (C, H_out, W_out) flat index into the input map
        return {"argmax": argmax}

    add("forward", None, "x", acts["x"], "out", {}, {}, {})
    for i, layer in enumerate(arch.layers):
        inp = model.layer_input(arch, i)
        used = {k: params[k] for k in layer.params}
        add("forward", layer, layer.out, acts[layer.out], "out", {inp: acts[inp]}, used,
            choice_cache(layer), inp=inp)

    # backward: the loss layer first, then every layer in reverse
    last = arch.layers[-1]
    logits = arch.layers[-2].out
    add("backward", last, "d" + logits, grads["d" + logits], "din",
        {last.out: acts[last.out]}, {}, {}, label=label)
    for i in range(len(arch.layers) - 2, -1, -1):
        layer = arch.layers[i]
        inp, dout = model.layer_input(arch, i), "d" + layer.out
        used = {k: params[k] for k in layer.params}
        fill = dict(inp=inp, dout=dout, inp_shape=tuple(acts[inp].shape))
        reads = {dout: grads[dout], inp: acts[inp]}
        # a parameterless layer has no dW/db steps
        for pname, role in zip(layer.params, ("dW", "db"), strict=False):
            add("backward", layer, "d" + pname, grads["d" + pname], role, reads, used, {},
                out="d" + pname, **fill)
        add("backward", layer, "d" + inp, grads["d" + inp], "din", reads, used,
            choice_cache(layer), out="d" + inp, **fill)

    probs = acts[last.out]
    return Trace(index=index, label=int(label), prediction=int(np.argmax(probs)), probs=probs,
                 loss=float(p.loss), dtype=str(np.dtype(dtype)), weights=weights, steps=steps,
                 arch=arch)


def trace_digit(params: dict[str, np.ndarray], index: int, *, dtype: str = "float64",
                weights: str = "seed") -> Trace:
    """The trace of digit ``index`` of the digits set."""
    from cnntui.data import load_digits

    x, label = load_digits().get(index)
    return build_trace(params, x, label, index=index, dtype=dtype, weights=weights)
