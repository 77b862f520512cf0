"""Reading and checking image files and zarr frames.

An image is checked completely (decoded once) when it enters the index, so that a corrupt file is
refused at the door with its name rather than failing later inside a training run.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import BadInputError

# Refuse images above this many pixels: PIL's own bomb threshold (2 x MAX_IMAGE_PIXELS), applied
# from the header before anything is decoded.
MAX_PIXELS = 2 * 89_478_485
TIFF_SUFFIXES = {".tif", ".tiff"}
ZARR_SUFFIX = ".zarr"


def _check_size(path: Path, width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise BadInputError(f"{path}: image has no pixels ({width}x{height})")
    if width * height > MAX_PIXELS:
        raise BadInputError(
            f"{path}: image is {width}x{height} = {width * height:,} pixels, above the limit of "
            f"{MAX_PIXELS:,} (a decompression bomb or a mosaic); split it into tiles first"
        )


def probe(path: Path) -> tuple[int, int, int]:
    """Return ``(width, height, channels)`` of an image file after decoding it once.

    Raises :class:`BadInputError` naming the file when it is missing, not an image, corrupt, or
    too large.
    """
    array = read_file(path)
    height, width = array.shape[:2]
    return width, height, 1 if array.ndim == 2 else array.shape[2]


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


def read_file(path: Path) -> np.ndarray:
    """Read an image file as an array (H, W) or (H, W, C) of its own dtype."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: image file not found")
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            shape = _tiff_shape(path)  # refuse a bomb before allocating its pixels
            array = tifffile.imread(path, series=0)
            if array.shape != shape:
                array = np.moveaxis(array, 0, -1)
            return array
        with warnings.catch_warnings():
            # Our own limit (MAX_PIXELS) decides; PIL's warning at half of it is not an error.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                _check_size(path, *img.size)
                if img.mode in ("P", "PA", "CMYK", "YCbCr", "LA", "1"):
                    img = img.convert("RGBA" if "A" in img.mode or "transparency" in img.info
                                      else "RGB")
                return np.asarray(img)
    except BadInputError:
        raise
    except Image.DecompressionBombError as exc:
        raise BadInputError(f"{path}: image is too large to be safe to decode ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise BadInputError(f"{path}: not an image file PIL can read") from exc
    except Exception as exc:  # tifffile and PIL raise many types for broken files
        raise BadInputError(f"{path}: image file is corrupt or truncated ({exc})") from exc


def open_zarr(path: Path):
    """Open a zarr array of frames (N, H, W) or (N, H, W, C) read-only."""
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
    return array


def to_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """Convert any image array to (H, W, 3) uint8, scaling wider integer or float ranges."""
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[2] == 4:
        array = array[..., :3]
    if array.shape[2] == 2:
        array = array[..., :1]
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    array = array.astype(np.float32)
    lo, hi = float(array.min()), float(array.max())
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return ((array - lo) * scale).clip(0, 255).astype(np.uint8)
