"""The lesson's own loop functions, with the lesson's names and signatures.

They are slow and obviously right: the oracle the fast layers in ``ops`` are tested against, and
the code the UI shows for a step. Single image, channels first, no batch axis.
"""

from __future__ import annotations

import numpy as np


def conv2d(input, kernel, stride=1, padding=0):
    """2D convolution of a single channel."""
    if padding > 0:
        input = np.pad(input, padding, mode='constant')
    H, W = input.shape
    kH, kW = kernel.shape
    out_H = (H - kH) // stride + 1
    out_W = (W - kW) // stride + 1
    output = np.zeros((out_H, out_W))
    for i in range(out_H):
        for j in range(out_W):
            patch = input[i*stride:i*stride+kH, j*stride:j*stride+kW]
            output[i, j] = np.sum(patch * kernel)
    return output


def conv2d_multi(input, kernels, bias=None, stride=1, padding=0):
    """
    input: (C_in, H, W)
    kernels: (C_out, C_in, kH, kW)
    bias: (C_out,) or None
    output: (C_out, H_out, W_out)
    """
    C_out, C_in, kH, kW = kernels.shape
    C, H, W = input.shape
    assert C == C_in
    if padding > 0:
        input = np.pad(input, ((0, 0), (padding, padding), (padding, padding)), mode='constant')
    _, H, W = input.shape
    out_H = (H - kH) // stride + 1
    out_W = (W - kW) // stride + 1
    output = np.zeros((C_out, out_H, out_W))
    for f in range(C_out):
        for i in range(out_H):
            for j in range(out_W):
                patch = input[:, i*stride:i*stride+kH, j*stride:j*stride+kW]
                output[f, i, j] = np.sum(patch * kernels[f])
        if bias is not None:
            output[f] += bias[f]
    return output


def maxpool2d(input, pool_size=2, stride=2):
    """Max pooling over spatial dimensions."""
    C, H, W = input.shape
    out_H = (H - pool_size) // stride + 1
    out_W = (W - pool_size) // stride + 1
    output = np.zeros((C, out_H, out_W))
    max_indices = np.zeros((C, out_H, out_W, 2), dtype=int)  # for backward pass
    for c in range(C):
        for i in range(out_H):
            for j in range(out_W):
                patch = input[c, i*stride:i*stride+pool_size, j*stride:j*stride+pool_size]
                output[c, i, j] = patch.max()
                # Store where the max came from (needed for backprop)
                max_idx = np.unravel_index(patch.argmax(), patch.shape)
                max_indices[c, i, j] = [i*stride + max_idx[0], j*stride + max_idx[1]]
    return output, max_indices


def conv2d_backward(d_output, input, kernel, stride=1, padding=0):
    """Backward pass through conv2d_multi. Returns d_input, d_kernel, d_bias."""
    C_out, C_in, kH, kW = kernel.shape
    _, out_H, out_W = d_output.shape
    if padding > 0:
        input_padded = np.pad(input, ((0, 0), (padding, padding), (padding, padding)),
                              mode='constant')
    else:
        input_padded = input
    d_kernel = np.zeros_like(kernel)
    d_input_padded = np.zeros_like(input_padded)
    d_bias = d_output.sum(axis=(1, 2))
    for f in range(C_out):
        for i in range(out_H):
            for j in range(out_W):
                # d_kernel: gradient w.r.t. the filter weights
                patch = input_padded[:, i*stride:i*stride+kH, j*stride:j*stride+kW]
                d_kernel[f] += d_output[f, i, j] * patch
                # d_input: gradient w.r.t. the input
                d_input_padded[:, i*stride:i*stride+kH, j*stride:j*stride+kW] += (
                    d_output[f, i, j] * kernel[f]
                )
    if padding > 0:
        d_input = d_input_padded[:, padding:-padding, padding:-padding]
    else:
        d_input = d_input_padded
    return d_input, d_kernel, d_bias


def maxpool_backward(d_output, max_indices, input_shape, pool_size=2, stride=2):
    """Backward pass through maxpool — gradient goes only to max locations."""
    C, H, W = input_shape
    d_input = np.zeros((C, H, W))
    C_out, out_H, out_W = d_output.shape
    for c in range(C_out):
        for i in range(out_H):
            for j in range(out_W):
                mi, mj = max_indices[c, i, j]
                d_input[c, mi, mj] += d_output[c, i, j]
    return d_input


class SimpleCNN:
    """The lesson's network, forward pass as written there (the backward pass is assembled
    from the lesson's backward functions in ``lesson_backward``)."""

    def __init__(self):
        np.random.seed(42)
        # Conv1: 1 input channel -> 4 filters, 3x3
        self.W1 = np.random.randn(4, 1, 3, 3) * np.sqrt(2.0 / 9)
        self.b1 = np.zeros(4)
        # Conv2: 4 -> 8 filters, 3x3
        self.W2 = np.random.randn(8, 4, 3, 3) * np.sqrt(2.0 / 36)
        self.b2 = np.zeros(8)
        # Fully connected: 8*7*7 -> 10 (for MNIST 28x28)
        self.W3 = np.random.randn(8 * 7 * 7, 10) * np.sqrt(2.0 / (8*7*7))
        self.b3 = np.zeros(10)

    def forward(self, x):
        """x: (1, 28, 28) single grayscale image."""
        self.x = x
        # Conv1 + ReLU + Pool
        self.z1 = conv2d_multi(x, self.W1, self.b1, padding=1)  # (4, 28, 28)
        self.a1 = np.maximum(0, self.z1)  # ReLU
        self.p1, self.p1_idx = maxpool2d(self.a1)  # (4, 14, 14)
        # Conv2 + ReLU + Pool
        self.z2 = conv2d_multi(self.p1, self.W2, self.b2, padding=1)  # (8, 14, 14)
        self.a2 = np.maximum(0, self.z2)
        self.p2, self.p2_idx = maxpool2d(self.a2)  # (8, 7, 7)
        # Flatten + FC
        self.flat = self.p2.reshape(-1)  # (392,)
        self.logits = self.flat @ self.W3 + self.b3  # (10,)
        # Softmax
        exp_logits = np.exp(self.logits - self.logits.max())
        self.probs = exp_logits / exp_logits.sum()
        return self.probs

    def loss(self, probs, label):
        return -np.log(probs[label] + 1e-15)


def lesson_backward(cnn: SimpleCNN, label: int, dlogits: np.ndarray | None = None,
                    masks: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The whole backward pass with the lesson's functions, named as the lesson names tensors.

    ``dlogits`` seeds it instead of the lesson's ``probs - onehot``, and ``masks`` (relu1/relu2
    -> where the gradient passes) replace ``z > 0``: how to follow another pass's choices."""
    masks = masks or {}
    g = {}
    if dlogits is None:
        g["dlogits"] = cnn.probs.copy()
        g["dlogits"][label] -= 1
    else:
        g["dlogits"] = np.array(dlogits, dtype=np.float64)
    g["dW3"] = np.outer(cnn.flat, g["dlogits"])
    g["db3"] = g["dlogits"].copy()
    g["dflat"] = cnn.W3 @ g["dlogits"]
    g["dp2"] = g["dflat"].reshape(cnn.p2.shape)
    g["da2"] = maxpool_backward(g["dp2"], cnn.p2_idx, cnn.a2.shape)
    g["dz2"] = g["da2"] * masks.get("relu2", cnn.z2 > 0)
    g["dp1"], g["dW2"], g["db2"] = conv2d_backward(g["dz2"], cnn.p1, cnn.W2, padding=1)
    g["da1"] = maxpool_backward(g["dp1"], cnn.p1_idx, cnn.a1.shape)
    g["dz1"] = g["da1"] * masks.get("relu1", cnn.z1 > 0)
    g["dx"], g["dW1"], g["db1"] = conv2d_backward(g["dz1"], cnn.x, cnn.W1, padding=1)
    return g


def lesson_tensors(params: dict[str, np.ndarray], x: np.ndarray, label: int,
                   choices: dict[str, np.ndarray] | None = None,
                   dlogits: np.ndarray | None = None
                   ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Every forward and backward tensor of the trace computed by the lesson's loops in float64,
    for any SimpleCNN weights, and the choices the loops made themselves: relu1/relu2 -> mask
    ``z > 0``, pool1/pool2 -> flat argmax (row * W + col).

    ``choices`` (the same keys) makes the loops follow another pass's choices from that layer on:
    ReLU keeps the chosen cells (``a = z`` there, 0 elsewhere) and pooling takes the chosen
    cell. ``dlogits`` seeds the backward pass (see ``lesson_backward``)."""
    choices = choices or {}
    cnn = SimpleCNN()
    for name, value in params.items():
        setattr(cnn, name, np.asarray(value, dtype=np.float64))
    cnn.x = x = np.asarray(x, dtype=np.float64)
    own: dict[str, np.ndarray] = {}

    def relu(layer: str, z: np.ndarray) -> np.ndarray:
        own[layer] = z > 0
        if layer not in choices:
            return np.maximum(0, z)
        return np.where(choices[layer], z, 0.0)

    def pool(layer: str, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p, idx = maxpool2d(a)
        W = a.shape[-1]
        own[layer] = idx[..., 0] * W + idx[..., 1]
        if layer not in choices:
            return p, idx
        flat = np.asarray(choices[layer])
        rows, cols = np.divmod(flat, W)
        return np.take_along_axis(a.reshape(len(a), -1), flat.reshape(len(a), -1), 1
                                  ).reshape(p.shape), np.stack([rows, cols], axis=-1)

    # SimpleCNN.forward, one line per tensor, with the choices made replaceable
    cnn.z1 = conv2d_multi(x, cnn.W1, cnn.b1, padding=1)
    cnn.a1 = relu("relu1", cnn.z1)
    cnn.p1, cnn.p1_idx = pool("pool1", cnn.a1)
    cnn.z2 = conv2d_multi(cnn.p1, cnn.W2, cnn.b2, padding=1)
    cnn.a2 = relu("relu2", cnn.z2)
    cnn.p2, cnn.p2_idx = pool("pool2", cnn.a2)
    cnn.flat = cnn.p2.reshape(-1)
    cnn.logits = cnn.flat @ cnn.W3 + cnn.b3
    exp_logits = np.exp(cnn.logits - cnn.logits.max())
    cnn.probs = exp_logits / exp_logits.sum()
    forward = {name: getattr(cnn, name)
               for name in ("x", "z1", "a1", "p1", "z2", "a2", "p2", "flat", "logits", "probs")}
    masks = {k: v for k, v in choices.items() if k.startswith("relu")}
    return {**forward, **lesson_backward(cnn, label, dlogits, masks)}, own
