"""Image files: listing a folder, sizes from the header, RGB(A) reading and atomic writing, EXIF focal length and
exposure.

Arrays at this boundary are `(H, W, 3) uint8 RGB` (or `(H, W, 4)` with alpha). EXIF orientation is NOT
applied: pixels are returned as stored in the file, which is what COLMAP and nerfstudio see as well.
HEIC / HEIF (iPhones' default) and AVIF photos are read too (pillow-heif, Pillow): libheif turns them as
the format's own rotation says, as every viewer shows them, and their EXIF orientation then reads 1. WebP
(Pillow) is stored unturned with its EXIF orientation, as a JPEG is.
Every unreadable file raises `DataError` naming it.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import ExifTags, Image, UnidentifiedImageError

from recon3d.errors import DataError
from recon3d.io.files import atomic_write

pillow_heif.register_heif_opener()
# photo formats that COLMAP (pycolmap's Bitmap: the points' colours), browsers or nerfstudio do not all read:
# ingest decodes them to a JPEG copy
COPIED_EXTENSIONS = frozenset({".heic", ".heif", ".avif", ".webp"})
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}) | COPIED_EXTENSIONS  # lower-cased
MASKS_FOLDER = "masks"  # COLMAP-style masks beside the images (`masks/<image name>.png`), never listed


def list_images(folder: str | Path) -> list[Path]:
    """Image files under `folder`, recursively, as `folder / <relative name>`.

    Sorted by the '/'-separated name relative to `folder`. Hidden files and folders (names starting with
    '.') are skipped, and so is a `masks/` folder directly under `folder`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist", "pass a folder that holds the images")
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        top = Path(dirpath) == folder
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and not (top and d == MASKS_FOLDER)]
        for filename in filenames:
            path = Path(dirpath, filename)
            if not filename.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS:
                found[path.relative_to(folder).as_posix()] = path
    return [found[name] for name in sorted(found)]


def other_files(folder: str | Path) -> list[str]:
    """Names of the files directly in `folder` that `list_images` does not read: not hidden, not images by their
    extension (a note, a sidecar, a video beside the photos), sorted."""
    folder = Path(folder)
    return sorted(p.name for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() not in IMAGE_EXTENSIONS)


def _open(path: str | Path) -> Image.Image:
    """Open an image lazily (header only); `DataError` naming the file if it cannot be. Photos up to Pillow's
    hard limit (179 Mpx) open without its decompression-bomb warning, which it gives from 89 Mpx: medium-format
    cameras take 100-150 Mpx photos, and a photogrammetry user should not read "DOS attack" about them."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except Image.DecompressionBombError:
        raise DataError(f"image {path} declares more than {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} Mpx (Pillow's "
                        "decompression-bomb limit)", "downscale it, or remove it from the data") from None
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"cannot read image {path}: {exc}",
                        "check that the file exists and is a complete JPEG/PNG/TIFF/HEIC/WebP image, or remove it",
                        ) from exc
    except Exception as exc:  # noqa: BLE001 - whatever Pillow trips on in a user's file is a data error
        raise DataError(f"cannot read image {path} ({type(exc).__name__}: {exc})",
                        "re-export or re-copy the file, or remove it from the data") from None


SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # Pillow's modes of one 16-bit channel (PNG, TIFF)


def _decode(path: str | Path, mode: str) -> np.ndarray:
    with _open(path) as im:
        return _pixels(im, path, mode)


def _pixels(im: Image.Image, path: str | Path, mode: str) -> np.ndarray:
    """The pixels of the open image `im` (read from `path`) as uint8 in Pillow `mode`."""
    try:
        if im.mode in SIXTEEN_BIT:  # Pillow's convert clips these at 255 (a white image): scale to 8 bits
            values = np.asarray(im, dtype=np.float64)
            scale = 257.0 if values.max(initial=0) > 255 else 1.0  # mode I also holds 8-bit values
            im = Image.fromarray((values / scale).round().clip(0, 255).astype(np.uint8))
        return np.asarray(im.convert(mode), dtype=np.uint8).copy()
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt pixel data, whatever Pillow raises for it
        raise DataError(f"cannot decode image {path} ({type(exc).__name__}: {exc})",
                        "re-export or re-copy the file, or remove it from the data") from None


def image_size(path: str | Path) -> tuple[int, int]:
    """`(width, height)` in pixels from the file header, without decoding pixels.

    EXIF orientation is ignored: the size is that of the stored pixels.
    """
    with _open(path) as im:
        return im.size


def is_grey(path: str | Path) -> bool:
    """Whether the file stores one grey channel (with or without alpha; 1-, 8-, 16-bit or float), from its
    header: a black-and-white photo, whose pixels say nothing of the scene's colours."""
    with _open(path) as im:
        return im.mode in ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def read_rgb(path: str | Path) -> np.ndarray:
    """The image as `(H, W, 3) uint8 RGB`: alpha is dropped (not composited), grayscale is repeated."""
    return _decode(path, "RGB")


def read_rgba(path: str | Path) -> np.ndarray:
    """The image as `(H, W, 4) uint8 RGBA`; files without alpha get alpha 255."""
    return _decode(path, "RGBA")


def write_rgb(path: str | Path, rgb: np.ndarray) -> Path:
    """Write `rgb` (H, W, 3) uint8 atomically; the format follows the file extension."""
    return _write(path, rgb, 3)


def write_rgba(path: str | Path, rgba: np.ndarray) -> Path:
    """Write `rgba` (H, W, 4) uint8 atomically (straight alpha); the format must hold alpha (PNG)."""
    return _write(path, rgba, 4)


def _write(path: str | Path, pixels: np.ndarray, channels: int) -> Path:
    rgb = np.asarray(pixels)
    if rgb.ndim != 3 or rgb.shape[2] != channels or rgb.dtype != np.uint8:
        raise ValueError(f"pixels must be (H, W, {channels}) uint8, got {rgb.shape} {rgb.dtype}")
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot tell the image format of {path}; use one of {sorted(IMAGE_EXTENSIONS)}")
    image = Image.fromarray(rgb)
    # zlib level 1: 4x faster than Pillow's 6 on photos and renders, files within 15 % (smaller on photos)
    options = {"compress_level": 1} if fmt == "PNG" else {}
    return atomic_write(path, lambda f: image.save(f, format=fmt, **options))


def write_jpeg_copy(source: str | Path, target: str | Path, quality: int = 95) -> Path:
    """Decode `source` (any format read here) and write its RGB pixels to `target` as a JPEG of `quality`,
    atomically, with the source's EXIF (camera, focal length: what ingest reads) kept."""
    with _open(source) as im:  # opened once: its EXIF and its pixels
        exif = im.info.get("exif")
        image = Image.fromarray(_pixels(im, source, "RGB"))
    if exif and not exif.startswith(b"Exif\x00\x00"):  # WebP's bare TIFF block: a JPEG's APP1 needs the header
        exif = b"Exif\x00\x00" + exif
    options = {"exif": exif} if exif else {}
    return atomic_write(Path(target), lambda f: image.save(f, format="JPEG", quality=quality, **options))


def exif_orientation(path: str | Path) -> int:
    """The EXIF orientation tag (1 = as stored, 3 = 180 deg, 6 / 8 = a quarter turn, 2 / 4 / 5 / 7 mirrored);
    1 when the file has none."""
    with _open(path) as im:
        return int(im.getexif().get(ExifTags.Base.Orientation, 1) or 1)


def exif_camera(path: str | Path) -> str:
    """The EXIF make and model of the camera that took the photo ("Apple iPhone 7"), "" when the file has
    neither."""
    with _open(path) as im:
        exif = im.getexif()
    return " ".join(str(exif.get(tag, "")).strip("\0 ") for tag in (ExifTags.Base.Make, ExifTags.Base.Model)).strip()


def exif_focal_px(path: str | Path, width: int, height: int) -> float | None:
    """Focal length in pixels from EXIF `FocalLengthIn35mmFilm`, or None when the file does not have it.

    The 35 mm equivalent is defined on the diagonal (CIPA DC-004: the angle of view across a 36 x 24 mm
    frame's 43.3 mm diagonal), so `f_px = f35 * hypot(width, height) / hypot(36, 24)`: `f35 / 36 * max(width,
    height)` for a 3:2 photo, 4 % more for a phone's 4:3 (an iPhone 7's 28 mm: 0.809 x the longer side, where its
    lens, 3.99 mm on a 4.8 mm wide sensor, is 0.83 x; `f35 / 36` on the longer side would say 0.78 x).
    """
    with _open(path) as im:
        f35 = im.getexif().get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.FocalLengthIn35mmFilm)
    if not f35:
        return None
    return float(f35) * math.hypot(width, height) / math.hypot(36.0, 24.0)


def exif_exposure(path: str | Path) -> float | None:
    """How much light the photo let in, log2(exposure time s * ISO / f-number^2), from EXIF `ExposureTime`,
    `ISOSpeedRatings` and `FNumber` (1 when absent: a phone's fixed aperture); None without time or ISO.

    One more means a pixel twice as bright for the same scene radiance before the camera's tone curve: a phone
    on automatic exposure lets in less light for a frame holding sky than for one of shade, so one surface can
    be 15 % brighter in one photo than in the next (monstree's 23 photos span 0.9 stops)."""
    with _open(path) as im:
        exif = im.getexif().get_ifd(ExifTags.IFD.Exif)
    seconds, iso, f_number = (exif.get(tag) for tag in (ExifTags.Base.ExposureTime, ExifTags.Base.ISOSpeedRatings,
                                                        ExifTags.Base.FNumber))
    if isinstance(iso, (tuple, list)):
        iso = iso[0] if iso else None
    try:
        seconds, iso, f_number = float(seconds), float(iso), float(f_number or 1.0)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if not (seconds > 0 and iso > 0 and f_number > 0 and math.isfinite(seconds * iso / f_number**2)):
        return None
    return math.log2(seconds * iso / f_number**2)
