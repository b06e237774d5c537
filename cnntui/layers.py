"""One object per kind of layer. Each owns everything about itself that the engine, the checks
and the explanations need, built from its real hyperparameters:

- ``output_shape`` and ``param_specs`` (shapes derived from the input, a role, the fan-in for
  He initialisation);
- ``forward``/``backward`` through ``cnntui.ops`` (batched), and the choices a ReLU or a pool
  made (``choice``), which its backward pass follows;
- ``torch``: its PyTorch twin; ``loops``/``loops_backward``: the lesson's loop functions, one
  image, float64;
- ``window``: which input cells an output cell reads;
- ``explain``: its formula and NumPy line for each tensor it produces.

Shapes are per image, channels first: (C, H, W) or (D,).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from cnntui import ops


@dataclass(frozen=True)
class ParamSpec:
    shape: tuple[int, ...]
    role: str  # "weight" | "bias"
    fan_in: int  # inputs per output: He initialisation scales by sqrt(2 / fan_in)


@dataclass(frozen=True)
class Explanation:
    formula: str
    code: str
    lesson_function: str | None = None


@dataclass(frozen=True)
class Layer:
    name: str  # e.g. "conv1"
    out: str  # the lesson's name of the tensor it produces, e.g. "z1"

    kind: ClassVar[str] = ""
    choice_key: ClassVar[str | None] = None  # "mask" (ReLU) or "argmax" (pool)

    @property
    def params(self) -> tuple[str, ...]:
        return ()

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return in_shape

    def param_specs(self, in_shape: tuple[int, ...]) -> dict[str, ParamSpec]:
        return {}

    def choice(self, cache) -> np.ndarray | None:
        """What this layer chose for a batch (a ReLU's mask, a pool's argmax), else None."""
        return None

    def window(self, in_shape: tuple[int, ...], cell: tuple[int, ...]) -> tuple[slice, ...]:
        """The input cells that output ``cell`` reads, as slices of the input (elementwise
        layers: the same cell)."""
        return tuple(slice(i, i + 1) for i in cell)

    def explain(self, role: str, names: dict[str, object]) -> Explanation:
        raise NotImplementedError


@dataclass(frozen=True)
class WeightAndBias(Layer):
    """A layer with a weight and a bias, by the lesson's names (W1, b1, ...)."""

    weight: str = "W"
    bias: str = "b"

    @property
    def params(self) -> tuple[str, ...]:
        return (self.weight, self.bias)


@dataclass(frozen=True)
class Conv(WeightAndBias):
    """A 2-D convolution with a bias: W (F, C/groups, k, k), b (F,)."""

    filters: int = 1
    kernel: int = 3
    stride: int = 1
    padding: int = 0
    groups: int = 1

    kind: ClassVar[str] = "conv"

    def output_shape(self, in_shape):
        C, H, W = in_shape
        return (self.filters, ops.conv_output_size(H, self.kernel, self.stride, self.padding),
                ops.conv_output_size(W, self.kernel, self.stride, self.padding))

    def param_specs(self, in_shape):
        C = in_shape[0]
        if C % self.groups or self.filters % self.groups:
            raise ValueError(f"{self.name}: {C} input channels and {self.filters} filters do not "
                             f"split into {self.groups} groups")
        fan_in = C // self.groups * self.kernel * self.kernel
        return {self.weight: ParamSpec((self.filters, C // self.groups, self.kernel,
                                        self.kernel), "weight", fan_in),
                self.bias: ParamSpec((self.filters,), "bias", fan_in)}

    def forward(self, params, x):
        return ops.conv2d(x, params[self.weight], params[self.bias], stride=self.stride,
                          padding=self.padding, groups=self.groups)

    def backward(self, params, dout, cache):
        dx, dw, db = ops.conv2d_backward(dout, cache)
        return dx, {self.weight: dw, self.bias: db}

    def torch(self, params, h, choice=None, own=None):
        import torch.nn.functional as F

        return F.conv2d(h, params[self.weight], params[self.bias], stride=self.stride,
                        padding=self.padding, groups=self.groups)

    def _group_slices(self, C: int):
        Cg, Fg = C // self.groups, self.filters // self.groups
        return [(slice(g * Cg, (g + 1) * Cg), slice(g * Fg, (g + 1) * Fg))
                for g in range(self.groups)]

    def loops(self, params, x, choice=None):
        from cnntui import lesson

        W, b = params[self.weight], params[self.bias]
        if self.groups == 1:
            out = lesson.conv2d_multi(x, W, b, stride=self.stride, padding=self.padding)
        elif W.shape[1] == 1 and self.filters == x.shape[0]:
            # depthwise: the lesson's single-channel conv2d, once per channel
            out = np.stack([lesson.conv2d(x[c], W[c, 0], self.stride, self.padding) + b[c]
                            for c in range(len(x))])
        else:
            out = np.concatenate([lesson.conv2d_multi(x[cs], W[fs], b[fs], self.stride,
                                                      self.padding)
                                  for cs, fs in self._group_slices(len(x))])
        return out, x, None

    def loops_backward(self, params, dout, state):
        from cnntui import lesson

        x, W = state, params[self.weight]
        dx, dW, db = np.zeros_like(x), np.zeros_like(W), np.zeros(self.filters)
        for cs, fs in self._group_slices(len(x)):
            dx[cs], dW[fs], db[fs] = lesson.conv2d_backward(dout[fs], x[cs], W[fs],
                                                            self.stride, self.padding)
        return dx, {self.weight: dW, self.bias: db}

    def window(self, in_shape, cell):
        f, i, j = cell
        C = in_shape[0]
        g = f // (self.filters // self.groups)
        Cg = C // self.groups
        r, c = i * self.stride - self.padding, j * self.stride - self.padding
        # in the unpadded input's coordinates; rows and columns outside it are padding zeros
        return (slice(g * Cg, (g + 1) * Cg), slice(r, r + self.kernel),
                slice(c, c + self.kernel))

    def unused(self, in_shape) -> str:
        """Which padded rows and columns no window reaches, when the size does not divide."""
        parts = []
        for axis, size in (("row", in_shape[1]), ("column", in_shape[2])):
            left = (size + 2 * self.padding - self.kernel) % self.stride
            if left:
                parts.append(f"the last {left} padded {axis}{'s' if left > 1 else ''}")
        return " and ".join(parts)

    def explain(self, role, names):
        inp, out, Wn, bn = names["inp"], names["out"], self.weight, self.bias
        k, s, p = self.kernel, self.stride, self.padding
        src = f"{inp}_padded" if p else inp
        rows = f"{s}i:{s}i+{k}" if s > 1 else f"i:i+{k}"
        cols = f"{s}j:{s}j+{k}" if s > 1 else f"j:j+{k}"
        depthwise = self.groups > 1 and self.groups == self.filters
        unused = self.unused(names["inp_shape"]) if "inp_shape" in names else ""
        note = f"  ({unused} of {inp}_padded go unused)" if unused else ""
        pad = f"; {inp}_padded = {inp} with {p} zero(s) around" if p else ""
        if role == "out":
            if k == 1 and self.groups == 1:
                formula = f"{out}[f,i,j] = sum_c {inp}[c, {s}i, {s}j] * {Wn}[f,c,0,0] + {bn}[f]" \
                    if s > 1 else f"{out}[f,i,j] = sum_c {inp}[c,i,j] * {Wn}[f,c,0,0] + {bn}[f]"
            elif depthwise:
                formula = (f"{out}[c,i,j] = sum({src}[c, {rows}, {cols}] * {Wn}[c,0]) "
                           f"+ {bn}[c]{pad}")
            else:
                formula = (f"{out}[f,i,j] = sum({src}[:, {rows}, {cols}] * {Wn}[f]) "
                           f"+ {bn}[f]{pad}")
            fn = "conv2d" if depthwise else "conv2d_multi"
            return Explanation(formula + note, self._code("out", names), fn)
        dout = names["dout"]
        if role == "dW":
            if depthwise:
                f = f"{out}[c,0] = sum_ij {dout}[c,i,j] * {src}[c, {rows}, {cols}]"
            else:
                f = f"{out}[f] = sum_ij {dout}[f,i,j] * {src}[:, {rows}, {cols}]"
            return Explanation(f, self._code("dW", names), "conv2d_backward")
        if role == "db":
            return Explanation(f"{out}[f] = sum_ij {dout}[f,i,j]", self._code("db", names),
                               "conv2d_backward")
        chan = "c" if depthwise else ":"
        filt = "c" if depthwise else "f"
        target = f"{out}_padded" if p else out
        window = f"{s}i, {s}j" if k == 1 and s > 1 else "i, j" if k == 1 else f"{rows}, {cols}"
        tail = "; then the padding is cut off" if p else ""
        return Explanation(
            f"{target}[{chan}, {window}] += {dout}[{filt},i,j] * {Wn}[{filt}"
            f"{',:,0,0' if k == 1 else ''}]  (over every output cell{tail})",
            self._code("din", names), "conv2d_backward")

    def _code(self, role: str, names: dict[str, object]) -> str:
        """The lesson's calls that compute this tensor for one image, runnable as shown."""
        inp, out, Wn, bn = names["inp"], names["out"], self.weight, self.bias
        s, p = self.stride, self.padding
        C = names["inp_shape"][0]
        Cg, Fg = C // self.groups, self.filters // self.groups
        if role == "out":
            if self.groups == 1:
                return f"{out} = conv2d_multi({inp}, {Wn}, {bn}, stride={s}, padding={p})"
            if Cg == 1 and Fg == 1:  # depthwise: the single-channel conv2d per channel
                return (f"{out} = np.stack([conv2d({inp}[c], {Wn}[c, 0], stride={s}, "
                        f"padding={p}) + {bn}[c] for c in range({C})])")
            return (f"{out} = np.concatenate([conv2d_multi({inp}[g*{Cg}:(g+1)*{Cg}], "
                    f"{Wn}[g*{Fg}:(g+1)*{Fg}], {bn}[g*{Fg}:(g+1)*{Fg}], stride={s}, "
                    f"padding={p}) for g in range({self.groups})])")
        dout = names["dout"]
        k = {"din": 0, "dW": 1, "db": 2}[role]
        if self.groups == 1:
            return f"{out} = conv2d_backward({dout}, {inp}, {Wn}, stride={s}, padding={p})[{k}]"
        if Cg == 1 and Fg == 1:  # depthwise: each channel with its own kernel
            return (f"{out} = np.concatenate([conv2d_backward({dout}[c:c+1], {inp}[c:c+1], "
                    f"{Wn}[c:c+1], stride={s}, padding={p})[{k}] for c in range({C})])")
        return (f"{out} = np.concatenate([conv2d_backward({dout}[g*{Fg}:(g+1)*{Fg}], "
                f"{inp}[g*{Cg}:(g+1)*{Cg}], {Wn}[g*{Fg}:(g+1)*{Fg}], stride={s}, "
                f"padding={p})[{k}] for g in range({self.groups})])")


@dataclass(frozen=True)
class ReLU(Layer):
    kind: ClassVar[str] = "relu"
    choice_key: ClassVar[str | None] = "mask"

    def forward(self, params, x):
        return ops.relu(x)

    def backward(self, params, dout, cache):
        return ops.relu_backward(dout, cache), {}

    def choice(self, cache):
        return cache

    def torch(self, params, h, choice=None, own=None):
        import torch

        if own is not None:
            own[self.name] = (h > 0).detach().numpy()[0]
        if choice is None:
            return torch.relu(h)
        mask = torch.from_numpy(np.asarray(choice, dtype=bool)[None])
        return torch.where(mask, h, torch.zeros((), dtype=h.dtype))

    def loops(self, params, x, choice=None):
        own = x > 0
        mask = own if choice is None else np.asarray(choice, dtype=bool)
        return (np.maximum(0, x) if choice is None else np.where(mask, x, 0.0)), mask, own

    def loops_backward(self, params, dout, state):
        return dout * state, {}

    def explain(self, role, names):
        out, inp = names["out"], names["inp"]
        if role == "out":
            return Explanation(f"{out} = max(0, {inp})", f"{out} = np.maximum(0, {inp})")
        return Explanation(f"{out} = {names['dout']} * ({inp} > 0)",
                           f"{out} = {names['dout']} * ({inp} > 0)")


@dataclass(frozen=True)
class MaxPool(Layer):
    size: int = 2
    stride: int = 2

    kind: ClassVar[str] = "pool"
    choice_key: ClassVar[str | None] = "argmax"

    def output_shape(self, in_shape):
        C, H, W = in_shape
        return (C, (H - self.size) // self.stride + 1, (W - self.size) // self.stride + 1)

    def forward(self, params, x):
        return ops.maxpool2d(x, size=self.size, stride=self.stride)

    def backward(self, params, dout, cache):
        return ops.maxpool2d_backward(dout, cache), {}

    def choice(self, cache):
        return cache[1]  # (N, C, H_out, W_out) flat index into each input map

    def torch(self, params, h, choice=None, own=None):
        import torch
        import torch.nn.functional as F

        if choice is None and own is None:
            return F.max_pool2d(h, self.size, self.stride)
        pooled, idx = F.max_pool2d(h, self.size, self.stride, return_indices=True)
        if own is not None:
            own[self.name] = idx.numpy()[0]
        if choice is not None:
            idx = torch.from_numpy(np.asarray(choice, dtype=np.int64)[None])
            pooled = h.flatten(2).gather(2, idx.flatten(2)).view_as(idx)
        return pooled

    def loops(self, params, x, choice=None):
        from cnntui import lesson

        out, idx = lesson.maxpool2d(x, self.size, self.stride)
        W = x.shape[-1]
        own = idx[..., 0] * W + idx[..., 1]
        if choice is not None:
            flat = np.asarray(choice)
            out = np.take_along_axis(x.reshape(len(x), -1), flat.reshape(len(x), -1), 1
                                     ).reshape(out.shape)
            idx = np.stack(np.divmod(flat, W), axis=-1)
        return out, (idx, x.shape), own

    def loops_backward(self, params, dout, state):
        from cnntui import lesson

        idx, shape = state
        return lesson.maxpool_backward(dout, idx, shape, self.size, self.stride), {}

    def window(self, in_shape, cell):
        c, i, j = cell
        s, k = self.stride, self.size
        return (slice(c, c + 1), slice(i * s, i * s + k), slice(j * s, j * s + k))

    def explain(self, role, names):
        out, inp = names["out"], names["inp"]
        s, k = self.stride, self.size
        if role == "out":
            return Explanation(f"{out}[c,i,j] = max({inp}[c, {s}i:{s}i+{k}, {s}j:{s}j+{k}])",
                               f"{out} = maxpool2d({inp}, pool_size={k}, stride={s})[0]",
                               "maxpool2d")
        return Explanation(f"{out} = {names['dout']} routed to the argmax of each window, "
                           f"0 elsewhere",
                           f"{out} = maxpool_backward({names['dout']}, maxpool2d({inp}, {k}, {s})"
                           f"[1], {inp}.shape, {k}, {s})", "maxpool_backward")


@dataclass(frozen=True)
class Flatten(Layer):
    kind: ClassVar[str] = "flatten"

    def output_shape(self, in_shape):
        return (int(np.prod(in_shape)),)

    def forward(self, params, x):
        return x.reshape(x.shape[0], -1), x.shape

    def backward(self, params, dout, cache):
        return dout.reshape(cache), {}

    def torch(self, params, h, choice=None, own=None):
        import torch

        return torch.flatten(h, 1)

    def loops(self, params, x, choice=None):
        return x.reshape(-1), x.shape, None

    def loops_backward(self, params, dout, state):
        return dout.reshape(state), {}

    def window(self, in_shape, cell):
        return tuple(slice(i, i + 1) for i in np.unravel_index(cell[0], in_shape))

    def explain(self, role, names):
        out, inp = names["out"], names["inp"]
        if role == "out":
            return Explanation(f"{out} = {inp}.reshape(-1)  (C-order: channel, row, column)",
                               f"{out} = {inp}.reshape(-1)")
        shape = names["inp_shape"]
        return Explanation(f"{out} = {names['dout']}.reshape({shape})",
                           f"{out} = {names['dout']}.reshape({shape})")


@dataclass(frozen=True)
class Linear(WeightAndBias):
    """``inp @ W + b`` as the lesson writes it: W (D, M), b (M,)."""

    features: int = 1

    kind: ClassVar[str] = "linear"

    def output_shape(self, in_shape):
        return (self.features,)

    def param_specs(self, in_shape):
        (D,) = in_shape
        return {self.weight: ParamSpec((D, self.features), "weight", D),
                self.bias: ParamSpec((self.features,), "bias", D)}

    def forward(self, params, x):
        return ops.linear(x, params[self.weight], params[self.bias])

    def backward(self, params, dout, cache):
        dx, dw, db = ops.linear_backward(dout, cache)
        return dx, {self.weight: dw, self.bias: db}

    def torch(self, params, h, choice=None, own=None):
        return h @ params[self.weight] + params[self.bias]

    def loops(self, params, x, choice=None):
        return x @ params[self.weight] + params[self.bias], x, None

    def loops_backward(self, params, dout, state):
        W = params[self.weight]
        return W @ dout, {self.weight: np.outer(state, dout), self.bias: dout.copy()}

    def window(self, in_shape, cell):
        return (slice(0, in_shape[0]),)  # every input feeds every output

    def explain(self, role, names):
        out, inp, Wn, bn = names["out"], names["inp"], self.weight, self.bias
        if role == "out":
            return Explanation(f"{out} = {inp} @ {Wn} + {bn}", f"{out} = {inp} @ {Wn} + {bn}")
        dout = names["dout"]
        return {
            "dW": Explanation(f"{out}[d,m] = {inp}[d] * {dout}[m]  (an outer product)",
                              f"{out} = np.outer({inp}, {dout})"),
            "db": Explanation(f"{out} = {dout}", f"{out} = {dout}.copy()"),
            "din": Explanation(f"{out} = {Wn} @ {dout}", f"{out} = {Wn} @ {dout}"),
        }[role]


@dataclass(frozen=True)
class SoftmaxCrossEntropy(Layer):
    """The softmax and, in the backward pass, the lesson's cross-entropy loss."""

    kind: ClassVar[str] = "softmax"

    def forward(self, params, x):
        return ops.softmax(x), None

    def torch(self, params, h, choice=None, own=None):
        import torch

        return torch.softmax(h, dim=1)

    def loops(self, params, x, choice=None):
        exp_logits = np.exp(x - x.max())
        return exp_logits / exp_logits.sum(), None, None

    def explain(self, role, names):
        out, inp = names["out"], names["inp"]
        if role == "out":
            return Explanation(f"{out} = exp({inp} - max) / sum(exp({inp} - max))",
                               f"{out} = np.exp({inp} - {inp}.max()) / "
                               f"np.exp({inp} - {inp}.max()).sum()")
        label = names["label"]
        return Explanation(f"{out} = probs - onehot({label})  "
                           f"(loss = -log(probs[{label}] + 1e-15))",
                           f"{out} = probs.copy(); {out}[label] = -np.delete(probs, label).sum()"
                           f"  # p - 1, every digit kept")
