"""Reading and checking image files and zarr frames.

An image is checked completely (decoded once) when it enters the index, so that a corrupt file is
refused at the door with its name rather than failing later inside a training run.

Images are the displayed image, as every annotation tool shows them: a JPEG's EXIF orientation is
applied when it is read, and its size is the displayed (upright) size. Readers for a detector
(``fit``) decode large images reduced, never larger than the detector will use, and hand back a
:class:`Reduced` array that knows the image's full size, so positions found on it can be scaled
back to the image's own pixels.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from ..errors import BadInputError

# Refuse images above this many pixels: PIL's own bomb threshold (2 x MAX_IMAGE_PIXELS), applied
# from the header before anything is decoded.
MAX_PIXELS = 2 * 89_478_485
# Refuse zarr arrays with more frames than this: each frame becomes an image row, and a header of
# a few bytes can declare any number of them.
MAX_FRAMES = 100_000
TIFF_SUFFIXES = {".tif", ".tiff"}
ZARR_SUFFIX = ".zarr"
# EXIF orientation -> the transposition that shows the stored pixels upright (as PIL's
# ImageOps.exif_transpose); the last four turn by a quarter, so width and height swap.
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
            4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
            6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}
QUARTER_TURNS = {5, 6, 7, 8}
_CONVERT_ROWS = 256  # rows converted to uint8 at a time: bounds the float32 working copy


class Reduced(np.ndarray):
    """Pixels of an image decoded at a reduced size; ``full_size`` is the image's own
    ``(width, height)``."""

    full_size: tuple[int, int]


def full_size(array: np.ndarray) -> tuple[int, int]:
    """``(width, height)`` of the image ``array`` was decoded from: its own size unless it is
    :class:`Reduced`."""
    return getattr(array, "full_size", None) or (array.shape[1], array.shape[0])


def _with_full_size(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (array.shape[1], array.shape[0]) == tuple(size):
        return array
    reduced = array.view(Reduced)
    reduced.full_size = (int(size[0]), int(size[1]))
    return reduced


def reduction(width: int, height: int, fit: tuple[int, int] | None) -> int:
    """The largest whole factor an image can shrink by and stay no smaller than a detector with
    ``fit = (min_size, max_size)`` scales it to (torchvision scales by the smaller of
    min_size / short side and max_size / long side); 1 without ``fit``."""
    if fit is None:
        return 1
    return max(1, min(width, height) // fit[0], max(width, height) // fit[1])


def shrink(array: np.ndarray, fit: tuple[int, int] | None) -> np.ndarray:
    """``array`` sampled every ``reduction`` pixels, as a copy, so the full array can be freed."""
    height, width = array.shape[:2]
    factor = reduction(width, height, fit)
    if factor == 1:
        return array
    return _with_full_size(np.ascontiguousarray(array[::factor, ::factor]),
                           full_size(array))


def _check_size(path: Path, width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise BadInputError(f"{path}: image has no pixels ({width}x{height})")
    if width * height > MAX_PIXELS:
        raise BadInputError(
            f"{path}: image is {width}x{height} = {width * height:,} pixels, above the limit of "
            f"{MAX_PIXELS:,} (a decompression bomb or a mosaic); split it into tiles first"
        )


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn what PIL and tifffile raise for a bad file into a BadInputError naming it."""
    try:
        with warnings.catch_warnings():
            # Our own limit (MAX_PIXELS) decides; PIL's warning at half of it is not an error.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    except BadInputError:
        raise
    except Image.DecompressionBombError as exc:
        raise BadInputError(f"{path}: image is too large to be safe to decode ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise BadInputError(f"{path}: not an image file PIL can read") from exc
    except Exception as exc:  # tifffile and PIL raise many types for broken files
        raise BadInputError(f"{path}: image file is corrupt or truncated ({exc})") from exc


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise BadInputError(f"{path}: image file not found")


def _orientation(img: Image.Image) -> int:
    value = img.getexif().get(ExifTags.Base.Orientation, 1)
    return value if value in _UPRIGHT else 1


def _array_mode(img: Image.Image) -> str:
    """The mode ``img`` is read in: one numpy shows as it is (palettes and CMYK become RGB)."""
    if img.mode in ("P", "PA", "CMYK", "YCbCr", "LA", "1"):
        return "RGBA" if "A" in img.mode or "transparency" in img.info else "RGB"
    return img.mode


def exif_orientation(path: Path) -> int:
    """The EXIF orientation of an image file (1, upright, when it has none or is a TIFF)."""
    path = Path(path)
    _check_file(path)
    if path.suffix.lower() in TIFF_SUFFIXES:
        return 1
    with _reading(path), Image.open(path) as img:
        return _orientation(img)


def probe(path: Path) -> tuple[int, int, int]:
    """Return ``(width, height, channels)`` of an image file as displayed, after decoding it once.

    Raises :class:`BadInputError` naming the file when it is missing, not an image, corrupt, or
    too large.
    """
    path = Path(path)
    if path.suffix.lower() in TIFF_SUFFIXES:
        array = read_file(path)
        height, width = array.shape[:2]
        return width, height, 1 if array.ndim == 2 else array.shape[2]
    _check_file(path)
    with _reading(path), Image.open(path) as img:
        _check_size(path, *img.size)
        img.load()  # decoded once, into PIL's buffer only: a corrupt file fails here
        width, height = img.size
        if _orientation(img) in QUARTER_TURNS:
            width, height = height, width
        return width, height, Image.getmodebands(_array_mode(img))


def _tiff_shape(path: Path) -> tuple[int, ...]:
    """Shape of a TIFF's first image from its header, without decoding the pixels."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        shape = tuple(tif.series[0].shape)
    if len(shape) == 3 and shape[0] in (3, 4) and shape[2] not in (3, 4):
        shape = (*shape[1:], shape[0])
    if len(shape) not in (2, 3):
        raise BadInputError(f"{path}: TIFF of shape {shape} is not one 2D image")
    _check_size(path, shape[1], shape[0])
    return shape


def _read_pil(img: Image.Image, fit: tuple[int, int] | None) -> np.ndarray:
    """The pixels of an opened image, shown upright as its EXIF orientation says, and reduced for
    ``fit`` while decoding where the format allows (JPEG decodes at 1/2, 1/4 or 1/8)."""
    orientation = _orientation(img)
    width, height = img.size
    size = (height, width) if orientation in QUARTER_TURNS else (width, height)
    factor = reduction(width, height, fit)
    if factor > 1:
        img.draft(None, (math.ceil(width / factor), math.ceil(height / factor)))
    mode = _array_mode(img)
    if mode != img.mode:
        img = img.convert(mode)
    factor = reduction(*img.size, fit)
    if factor > 1:
        if img.mode.startswith("I;16"):
            img = img.convert("I")  # PIL reduces 32-bit grey, not 16-bit
        img = img.reduce(factor)  # the mean of each block, not one pixel of it
    if orientation in _UPRIGHT:
        img = img.transpose(_UPRIGHT[orientation])
    return _with_full_size(np.asarray(img), size)


def read_file(path: Path, *, fit: tuple[int, int] | None = None) -> np.ndarray:
    """Read an image file as displayed, an array (H, W) or (H, W, C) of its own dtype.

    With ``fit = (min_size, max_size)`` of a detector, a large image is decoded reduced (see
    :func:`reduction`) into a :class:`Reduced` array that knows the full size.
    """
    path = Path(path)
    _check_file(path)
    with _reading(path):
        if path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            shape = _tiff_shape(path)  # refuse a bomb before allocating its pixels
            array = tifffile.imread(path, series=0)
            if array.shape != shape:
                array = np.moveaxis(array, 0, -1)
            return shrink(array, fit)
        with Image.open(path) as img:
            _check_size(path, *img.size)
            return _read_pil(img, fit)


def read_stored(path: Path, kind: str, frame: int | None, *,
                fit: tuple[int, int] | None = None) -> np.ndarray:
    """The pixels of an index image from its resolved path, its media kind and its frame (a
    zarr stack's plane): what :meth:`Index.read_image` and a Ray worker, which has no index,
    both read."""
    if kind == "zarr":
        return shrink(np.asarray(open_zarr(Path(path))[frame]), fit)
    return read_file(Path(path), fit=fit)


def open_zarr(path: Path, *, new: bool = False):
    """Open a zarr array of frames (N, H, W) or (N, H, W, C) read-only, refusing headers that
    declare larger chunks than an image can be, and, for an array being added (``new``), more
    frames than ``MAX_FRAMES`` (each becomes an image row)."""
    import zarr

    try:
        array = zarr.open_array(str(path), mode="r")
    except Exception as exc:
        raise BadInputError(f"{path}: not a readable zarr array ({exc})") from exc
    if array.ndim not in (3, 4):
        raise BadInputError(
            f"{path}: zarr array of shape {array.shape} is not a stack of frames (N, H, W[, C])"
        )
    _check_size(path, array.shape[2], array.shape[1])
    channels = array.shape[3] if array.ndim == 4 else 1
    if math.prod(array.chunks) > MAX_PIXELS * channels:
        raise BadInputError(
            f"{path}: zarr chunks of shape {array.chunks} are larger than the largest image "
            f"allowed ({MAX_PIXELS:,} pixels); rechunk it by frame first"
        )
    if new and array.shape[0] > MAX_FRAMES:
        raise BadInputError(
            f"{path}: zarr array has {array.shape[0]:,} frames, above the limit of "
            f"{MAX_FRAMES:,} per array; split it into several arrays first"
        )
    return array


def to_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """Convert any image array to (H, W, 3) uint8, scaling wider integer or float ranges.

    A wider dtype is converted a block of rows at a time, so the working memory is a few rows of
    float32, not a float copy of the whole image.
    """
    size = full_size(array)
    if array.ndim == 2:
        array = array[..., None]
    array = array[..., :3] if array.shape[2] >= 3 else array[..., :1]
    if array.dtype != np.uint8:
        lo, hi = float(array.min()), float(array.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        out = np.empty(array.shape, np.uint8)
        for start in range(0, array.shape[0], _CONVERT_ROWS):
            rows = array[start:start + _CONVERT_ROWS].astype(np.float32)
            out[start:start + _CONVERT_ROWS] = ((rows - lo) * scale).clip(0, 255)
        array = out
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return _with_full_size(np.ascontiguousarray(array), size)
