"""scikit-learn's handwritten digits (1797 images, shipped inside the package), zoomed to 28x28.

Each 8x8 image is zoomed as the lesson's ``scipy.ndimage.zoom(img, 3.5, order=1)`` does (bilinear,
corners aligned) and standardised on its own: ``(img - img.mean()) / (img.std() + 1e-5)``.
The zoom is done here in NumPy, for all digits at once: importing scipy.ndimage alone takes longer
than the app may take to open. It equals scipy's to a few ulps (scipy's own result varies by as
much between its SIMD and scalar paths); the tests hold it to 1e-13.

The fixed split: ``train_test_split(indices, test_size=0.2, stratify=labels, random_state=0)``,
1437 training and 360 test images; every digit is addressed by its index in the full set.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

import numpy as np

IMAGE_SIZE = 28
ZOOM = 3.5


def zoom_bilinear(images: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """(..., n, n) -> (..., size, size) by linear interpolation with the corner pixels aligned:
    output pixel k samples the input at k * (n - 1) / (size - 1), as scipy's zoom with order=1."""
    images = np.asarray(images, dtype=np.float64)
    n = images.shape[-1]
    pos = np.arange(size) * ((n - 1) / (size - 1))
    lo = np.minimum(np.floor(pos).astype(np.intp), n - 2)
    w1 = pos - lo
    w0 = 1 - w1
    r0, r1, c0, c1 = lo[:, None], lo[:, None] + 1, lo[None, :], lo[None, :] + 1
    # scipy's order of operations: each corner value times its row weight, then its column weight
    return (images[..., r0, c0] * w0[:, None] * w0[None, :]
            + images[..., r0, c1] * w0[:, None] * w1[None, :]
            + images[..., r1, c0] * w1[:, None] * w0[None, :]
            + images[..., r1, c1] * w1[:, None] * w1[None, :])


def standardise(img: np.ndarray) -> np.ndarray:
    """Images (..., H, W) -> the network's (..., 1, H, W) inputs, each image standardised by its
    own mean and standard deviation as the lesson does: ``(img - mean) / (std + 1e-5)``."""
    img = np.asarray(img, dtype=np.float64)
    mean = img.mean(axis=(-2, -1), keepdims=True)
    std = img.std(axis=(-2, -1), keepdims=True)
    return ((img - mean) / (std + 1e-5))[..., np.newaxis, :, :]


def prepare(img8: np.ndarray) -> np.ndarray:
    """8x8 digits (..., 8, 8) -> the lesson's standardised (..., 1, 28, 28) inputs."""
    return standardise(zoom_bilinear(img8))


def _digits_csv() -> Path:
    """scikit-learn's copy of the digits, found without importing scikit-learn (which takes ~1 s,
    too long for the app's first paint)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise OSError("scikit-learn is not installed; it ships the digits data set")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"


@dataclass(frozen=True)
class Sample:
    """One input to trace: a data set's digit or the user's own image."""

    x: np.ndarray  # (1, 28, 28) float64, the network's input
    label: int | None  # None: none given (the loss is then towards the predicted class)
    name: str  # for headers: "digit #5", "MNIST #60003", "image 7.png"
    explanation: tuple[str, str]  # how x was made: (formula, NumPy line)
    index: int | None = None  # in its data set
    digit: np.ndarray | None = None  # an own image: the prepared 28x28 digit in [0, 1]
    original: np.ndarray | None = None  # an own image: the picture as read, in [0, 1]


DIGITS_EXPLANATION = ("x = (img - mean) / (std + 1e-5), zoomed 8x8 -> 28x28",
                      "x = prepare(digits.images[i])  # zoom(img, 3.5, order=1), standardise")
MNIST_EXPLANATION = ("x = (img - mean) / (std + 1e-5) with img = pixels / 255",
                     "x = prepare_mnist(mnist.raw[i])  # / 255, standardise")
IMAGE_EXPLANATION = ("x = (img - mean) / (std + 1e-5); img: ink cropped, fitted to 20x20, "
                     "centred by its mass in 28x28",
                     "x = standardise(prepare_digit(read_image(path)))")
DRAWING_EXPLANATION = (IMAGE_EXPLANATION[0], "x = standardise(prepare_digit(drawing))")


class Dataset:
    """What every data set offers: ``raw`` pixels (N, h, w) from 0 to ``raw_max``, ``labels``
    (N,), a fixed train/test split of indices into the full set, and the network's prepared
    (1, 28, 28) inputs, one (``get``) or many (``prepared``) at a time."""

    name: str  # as --data names it: digits | mnist
    title: str  # for headers: "digit" | "MNIST"
    noun: str  # for messages: "digit" | "MNIST digit"
    raw: np.ndarray
    labels: np.ndarray
    raw_max: float

    def __len__(self) -> int:
        return len(self.labels)

    def check_index(self, index: int) -> None:
        if not 0 <= index < len(self):
            raise IndexError(f"there is no {self.noun} {index}: choose an index from 0 "
                             f"to {len(self) - 1}{self.index_note}")

    index_note = ""  # how the indices are ordered, when it is not obvious

    def get(self, index: int) -> tuple[np.ndarray, int]:
        """The (1, 28, 28) image and label of digit ``index``; a clear error if out of range."""
        self.check_index(index)
        return self.prepared(np.array([index]))[0], int(self.labels[index])

    def prepared(self, indices: np.ndarray, dtype: str | np.dtype = np.float64) -> np.ndarray:
        raise NotImplementedError

    explanation = DIGITS_EXPLANATION

    def sample(self, index: int, label: int | None = -1) -> Sample:
        """Digit ``index`` as a ``Sample``; ``label`` overrides its own (None: no label)."""
        x, own = self.get(index)
        return Sample(x, own if label == -1 else label, f"{self.title} #{index}",
                      self.explanation, index)

    @property
    def train_idx(self) -> np.ndarray:
        return self.split[0]

    @property
    def test_idx(self) -> np.ndarray:
        return self.split[1]

    @property
    def split(self) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


@dataclass(frozen=True)
class Digits(Dataset):
    raw: np.ndarray  # (1797, 8, 8) the original 0..16 pixels
    labels: np.ndarray  # (1797,) int64
    name = "digits"
    title = noun = "digit"
    raw_max = 16.0

    @cached_property
    def images(self) -> np.ndarray:
        """(1797, 1, 28, 28) float64, standardised: prepared when first needed (47 ms, a tenth
        of the app's first paint, which needs one digit)."""
        images = prepare(self.raw)
        images.setflags(write=False)  # shared by everything in the process: nobody may change it
        return images

    def get(self, index: int) -> tuple[np.ndarray, int]:
        self.check_index(index)
        if "images" in self.__dict__:
            return self.images[index], int(self.labels[index])
        # numpy reduces a batch of images in another order than one image alone (its SIMD
        # loop runs across the images): 8 copies take the batch's path, so these are the
        # numbers preparing them all gives, bit for bit (a test holds it for every digit)
        x = prepare(np.repeat(self.raw[index:index + 1], 8, axis=0))[0]
        x.setflags(write=False)
        return x, int(self.labels[index])

    def prepared(self, indices: np.ndarray, dtype: str | np.dtype = np.float64) -> np.ndarray:
        return self.images[indices].astype(dtype)

    @cached_property
    def split(self) -> tuple[np.ndarray, np.ndarray]:
        """(train indices, test indices) of the fixed split; 1437 and 360 digits."""
        from sklearn.model_selection import train_test_split

        train, test = train_test_split(np.arange(len(self)), test_size=0.2,
                                       stratify=self.labels, random_state=0)
        train.setflags(write=False)
        test.setflags(write=False)
        return train, test

    def test_indices(self) -> np.ndarray:
        """``test_idx`` without importing scikit-learn (the app's first paint needs it)."""
        return stratified_test_indices(self.labels)


def prepare_mnist(raw: np.ndarray, dtype: str | np.dtype = np.float64) -> np.ndarray:
    """MNIST's 0..255 pixels (..., 28, 28) -> inputs (..., 1, 28, 28): ``x = img / 255``, then
    standardised per image as the lesson does the digits."""
    return standardise(np.asarray(raw, dtype=np.float64) / 255).astype(dtype, copy=False)


@dataclass(frozen=True)
class Mnist(Dataset):
    """MNIST's 70,000 digits: its own 60,000 training digits first, then its 10,000 test
    digits. Only the uint8 pixels are held (memory-mapped from a cache); inputs are prepared
    when asked for, since all 70,000 in float64 would take 440 MB."""

    raw: np.ndarray  # (N, 28, 28) uint8
    labels: np.ndarray  # (N,) int64
    n_train: int
    source: str  # where the files came from, for messages
    name = "mnist"
    title = "MNIST"
    noun = "MNIST digit"
    raw_max = 255.0
    explanation = MNIST_EXPLANATION

    @property
    def index_note(self) -> str:
        return (f" (0-{self.n_train - 1} are MNIST's training digits, {self.n_train}-"
                f"{len(self) - 1} its test digits)")

    def prepared(self, indices: np.ndarray, dtype: str | np.dtype = np.float64) -> np.ndarray:
        return prepare_mnist(self.raw[np.asarray(indices)], dtype)

    @cached_property
    def split(self) -> tuple[np.ndarray, np.ndarray]:
        train, test = np.arange(self.n_train), np.arange(self.n_train, len(self))
        train.setflags(write=False)
        test.setflags(write=False)
        return train, test

    def test_indices(self) -> np.ndarray:
        return self.test_idx


DATA_SETS = ("digits", "mnist")
DATA_HELP = ("digits (scikit-learn's 8x8 digits zoomed to 28x28, default) | mnist (the full "
             "MNIST, from the [mnist] extra) | mnist:DIR (MNIST's four IDX files in DIR)")


def load_dataset(spec: str = "digits") -> Dataset:
    """The data set ``--data spec`` names: ``digits``, ``mnist`` or ``mnist:DIR``."""
    name, _, folder = spec.partition(":")
    if name == "digits" and not folder:
        return load_digits()
    if name == "mnist":
        return _load_mnist(folder or None)
    from cnntui.mnist import DataError

    raise DataError(f"there is no data set {spec!r}: choose digits, mnist or mnist:DIR")


@cache
def _load_mnist(folder: str | None) -> Mnist:
    from cnntui import mnist

    arrays = mnist.load(folder)
    return Mnist(arrays.raw, arrays.labels, arrays.n_train, arrays.source)


def stratified_test_indices(labels: np.ndarray, test_size: float = 0.2,
                            random_state: int = 0) -> np.ndarray:
    """The test indices of ``train_test_split(np.arange(n), test_size=test_size,
    stratify=labels, random_state=random_state)``, sorted, computed as scikit-learn's
    StratifiedShuffleSplit does but without importing scikit-learn (~0.7 s, too long for the
    app's first paint, which needs the test split to choose its digit). The tests hold it equal
    to ``Digits.test_idx``."""
    n = len(labels)
    n_test = math.ceil(test_size * n)
    n_train = n - n_test
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    by_class = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    rng = np.random.RandomState(random_state)

    def approximate_mode(class_counts: np.ndarray, n_draws: int) -> np.ndarray:
        # sklearn.utils.extmath._approximate_mode: the floored shares, then the largest
        # remainders, ties broken by rng
        continuous = class_counts / class_counts.sum() * n_draws
        floored = np.floor(continuous)
        need = int(n_draws - floored.sum())
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1] if need > 0 else ():
            (tied,) = np.where(remainder == value)
            add = min(len(tied), need)
            floored[rng.choice(tied, size=add, replace=False)] += 1
            need -= add
            if need == 0:
                break
        return floored.astype(int)

    n_i = approximate_mode(counts, n_train)
    t_i = approximate_mode(counts - n_i, n_test)
    test = [by_class[c].take(rng.permutation(counts[c]), mode="clip")[n_i[c]:n_i[c] + t_i[c]]
            for c in range(len(counts))]
    return np.sort(np.concatenate(test))


@cache
def load_digits() -> Digits:
    """All digits, read once per process (about 10 ms; their inputs are prepared when first
    needed)."""
    table = np.loadtxt(_digits_csv(), delimiter=",")
    raw = table[:, :64].reshape(-1, 8, 8)
    labels = table[:, 64].astype(np.int64)
    for a in (raw, labels):
        a.setflags(write=False)  # shared by everything in the process: nobody may change it
    return Digits(raw, labels)


def load_sample(data: str = "digits", index: int | None = None, image: str | None = None,
                label: int | None = None) -> Sample:
    """What ``--data``, ``--index``, ``--image`` and ``--label`` ask for: the user's own image
    (prepared as MNIST's digits were; unlabelled unless ``label``) or digit ``index`` (default
    0) of the data set (its own label unless ``label``)."""
    if label is not None and not 0 <= label <= 9:
        raise ValueError(f"--label {label} is not a digit: choose 0 to 9")
    if image is not None and index is not None:
        raise ValueError("--index and --image each choose the input: give one of them")
    if image is not None:
        from cnntui.image import load_input

        got = load_input(image)
        return Sample(got.x, label, f"image {got.name}", IMAGE_EXPLANATION, None, got.digit,
                      got.original)
    return load_dataset(data).sample(index or 0, -1 if label is None else label)


def weights_data(data: str, image: str | None) -> str:
    """Which shipped weights suit the input: ``mnist`` for MNIST and own images (weights
    trained on zoomed 8x8 digits read drawn digits badly), else ``digits``."""
    return "mnist" if image is not None or data.partition(":")[0] == "mnist" else "digits"
