"""Architectures as ordered lists of layers, their parameters by the lesson's names, and the
batched forward and backward passes that the trace, the trainer and the checks all share."""

from __future__ import annotations

import errno
import math
import os
import stat
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnntui import ops


@dataclass(frozen=True)
class Layer:
    """One layer: its kind, the tensor it produces (``out``), and its parameters' names."""

    name: str  # e.g. "conv1"
    kind: str  # conv | relu | pool | flatten | linear | softmax
    out: str  # the lesson's name of the tensor it produces, e.g. "z1"
    params: tuple[str, ...] = ()
    padding: int = 0
    stride: int = 1
    size: int = 2  # pooling window


@dataclass(frozen=True)
class Architecture:
    name: str
    input_shape: tuple[int, int, int]
    layers: tuple[Layer, ...]
    param_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def init_params(self) -> dict[str, np.ndarray]:
        """The lesson's initialisation: ``np.random.seed(42)``, then He-scaled ``randn`` for each
        weight in order, zeros for the biases."""
        rng = np.random.RandomState(42)  # the same stream as np.random.seed(42), but private
        params = {}
        for name, shape in self.param_shapes.items():
            if name.startswith("W"):
                fan_in = int(np.prod(shape[1:])) if len(shape) == 4 else shape[0]
                params[name] = rng.randn(*shape) * np.sqrt(2.0 / fan_in)
            else:
                params[name] = np.zeros(shape)
        return params


SIMPLE_CNN = Architecture(
    name="SimpleCNN",
    input_shape=(1, 28, 28),
    layers=(
        Layer("conv1", "conv", "z1", ("W1", "b1"), padding=1),
        Layer("relu1", "relu", "a1"),
        Layer("pool1", "pool", "p1", size=2, stride=2),
        Layer("conv2", "conv", "z2", ("W2", "b2"), padding=1),
        Layer("relu2", "relu", "a2"),
        Layer("pool2", "pool", "p2", size=2, stride=2),
        Layer("flatten", "flatten", "flat"),
        Layer("fc", "linear", "logits", ("W3", "b3")),
        Layer("softmax", "softmax", "probs"),
    ),
    # insertion order is the lesson's order of randn calls: W1, W2, W3
    param_shapes={"W1": (4, 1, 3, 3), "b1": (4,), "W2": (8, 4, 3, 3), "b2": (8,),
                  "W3": (392, 10), "b3": (10,)},
)

ARCHITECTURES = {SIMPLE_CNN.name: SIMPLE_CNN}


def layer_input(arch: Architecture, i: int) -> str:
    """The name of the tensor layer ``i`` reads."""
    return "x" if i == 0 else arch.layers[i - 1].out


@dataclass
class Pass:
    """Everything one forward (and optionally backward) pass produced, for a batch."""

    acts: dict[str, np.ndarray]  # x, z1, a1, ..., logits, probs (batched)
    caches: dict[str, object]  # by layer name
    loss: float | None = None
    grads: dict[str, np.ndarray] = field(default_factory=dict)  # dlogits, dW3, ... (backward order)


def forward(arch: Architecture, params: dict[str, np.ndarray], x: np.ndarray) -> Pass:
    """Run a batch ``x`` (N, C, H, W) through every layer, keeping each tensor and cache."""
    acts = {"x": x}
    caches: dict[str, object] = {}
    h = x
    for layer in arch.layers:
        if layer.kind == "conv":
            w, b = (params[p] for p in layer.params)
            h, caches[layer.name] = ops.conv2d(h, w, b, stride=layer.stride, padding=layer.padding)
        elif layer.kind == "relu":
            h, caches[layer.name] = ops.relu(h)
        elif layer.kind == "pool":
            h, caches[layer.name] = ops.maxpool2d(h, size=layer.size, stride=layer.stride)
        elif layer.kind == "flatten":
            caches[layer.name] = h.shape
            h = h.reshape(h.shape[0], -1)
        elif layer.kind == "linear":
            w, b = (params[p] for p in layer.params)
            h, caches[layer.name] = ops.linear(h, w, b)
        elif layer.kind == "softmax":
            h = ops.softmax(h)
        else:
            raise ValueError(f"unknown layer kind {layer.kind!r}")
        acts[layer.out] = h
    return Pass(acts, caches)


def backward(arch: Architecture, params: dict[str, np.ndarray], p: Pass,
             labels: np.ndarray) -> Pass:
    """Backpropagate the batch-mean loss; fills ``p.loss`` and ``p.grads`` in the lesson's order
    (for a layer with parameters: dW, db, then the gradient of its input)."""
    layers = arch.layers
    if layers[-1].kind != "softmax" or layers[-2].kind != "linear":
        raise ValueError("the backward pass expects the network to end in linear + softmax")
    labels = np.asarray(labels)
    p.loss, _, dh = ops.softmax_cross_entropy(p.acts[layers[-2].out], labels)
    grads = {"d" + layers[-2].out: dh}
    for i in range(len(layers) - 2, -1, -1):
        layer = layers[i]
        cache = p.caches[layer.name]
        if layer.kind == "conv":
            dh, dw, db = ops.conv2d_backward(dh, cache)
            grads["d" + layer.params[0]], grads["d" + layer.params[1]] = dw, db
        elif layer.kind == "linear":
            dh, dw, db = ops.linear_backward(dh, cache)
            grads["d" + layer.params[0]], grads["d" + layer.params[1]] = dw, db
        elif layer.kind == "relu":
            dh = ops.relu_backward(dh, cache)
        elif layer.kind == "pool":
            dh = ops.maxpool2d_backward(dh, cache)
        elif layer.kind == "flatten":
            dh = dh.reshape(cache)
        grads["d" + layer_input(arch, i)] = dh
    p.grads = grads
    return p


def loss_and_grads(arch: Architecture, params: dict[str, np.ndarray], x: np.ndarray,
                   labels: np.ndarray) -> Pass:
    """Forward and backward for a batch: the one call training and checking need."""
    return backward(arch, params, forward(arch, params, x), labels)


def predict(arch: Architecture, params: dict[str, np.ndarray], images: np.ndarray,
            batch_size: int = 512) -> np.ndarray:
    """The softmax probabilities (N, classes) for many images, a batch at a time (a forward pass
    keeps every activation, so one pass over all 1797 digits would hold ~100 MB)."""
    return np.concatenate([forward(arch, params, images[i:i + batch_size]).acts[arch.layers[-1].out]
                           for i in range(0, len(images), batch_size)])


def cast_params(params: dict[str, np.ndarray], dtype: np.dtype | str) -> dict[str, np.ndarray]:
    return {k: np.ascontiguousarray(v, dtype=dtype) for k, v in params.items()}


# ---- checkpoints ----------------------------------------------------------------------------


class WeightsError(ValueError):
    """A weights file that cannot be used; the message is one sentence for the user."""


def npz_path(path: str | os.PathLike) -> Path:
    """Where ``save_weights(path, ...)`` writes: ``path`` with ``.npz`` added if it lacks it."""
    path = Path(path)
    if path.suffix == ".npz":
        return path
    return path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")


def save_weights(path: str | os.PathLike, params: dict[str, np.ndarray],
                 arch: Architecture = SIMPLE_CNN, **metadata: object) -> Path:
    """Write ``params`` (and scalar metadata) to ``path`` as .npz, atomically: a temp file in the
    same directory renamed over the target, so an interrupted save never leaves half a file.
    A file saved over keeps its permission bits."""
    path = npz_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {f"meta_{k}": np.asarray(v) for k, v in metadata.items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, architecture=np.asarray(arch.name), **params, **meta)
            f.flush()
            os.fsync(f.fileno())
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask  # mkstemp makes it owner-only; a new file should not be
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _npy_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Each array's (shape, dtype) in an .npz, from the .npy headers alone: no array data is
    read, so an extra array of gigabytes costs nothing."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0,
               (2, 0): np.lib.format.read_array_header_2_0}
    headers = {}
    with zipfile.ZipFile(path) as z:
        for member in z.namelist():
            with z.open(member) as f:
                shape, _, dtype = readers[np.lib.format.read_magic(f)](f)
            headers[member.removesuffix(".npy")] = (shape, dtype)
    return headers


def _npz_read(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    arrays = {}
    with zipfile.ZipFile(path) as z:
        for name in names:
            with z.open(name + ".npy") as f:
                arrays[name] = np.lib.format.read_array(f, allow_pickle=False)
    return arrays


def _check_regular_file(path: Path) -> None:
    """Say what ``path`` is when it is not a file to read weights from; never opens it (a FIFO
    would wait for a writer forever)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        what = "is a broken symlink" if path.is_symlink() else "does not exist"
        raise WeightsError(f"weights file {path} {what}") from None
    except OSError as e:
        what = "is a symlink loop" if e.errno == errno.ELOOP else f"cannot be read: {e.strerror}"
        raise WeightsError(f"weights file {path} {what}") from None
    if stat.S_ISDIR(mode):
        raise WeightsError(f"weights file {path} is a directory, not an .npz file")
    if not stat.S_ISREG(mode):
        raise WeightsError(f"weights file {path} is not a regular file (a FIFO, socket or device)")


def load_weights(path: str | os.PathLike, arch: Architecture = SIMPLE_CNN
                 ) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """Read weights saved by ``save_weights``; returns (params as float64, metadata).

    Only the parameters ``arch`` needs and small metadata are read, each after its shape and
    dtype were checked from its header. Raises WeightsError with one clear sentence for a
    missing, corrupt or mismatched file."""
    path = Path(path)
    _check_regular_file(path)
    unreadable = WeightsError(f"weights file {path} is not a readable .npz file")
    try:
        headers = _npy_headers(path)
    except OSError as e:
        raise WeightsError(f"weights file {path} cannot be read: {e.strerror or e}") from None
    except Exception:  # zipfile and format errors all mean the same to a user
        raise unreadable from None
    saved = ["architecture"] if "architecture" in headers else []
    if saved and (headers["architecture"][0] != () or headers["architecture"][1].kind != "U"):
        raise unreadable  # a saved architecture is one string
    for name, shape in arch.param_shapes.items():
        if name not in headers:
            raise WeightsError(f"weights file {path} has no {name}, so it is not a {arch.name}")
        saved_shape, dtype = headers[name]
        if saved_shape != shape:
            raise WeightsError(f"weights file {path} has {name} shaped {saved_shape}, "
                               f"but {arch.name} needs {shape}")
        if dtype.kind != "f":
            raise WeightsError(
                f"weights file {path} has non-finite or non-numeric values in {name}")
    small_meta = [k for k, (shape, dtype) in headers.items() if k.startswith("meta_")
                  and math.prod(shape) <= 64 and dtype.kind in "biufU"]
    try:
        contents = _npz_read(path, [*arch.param_shapes, *saved, *small_meta])
    except Exception:
        raise unreadable from None
    saved_arch = str(contents.pop("architecture", arch.name))
    if saved_arch != arch.name:
        raise WeightsError(f"weights file {path} is for a {saved_arch}, not a {arch.name}")
    metadata = {k[5:]: contents[k].item() if contents[k].ndim == 0 else contents[k]
                for k in small_meta}
    params = {}
    for name in arch.param_shapes:
        value = contents[name]
        if not np.all(np.isfinite(value)):
            raise WeightsError(
                f"weights file {path} has non-finite or non-numeric values in {name}")
        params[name] = value.astype(np.float64)
    return params, metadata


PRETRAINED = "pretrained"
SEED = "seed"


def pretrained_path() -> Path:
    """Where the shipped weights live inside the installed package."""
    from importlib.resources import files

    return Path(str(files("sample_data") / "pretrained.npz"))


def weights_from(spec: str, arch: Architecture = SIMPLE_CNN) -> tuple[dict[str, np.ndarray], str]:
    """``seed`` (the lesson's initialisation), ``pretrained`` (shipped), or a path to an .npz.
    Returns (params, a short description for headers)."""
    if spec == SEED:
        return arch.init_params(), SEED
    if spec == PRETRAINED:
        path = pretrained_path()
        if not path.is_file():
            raise WeightsError("no pretrained weights are installed; use --weights seed or a path")
        return load_weights(path, arch)[0], PRETRAINED
    return load_weights(spec, arch)[0], str(spec)
