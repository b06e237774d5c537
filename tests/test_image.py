"""The user's own digit: pictures drawn by these tests (PNG, JPEG, PGM, .npy), read and prepared
as MNIST's digits were, and every bad file told in one sentence."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from cnntui import cli, image, model
from cnntui.data import standardise
from cnntui.image import ImageError, load_input, prepare_digit, read_drawing, read_image, save_png


def draw_seven(size=(300, 400), ink=(0, 0, 0), page=(255, 255, 255), width=25, mode="RGB"):
    """A seven, dark ink on a light page unless told otherwise."""
    im = Image.new(mode, size, page)
    w, h = size
    ImageDraw.Draw(im).line([(w // 6, h // 7), (5 * w // 6, h // 7), (2 * w // 5, 7 * h // 8)],
                            fill=ink, width=width)
    return im


def save(im: Image.Image, path, **kw):
    im.save(path, **kw)
    return path


def centre_of_mass(d: np.ndarray) -> tuple[float, float]:
    return ((d.sum(axis=1) @ np.arange(28)) / d.sum(), (d.sum(axis=0) @ np.arange(28)) / d.sum())


def bbox(d: np.ndarray) -> tuple[int, int]:
    rows, cols = np.nonzero(d)
    return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


@pytest.fixture(scope="module")
def mnist_weights():
    return model.weights_from(model.PRETRAINED, model.SIMPLE_CNN, "mnist")[0]


def predicted(params, x) -> int:
    return int(model.predict(model.SIMPLE_CNN, params, x[None])[0].argmax())


# ---- MNIST's recipe ---------------------------------------------------------------------------


def test_a_picture_becomes_an_mnist_digit(tmp_path):
    got = load_input(save(draw_seven(), tmp_path / "seven.png"))
    d = got.digit
    assert d.shape == (28, 28) and got.x.shape == (1, 28, 28) and got.name == "seven.png"
    assert d.min() == 0 and d.max() == 1  # light ink on black, as MNIST
    assert max(bbox(d)) == 20  # fitted to 20x20 ...
    cy, cx = centre_of_mass(d)  # ... with its centre of mass where MNIST's is
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5
    np.testing.assert_array_equal(got.x, standardise(d))  # then the lesson's standardisation
    assert got.original.shape == (400, 300) and got.original[0, 0] == 1.0  # as read: white page


def test_the_aspect_ratio_is_kept():
    page = np.ones((200, 200))
    page[20:180, 95:105] = 0  # a one: 160 tall, 10 wide
    rows, cols = bbox(prepare_digit(page))
    assert rows == 20 and cols in (1, 2)  # 10 * 20/160 = 1.25 columns, not stretched to 20


def test_dark_on_light_and_light_on_dark_give_the_same_digit(tmp_path):
    dark = read_image(save(draw_seven(), tmp_path / "a.png"))
    light = read_image(save(draw_seven(ink=(255,) * 3, page=(0,) * 3), tmp_path / "b.png"))
    np.testing.assert_allclose(dark, 1 - light)
    np.testing.assert_allclose(prepare_digit(dark), prepare_digit(light), atol=1e-6)


def test_a_grey_page_is_taken_away():
    page = np.full((100, 100), 0.8)
    page[20:80, 45:55] = 0.2  # grey ink on a grey page
    d = prepare_digit(page)
    assert d.max() == 1 and d[0].max() == 0  # the page is black, the ink full strength


def test_centre_of_mass_is_centred_even_when_the_ink_is_lopsided():
    page = np.ones((100, 100))
    page[10:90, 30:40] = 0  # a heavy bar on the left ...
    page[10:15, 30:70] = 0  # ... and a thin top stroke: the mass sits left of the box's middle
    d = prepare_digit(page)
    cy, cx = centre_of_mass(d)
    assert abs(cx - 14) <= 0.5 and abs(cy - 14) <= 0.5
    assert np.nonzero(d)[1].min() > 9  # the 10-wide box sits right of where it would be centred


def test_centring_never_cuts_ink_off():
    page = np.ones((100, 100))
    page[10:90, 10:20] = 0  # so lopsided that centring its mass would push the box out
    page[10:15, 10:90] = 0
    d = prepare_digit(page)
    assert bbox(d) == (20, 20) and d[:, -1].max() > 0  # moved only as far as the edge


def test_the_recipe_remakes_mnist_digits(mnist_weights):
    """MNIST's own test digits, blown up 10x and printed dark on a light page, come back as the
    digits they were: the weights trained on MNIST read them as they read the originals."""
    pytest.importorskip("zarr")
    from cnntui.data import load_dataset

    mnist = load_dataset("mnist")
    idx = mnist.test_indices()[:200]
    same, agree = 0, 0
    for i in idx:
        raw = mnist.raw[i].astype(np.float64) / 255
        page = 1 - np.kron(raw, np.ones((10, 10)))
        x = image.input_from_digit(page, "mnist").x
        original = predicted(mnist_weights, mnist.get(i)[0])
        agree += predicted(mnist_weights, x) == original
        same += np.corrcoef(prepare_digit(page).ravel(), raw.ravel())[0, 1] > 0.95
    assert same >= 190 and agree >= 190, (same, agree)


# ---- formats ----------------------------------------------------------------------------------


def test_png_jpeg_and_pgm_read_alike(tmp_path):
    im = draw_seven()
    png = read_image(save(im, tmp_path / "s.png"))
    jpeg = read_image(save(im, tmp_path / "s.jpg", quality=95))
    pgm = read_image(save(im.convert("L"), tmp_path / "s.pgm"))
    np.testing.assert_array_equal(png, pgm)
    assert np.abs(jpeg - png).mean() < 0.01
    assert np.abs(prepare_digit(jpeg) - prepare_digit(png)).max() < 0.15


def test_a_pgm_written_by_hand_is_read_level_for_level(tmp_path):
    levels = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    (tmp_path / "h.pgm").write_bytes(b"P5\n4 3\n255\n" + levels.tobytes())
    np.testing.assert_array_equal(read_image(tmp_path / "h.pgm"), levels / 255)


def test_sixteen_bit_png_keeps_its_levels(tmp_path):
    levels = (np.linspace(0, 65535, 30 * 40).reshape(30, 40)).astype(np.uint16)
    save(Image.fromarray(levels), tmp_path / "deep.png")
    np.testing.assert_allclose(read_image(tmp_path / "deep.png"), levels / 65535, atol=1e-7)


def test_transparency_is_laid_over_white(tmp_path):
    im = draw_seven(ink=(0, 0, 0, 255), page=(0, 0, 0, 0), mode="RGBA")  # a black, clear page
    g = read_image(save(im, tmp_path / "clear.png"))
    assert g[0, 0] == 1.0  # the clear page reads as white paper, not black
    np.testing.assert_allclose(prepare_digit(g),
                               prepare_digit(read_image(save(draw_seven(), tmp_path / "w.png"))))


def test_npy_pictures(tmp_path):
    a = np.zeros((28, 28))
    a[5:23, 12:16] = 1
    np.save(tmp_path / "f.npy", a)
    np.testing.assert_array_equal(read_image(tmp_path / "f.npy"), a)
    np.save(tmp_path / "u.npy", (a * 255).astype(np.uint8))
    np.testing.assert_array_equal(read_image(tmp_path / "u.npy"), a)
    np.save(tmp_path / "b.npy", a[None, None])  # a batch of one is one picture
    assert read_image(tmp_path / "b.npy").shape == (28, 28)


def test_a_4000x3000_photo_is_read_shrunk_and_still_reads(tmp_path, mnist_weights):
    big = draw_seven(size=(4000, 3000), ink=(25, 20, 30), page=(230, 225, 215), width=200)
    small = draw_seven(size=(400, 300), ink=(25, 20, 30), page=(230, 225, 215), width=20)
    for fmt in ("jpg", "png"):
        got = load_input(save(big, tmp_path / f"photo.{fmt}"))
        assert max(got.original.shape) <= image.MAX_SIDE
        assert predicted(mnist_weights, got.x) == 7
    np.testing.assert_allclose(load_input(save(big, tmp_path / "p.png")).digit,
                               load_input(save(small, tmp_path / "q.png")).digit, atol=0.1)


# ---- bad files: one sentence each -------------------------------------------------------------


def one_sentence(e: ImageError, path) -> str:
    msg = str(e)
    assert "\n" not in msg and str(path) in msg and "Traceback" not in msg
    return msg


@pytest.mark.parametrize("make, says", [
    (lambda p: p.write_bytes(b"hello, not a picture"), "not a picture"),
    (lambda p: p.write_bytes(b""), "not a picture"),
    (lambda p: p.write_bytes(_png_bytes()[:200]), "cut short"),
    (lambda p: p.write_bytes(_png_bytes()[:60]), "cut short"),
])
def test_corrupt_and_truncated_pictures(tmp_path, make, says):
    path = tmp_path / "bad.png"
    make(path)
    with pytest.raises(ImageError) as e:
        read_image(path)
    assert says in one_sentence(e.value, path)


def test_a_truncated_jpeg(tmp_path):
    b = io.BytesIO()
    draw_seven().save(b, format="JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(b.getvalue()[: len(b.getvalue()) // 2])
    with pytest.raises(ImageError) as e:
        read_image(path)
    assert "cut short" in one_sentence(e.value, path)


def _png_bytes() -> bytes:
    b = io.BytesIO()
    draw_seven().save(b, format="PNG")
    return b.getvalue()


@pytest.mark.parametrize("array, says", [
    (np.zeros((3, 28, 28)), "shape (3, 28, 28)"),
    (np.array([1.0, np.nan, 0.0, 1.0]).reshape(2, 2), "NaN"),
    (np.full((5, 5), 300.0), "from 300 to 300"),
    (np.full((5, 5), -1.0), "from -1 to -1"),
    (np.array([["a", "b"], ["c", "d"]]), "<U1"),
])
def test_bad_npy_arrays(tmp_path, array, says):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(ImageError) as e:
        read_image(path)
    assert says in one_sentence(e.value, path)


def test_a_pickled_npy_is_not_loaded(tmp_path):
    path = tmp_path / "p.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ImageError) as e:
        read_image(path)
    one_sentence(e.value, path)


def test_missing_files_and_folders(tmp_path):
    for path, says in ((tmp_path / "none.png", "does not exist"), (tmp_path, "not a file")):
        with pytest.raises(ImageError) as e:
            read_image(path)
        assert says in one_sentence(e.value, path)


@pytest.mark.parametrize("page", [np.ones((40, 40)), np.zeros((40, 40)), np.full((40, 40), 0.5)])
def test_a_page_with_no_ink(page):
    faint = page.copy()
    faint[10:30, 18:22] += 0.05 if page[0, 0] < 1 else -0.05  # a mark too faint to be ink
    for p in (page, faint):
        with pytest.raises(ImageError, match="has no ink"):
            prepare_digit(p, "page.png")


# ---- drawings to PNG and back -----------------------------------------------------------------


def test_a_drawing_saves_to_png_and_loads_back(tmp_path):
    rng = np.random.default_rng(0)
    drawing = np.clip(rng.random((28, 28)) * 1.3 - 0.3, 0, 1)
    path = save_png(tmp_path / "mine", drawing)
    assert path == tmp_path / "mine.png" and Image.open(path).format == "PNG"
    np.testing.assert_allclose(read_drawing(path), drawing, atol=0.5 / 255)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.png"]  # nothing half-written left


def test_a_dark_on_light_28x28_loads_as_a_drawing(tmp_path):
    d = np.zeros((28, 28))
    d[4:24, 12:16] = 1
    save(Image.fromarray(((1 - d) * 255).astype(np.uint8)), tmp_path / "page.png")
    np.testing.assert_allclose(read_drawing(tmp_path / "page.png"), d)
    save(draw_seven(), tmp_path / "big.png")  # any other size is prepared as MNIST's digits
    assert read_drawing(tmp_path / "big.png").shape == (28, 28)


def test_saving_refuses_what_it_cannot_write(tmp_path):
    d = np.zeros((28, 28))
    for path, says in ((tmp_path / "no" / "such" / "d.png", "does not exist"),
                       (tmp_path / "d.jpg", "not a .png"), (tmp_path, "is a folder")):
        with pytest.raises(ImageError, match=says):
            save_png(path, d)
    assert not (tmp_path / "no").exists()  # no folder made behind the user's back


def test_saving_over_a_file_replaces_it_whole(tmp_path):
    path = tmp_path / "d.png"
    path.write_bytes(b"old")
    d = np.eye(28)
    save_png(path, d)
    np.testing.assert_allclose(read_drawing(path), d)


# ---- the commands -----------------------------------------------------------------------------


def test_trace_an_image_unlabelled_and_labelled(tmp_path, capsys):
    path = save(draw_seven(), tmp_path / "seven.png")
    assert cli.main(["trace", "--image", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["label_given"] is False and out["prediction"] == 7
    assert "seven.png" in json.dumps(out["input"])
    assert cli.main(["trace", "--image", str(path), "--label", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["label_given"] is True and out["label"] == 1 and out["loss"] > 1


def test_an_image_is_read_with_the_mnist_weights(tmp_path, capsys):
    path = save(draw_seven(), tmp_path / "seven.png")
    assert cli.main(["trace", "--image", str(path)]) == 0
    assert "pretrained-mnist" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["trace", "verify", "explain"])
def test_a_bad_image_exits_with_one_sentence(tmp_path, capsys, command):
    path = tmp_path / "bad.png"
    path.write_bytes(_png_bytes()[:100])
    extra = ["--step", "z1", "--cell", "0,1,1"] if command == "explain" else []
    assert cli.main([command, "--image", str(path), *extra]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cut short" in err and "Traceback" not in err


def test_verify_an_image(tmp_path, capsys):
    path = save(draw_seven(), tmp_path / "seven.png")
    assert cli.main(["verify", "--image", str(path)]) == 0
    assert "seven.png" in capsys.readouterr().out
