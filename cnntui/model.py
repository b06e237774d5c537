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
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cnntui import layers, ops

if TYPE_CHECKING:
    from cnntui.data import Dataset


@dataclass(frozen=True)
class Architecture:
    """An input shape and a list of layers; every parameter's shape is derived from them."""

    name: str  # what a weights file records, e.g. "SimpleCNN"
    key: str  # what --arch takes, e.g. "simple"
    input_shape: tuple[int, int, int]
    layers: tuple[layers.Layer, ...]

    @cached_property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every forward tensor's shape for one image, by name: x, z1, ..."""
        shapes = {"x": tuple(self.input_shape)}
        for i, layer in enumerate(self.layers):
            shapes[layer.out] = layer.output_shape(shapes[layer_input(self, i)])
        return shapes

    @cached_property
    def param_specs(self) -> dict[str, layers.ParamSpec]:
        """Every parameter, in layer order (the order of the lesson's randn calls)."""
        specs = {}
        for i, layer in enumerate(self.layers):
            specs.update(layer.param_specs(self.shapes[layer_input(self, i)]))
        return specs

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: spec.shape for name, spec in self.param_specs.items()}

    @property
    def weights(self) -> tuple[str, ...]:
        """The parameters that are weights (not biases): He-initialised, weight-decayed."""
        return tuple(n for n, spec in self.param_specs.items() if spec.role == "weight")

    @property
    def logits(self) -> str:
        """The name of the tensor the softmax reads."""
        return self.layers[-2].out

    @cached_property
    def relu_pools(self) -> frozenset[int]:
        """Each i whose layer is a ReLU read by a max-pool: the pair runs as one fused op."""
        pairs = zip(self.layers, self.layers[1:], strict=False)
        return frozenset(i for i, (a, b) in enumerate(pairs)
                         if isinstance(a, layers.ReLU) and isinstance(b, layers.MaxPool))

    @cached_property
    def backward_order(self) -> tuple[tuple[layers.Layer, str], ...]:
        """(layer, "d" + the tensor it reads) from the last layer before the softmax to the
        first: what ``backward`` walks, made once rather than per step."""
        return tuple((self.layers[i], "d" + layer_input(self, i))
                     for i in range(len(self.layers) - 2, -1, -1))

    def layer(self, name: str) -> layers.Layer:
        return next(layer for layer in self.layers if layer.name == name)

    def init_params(self) -> dict[str, np.ndarray]:
        """The lesson's initialisation: ``np.random.seed(42)``, then He-scaled ``randn`` for each
        weight in layer order, zeros for the biases."""
        rng = np.random.RandomState(42)  # the same stream as np.random.seed(42), but private
        params = {}
        for name, spec in self.param_specs.items():
            if spec.role == "weight":
                params[name] = rng.randn(*spec.shape) * np.sqrt(2.0 / spec.fan_in)
            else:
                params[name] = np.zeros(spec.shape)
        return params


_L = layers
SIMPLE_CNN = Architecture("SimpleCNN", "simple", (1, 28, 28), (
    _L.Conv("conv1", "z1", "W1", "b1", filters=4, kernel=3, padding=1),
    _L.ReLU("relu1", "a1"),
    _L.MaxPool("pool1", "p1", size=2, stride=2),
    _L.Conv("conv2", "z2", "W2", "b2", filters=8, kernel=3, padding=1),
    _L.ReLU("relu2", "a2"),
    _L.MaxPool("pool2", "p2", size=2, stride=2),
    _L.Flatten("flatten", "flat"),
    _L.Linear("fc", "logits", "W3", "b3", features=10),
    _L.SoftmaxCrossEntropy("softmax", "probs"),
))

# the lesson's exercise: strided convolutions instead of max-pooling
STRIDED_CNN = Architecture("StridedCNN", "strided", (1, 28, 28), (
    _L.Conv("conv1", "z1", "W1", "b1", filters=4, kernel=3, stride=2, padding=1),
    _L.ReLU("relu1", "a1"),
    _L.Conv("conv2", "z2", "W2", "b2", filters=8, kernel=3, stride=2, padding=1),
    _L.ReLU("relu2", "a2"),
    _L.Flatten("flatten", "flat"),
    _L.Linear("fc", "logits", "W3", "b3", features=10),
    _L.SoftmaxCrossEntropy("softmax", "probs"),
))

# the lesson's other exercise: conv2 as a depthwise conv then a pointwise one, with no
# activation between them, as Xception does
SEPARABLE_CNN = Architecture("SeparableCNN", "separable", (1, 28, 28), (
    _L.Conv("conv1", "z1", "W1", "b1", filters=4, kernel=3, padding=1),
    _L.ReLU("relu1", "a1"),
    _L.MaxPool("pool1", "p1", size=2, stride=2),
    _L.Conv("conv2d", "z2d", "W2d", "b2d", filters=4, kernel=3, padding=1, groups=4),
    _L.Conv("conv2p", "z2", "W2p", "b2p", filters=8, kernel=1),
    _L.ReLU("relu2", "a2"),
    _L.MaxPool("pool2", "p2", size=2, stride=2),
    _L.Flatten("flatten", "flat"),
    _L.Linear("fc", "logits", "W3", "b3", features=10),
    _L.SoftmaxCrossEntropy("softmax", "probs"),
))

ARCHITECTURES = {a.key: a for a in (SIMPLE_CNN, STRIDED_CNN, SEPARABLE_CNN)}
BY_NAME = {a.name: a for a in ARCHITECTURES.values()}


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
    fused = arch.relu_pools
    skip = False
    for i, layer in enumerate(arch.layers):
        if skip:  # the pool of a fused pair, done with its ReLU
            skip = False
            continue
        if i in fused:
            pool = arch.layers[i + 1]
            (h, caches[layer.name]), (p, caches[pool.name]) = ops.relu_maxpool2d(
                h, pool.size, pool.stride)
            acts[layer.out] = h
            h = acts[pool.out] = p
            skip = True
            continue
        h, caches[layer.name] = layer.forward(params, h)
        acts[layer.out] = h
    return Pass(acts, caches)


def backward(arch: Architecture, params: dict[str, np.ndarray], p: Pass,
             labels: np.ndarray) -> Pass:
    """Backpropagate the batch-mean loss; fills ``p.loss`` and ``p.grads`` in the lesson's order
    (for a layer with parameters: dW, db, then the gradient of its input)."""
    if not isinstance(arch.layers[-1], layers.SoftmaxCrossEntropy):
        raise ValueError("the backward pass expects the network to end in a softmax")
    # the forward's probabilities: computing the softmax again would give the same array
    p.loss, _, dh = ops.softmax_cross_entropy(p.acts[arch.logits], np.asarray(labels),
                                              probs=p.acts.get(arch.layers[-1].out))
    grads = {"d" + arch.logits: dh}
    for layer, d_input in arch.backward_order:
        dh, param_grads = layer.backward(params, dh, p.caches[layer.name])
        for k, v in param_grads.items():
            grads["d" + k] = v
        grads[d_input] = dh
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


def least_sure_test_digit(arch: Architecture, params: dict[str, np.ndarray],
                          digits: Dataset | None = None) -> tuple[int, float]:
    """The test digit the network is least sure about: of the fixed split's test digits
    (``Digits.test_idx``), the one whose predicted class has the lowest probability,
    ``argmin_i max_c probs[i, c]``, ties going to the lower digit index. Returns (its index in
    the full set, that probability); one batched ``predict`` over the 360 test digits."""
    from cnntui.data import load_digits

    digits = load_digits() if digits is None else digits
    test = digits.test_indices()
    # MNIST's 10,000 test digits take ~0.7 s, too long before the first paint: the answer is
    # remembered per weights and data set (the 360 of the digits take 20 ms)
    remember = len(test) > 1000
    if remember and (hit := _remembered(arch, params, digits)) is not None:
        return hit
    confidence = predict(arch, params, digits.prepared(test)).max(axis=1)
    k = int(np.argmin(confidence))  # the first of equal minima: the lowest index
    found = int(test[k]), float(confidence[k])
    if remember:
        _remembered(arch, params, digits, found)
    return found


def _remembered(arch: Architecture, params: dict[str, np.ndarray], digits: Dataset,
                found: tuple[int, float] | None = None) -> tuple[int, float] | None:
    """Read (or, given ``found``, write) the least-sure digit for these weights and data in
    the cache folder; a cache that cannot be read or written is simply not used."""
    import hashlib
    import json
    import tempfile

    from cnntui.mnist import cache_dir

    folder = cache_dir()
    if folder is None:
        return None
    h = hashlib.sha256(f"{arch.name} {digits.name} {len(digits)} "
                       f"{getattr(digits, 'source', '')}".encode())
    for k in sorted(params):
        h.update(k.encode())
        h.update(np.ascontiguousarray(params[k], dtype=np.float64).tobytes())
    path = folder / f"least-sure-{h.hexdigest()[:24]}.json"
    if found is None:
        try:
            doc = json.loads(path.read_text())
            return int(doc["index"]), float(doc["confidence"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-least-sure-")
    except OSError:
        return None
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"index": found[0], "confidence": found[1]}, f)
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)
    return None


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
    if saved:
        try:
            saved_arch = str(_npz_read(path, saved)["architecture"])
        except Exception:
            raise unreadable from None
        if saved_arch != arch.name:
            hint = f"; use --arch {BY_NAME[saved_arch].key}" if saved_arch in BY_NAME else ""
            raise WeightsError(f"weights file {path} is for a {saved_arch}, not a {arch.name}"
                               f"{hint}")
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
    contents.pop("architecture", None)
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


def pretrained_path(arch: Architecture = SIMPLE_CNN, data: str = "digits") -> Path:
    """Where the shipped weights for ``arch`` live inside the installed package: trained on
    MNIST for ``data="mnist"`` (SimpleCNN only; the others ship weights trained on the digits)."""
    from importlib.resources import files

    if data == "mnist" and arch is SIMPLE_CNN:
        name = "pretrained-mnist.npz"
    else:
        name = "pretrained.npz" if arch is SIMPLE_CNN else f"pretrained-{arch.key}.npz"
    return Path(str(files("sample_data") / name))


def architecture_of(spec: str, key: str | None = None) -> Architecture:
    """The architecture for ``--weights spec`` and ``--arch key``: a weights file records its
    own, so ``--weights FILE`` alone picks it; ``--arch`` alone (or neither: simple) for seed
    and pretrained. A file for another architecture than ``--arch`` gets a WeightsError."""
    if key is not None and key not in ARCHITECTURES:
        raise WeightsError(f"there is no architecture {key!r}; choose one of "
                           f"{', '.join(ARCHITECTURES)}")
    wanted = ARCHITECTURES[key or SIMPLE_CNN.key]
    if spec in (SEED, PRETRAINED):
        return wanted
    path = Path(spec)
    _check_regular_file(path)
    try:
        headers = _npy_headers(path)
        saved = str(_npz_read(path, ["architecture"])["architecture"]) \
            if "architecture" in headers else None
    except Exception:  # load_weights says what is wrong with the file
        return wanted
    if saved is None or key is not None:
        return wanted  # a file without a record is the lesson's network; load_weights checks
    if saved not in BY_NAME:
        raise WeightsError(f"weights file {path} is for a {saved}, which cnntui does not know")
    return BY_NAME[saved]


def weights_from(spec: str, arch: Architecture = SIMPLE_CNN, data: str = "digits"
                 ) -> tuple[dict[str, np.ndarray], str]:
    """``seed`` (the lesson's initialisation), ``pretrained`` (shipped; trained on MNIST when
    ``data`` is mnist, which own images use too), or a path to an .npz. Returns (params, a
    short description for headers)."""
    if spec == SEED:
        return arch.init_params(), SEED
    if spec == PRETRAINED:
        path = pretrained_path(arch, data)
        if not path.is_file():
            raise WeightsError(f"no pretrained weights for {arch.name} are installed; use "
                               f"--weights seed or a path")
        desc = "pretrained-mnist" if path.name == "pretrained-mnist.npz" else PRETRAINED
        return load_weights(path, arch)[0], desc
    return load_weights(spec, arch)[0], str(spec)
