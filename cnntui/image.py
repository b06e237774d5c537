"""The user's own digit: a picture file read and prepared the way MNIST's digits were made.

MNIST's recipe (LeCun et al.): the ink is cropped to its bounding box, scaled to fit a 20x20 box
keeping its aspect ratio, and placed in a 28x28 field with its centre of mass at the centre. Here
a picture is read as grey levels (alpha over a white page), dark ink on a light page is inverted
to MNIST's light ink on black, the page's own grey is taken away, and then that recipe runs; the
network's input is the lesson's standardisation of the result.

Every problem a user can cause is an ``ImageError`` whose message is one sentence naming the file.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnntui.data import IMAGE_SIZE, standardise

DIGIT_BOX = 20  # MNIST fits the ink's bounding box into 20x20 ...
MAX_SIDE = 1000  # pictures are read at most this big: a 4000x3000 photo loads in a blink
INK_FLOOR = 0.15  # the strongest ink must stand this far above the page (of 1) to be a digit
NOISE = 0.2  # ink below this fraction of the strongest is the page's noise, not the digit
FORMATS = "PNG, JPEG, PGM or .npy"


class ImageError(ValueError):
    """A picture that cannot be read or holds no digit; the message is one sentence."""


@dataclass(frozen=True)
class ImageInput:
    """A picture made into the network's input."""

    x: np.ndarray  # (1, 28, 28) float64, standardised
    digit: np.ndarray  # (28, 28) in [0, 1], ink 1: the MNIST-style digit x is made from
    original: np.ndarray  # (H, W) in [0, 1], 1 white: the picture as read
    name: str  # the file's name, for headers


def read_image(path: str | os.PathLike) -> np.ndarray:
    """A picture file as (H, W) grey levels in [0, 1], 1 being white, at most MAX_SIDE pixels a
    side. PNG, JPEG, PGM and whatever else Pillow decodes; transparency is laid over white.
    A ``.npy`` file holds one 2-D image: floats in [0, 1], or integers (or floats) in 0..255."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path} does not exist" if not path.exists()
                         else f"{path} is not a file")
    if path.suffix.lower() == ".npy":
        return _shrink_array(_read_npy(path))
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.draft("L", (MAX_SIDE, MAX_SIDE))  # JPEG decodes at 1/2, 1/4 or 1/8 scale
            im = ImageOps.exif_transpose(im)  # phone photos: the way up the camera saw it
            return _grey(im)
    except UnidentifiedImageError:
        raise ImageError(f"{path} is not a picture cnntui can read ({FORMATS})") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{path} is too many pixels to be a picture of one digit") from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated data, a broken header or chunk
        raise ImageError(f"{path} is damaged or cut short and cannot be decoded ({e})") from None


def _grey(im) -> np.ndarray:
    """A Pillow image as (H, W) float64 grey in [0, 1], shrunk to at most MAX_SIDE a side."""
    from PIL import Image

    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info:
        im = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im)
    if im.mode.startswith("I"):  # 16-bit PNG (I;16) or PGM (I); F keeps every level
        deep = im.mode.startswith("I;16") or np.asarray(im).max() > 255
        im, scale = im.convert("F"), 65535.0 if deep else 255.0
    elif im.mode == "F":
        scale = 1.0
    else:
        im, scale = im.convert("L"), 255.0
    factor = math.ceil(max(im.size) / MAX_SIDE)
    if factor > 1:
        im = im.reduce(factor)  # box average: ink strokes stay, speckle fades
    grey = np.asarray(im, dtype=np.float64) / scale
    if not np.isfinite(grey).all():
        raise ValueError("it holds NaN or infinite levels")
    return np.clip(grey, 0.0, 1.0)


def _read_npy(path: Path) -> np.ndarray:
    try:
        a = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ImageError(f"{path} is not a readable .npy array ({e})") from None
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "biuf":
        raise ImageError(f"{path} holds {a.dtype} values; a picture needs numbers")
    a = np.squeeze(a)
    if a.ndim != 2 or min(a.shape) < 2:
        raise ImageError(f"{path} holds an array of shape {a.shape}; "
                         "a picture is one 2-D array (H, W)")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ImageError(f"{path} holds NaN or infinite values")
    if a.min() < 0 or a.max() > 255:
        raise ImageError(f"{path} holds values from {a.min():.4g} to {a.max():.4g}; "
                         "a picture's levels are in [0, 1] or 0..255")
    return a / 255.0 if a.max() > 1 else a


def _shrink_array(a: np.ndarray) -> np.ndarray:
    """A large array averaged over blocks so that it is at most MAX_SIDE a side."""
    factor = math.ceil(max(a.shape) / MAX_SIDE)
    if factor == 1:
        return a
    h, w = (a.shape[0] // factor) * factor, (a.shape[1] // factor) * factor
    return a[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


def _page_level(a: np.ndarray) -> float:
    """The median of a picture's border pixels: the level of its page."""
    return float(np.median(np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]])))


def ink_of(grey: np.ndarray) -> np.ndarray:
    """Grey levels (1 white) -> ink in [0, 1] on a black page: a light page (its border's median
    above one half) is inverted, and the page's level is taken away."""
    g = np.asarray(grey, dtype=np.float64)
    ink = 1.0 - g if _page_level(g) > 0.5 else g.copy()
    page = _page_level(ink)
    return np.clip((ink - page) / max(1.0 - page, 1e-12), 0.0, 1.0)


def prepare_digit(grey: np.ndarray, name: str = "the picture") -> np.ndarray:
    """A picture's grey levels (1 white) -> MNIST's (28, 28) digit with ink 1: inverted if dark
    on light, cropped to the ink, fitted to 20x20 keeping its aspect ratio, its centre of mass
    put at the centre (moved less where that would cut ink off)."""
    ink = ink_of(grey)
    strongest = ink.max()
    if strongest < INK_FLOOR:
        raise ImageError(f"{name} has no ink: draw or write a digit that stands out "
                         "from the page")
    ink[ink < NOISE * strongest] = 0.0
    rows, cols = np.nonzero(ink)
    ink = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1] / strongest
    h, w = ink.shape
    scale = DIGIT_BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # Pillow's (width, height)
    from PIL import Image

    # Pillow's bilinear filter widens with the scale, so shrinking averages (anti-aliases)
    fitted = np.asarray(Image.fromarray(ink.astype(np.float32))
                        .resize(size, Image.Resampling.BILINEAR), dtype=np.float64)
    fitted = np.clip(fitted, 0.0, 1.0)
    if fitted.max() <= 0:  # a speck too thin to survive the fitting
        raise ImageError(f"{name} has no ink that survives fitting it to 20x20")
    fitted /= fitted.max()
    fh, fw = fitted.shape
    mass = fitted.sum()
    cy = (fitted.sum(axis=1) @ np.arange(fh)) / mass
    cx = (fitted.sum(axis=0) @ np.arange(fw)) / mass
    centre = IMAGE_SIZE / 2  # row and column 14, where MNIST's own digits have theirs (medians
    # over its training set: 13.98 and 14.01), not the field's geometric middle 13.5
    top = min(max(round(centre - cy), 0), IMAGE_SIZE - fh)
    left = min(max(round(centre - cx), 0), IMAGE_SIZE - fw)
    digit = np.zeros((IMAGE_SIZE, IMAGE_SIZE))
    digit[top:top + fh, left:left + fw] = fitted
    return digit


def input_from_digit(grey: np.ndarray, name: str) -> ImageInput:
    """Grey levels (a picture's, or a drawing's with ink 1) -> the network's input."""
    grey = np.asarray(grey, dtype=np.float64)
    digit = prepare_digit(grey, name)
    return ImageInput(standardise(digit), digit, grey, name)


def load_input(path: str | os.PathLike) -> ImageInput:
    """A picture file -> the network's input, prepared as MNIST's digits were."""
    return input_from_digit(read_image(path), Path(path).name)


def read_drawing(path: str | os.PathLike) -> np.ndarray:
    """A picture file -> a (28, 28) drawing with ink 1: a 28x28 picture as it is (inverted if
    dark on light, as a saved drawing loads back), a bigger one prepared as MNIST's digits."""
    grey = read_image(path)
    if grey.shape == (IMAGE_SIZE, IMAGE_SIZE):
        return ink_of(grey) if _page_level(grey) > 0.5 else grey
    return prepare_digit(grey, Path(path).name)


def save_png(path: str | os.PathLike, digit: np.ndarray) -> Path:
    """Save a drawing (ink 1) as an 8-bit PNG, light ink on black as MNIST's digits are, written
    whole or not at all. A name without a suffix gets ``.png``; returns the path written."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ImageError(f"{path} is a folder; give a file name ending in .png")
    if path.suffix == "":
        path = path.with_suffix(".png")
    if path.suffix.lower() != ".png":
        raise ImageError(f"{path} is not a .png name; drawings are saved as PNG")
    if not path.parent.is_dir():
        raise ImageError(f"the folder {path.parent} does not exist")
    from PIL import Image

    levels = np.round(np.clip(np.asarray(digit, dtype=np.float64), 0, 1) * 255).astype(np.uint8)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        # os.open with 0o666 lets the umask decide the file's mode, as for any file the user saves
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666), "wb") as f:
            Image.fromarray(levels).save(f, format="PNG")
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise ImageError(f"{path} could not be written ({e.strerror or e})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
