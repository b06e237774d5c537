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
    from the lesson's backward functions in ``lesson_tensors``)."""

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


def lesson_tensors(params: dict[str, np.ndarray], x: np.ndarray, label: int,
                   choices: dict[str, np.ndarray] | None = None,
                   dlogits: np.ndarray | None = None, arch=None
                   ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Every forward and backward tensor of a trace computed by the lesson's loop functions in
    float64, for any architecture (default SimpleCNN) and weights, and the choices its ReLU and
    pooling layers made themselves (mask ``z > 0``; flat argmax row * W + col), by layer name.

    Each layer runs its ``loops`` twin (cnntui/layers.py): ``conv2d_multi`` with its stride, the
    single-channel ``conv2d`` per channel for a depthwise conv, ``maxpool2d``, and the lesson's
    backward functions. ``choices`` (the same keys) makes those layers follow another pass's
    choices; ``dlogits`` seeds the backward pass instead of the lesson's ``probs - onehot``."""
    from cnntui import model

    arch = arch or model.SIMPLE_CNN
    choices = choices or {}
    params = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    h = np.asarray(x, dtype=np.float64)
    tensors, states, own = {"x": h}, {}, {}
    for layer in arch.layers:
        h, states[layer.name], chose = layer.loops(params, h, choices.get(layer.name))
        if chose is not None:
            own[layer.name] = chose
        tensors[layer.out] = h
    if dlogits is None:
        dlogits = tensors[arch.layers[-1].out].copy()
        dlogits[label] -= 1
    d = tensors["d" + arch.logits] = np.array(dlogits, dtype=np.float64)
    for i in range(len(arch.layers) - 2, -1, -1):
        layer = arch.layers[i]
        d, grads = layer.loops_backward(params, d, states[layer.name])
        tensors.update({"d" + k: v for k, v in grads.items()})
        tensors["d" + model.layer_input(arch, i)] = d
    return tensors, own
