"""Image helpers: open + RGB + square LANCZOS resize (what the paper's trainer and eval scripts do), and a cheap check.

The paper's code resizes every image to 384x384 with `Image.Resampling.LANCZOS` before the processor
(paper.md 3.1 / 4.3); `model.image_size` in the run config sets the size here.
"""

from __future__ import annotations

import io
import os

from PIL import Image

from clsrl_exp.errors import DataError


def load_image(path: str | os.PathLike, size: int) -> Image.Image:
    """Open an image, convert it to RGB and resize it to (size, size) with LANCZOS.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "x.png"); Image.new("L", (8, 4), 128).save(p)
    >>> im = load_image(p, 16); (im.mode, im.size)
    ('RGB', (16, 16))
    """
    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"image missing or unreadable: {path} ({type(e).__name__}: {e})") from None
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.LANCZOS)
    return rgb


def image_is_readable(path: str | os.PathLike) -> bool:
    """True if the file exists and PIL can parse it (`Image.verify()`: header + structure, no full decode).

    >>> image_is_readable("/nonexistent/x.jpg")
    False
    """
    try:
        with Image.open(path) as im:
            im.verify()
        return True
    except Exception:  # PIL raises many types for corrupt files (OSError, SyntaxError, struct.error, ...)
        return False


def image_suffix(data: bytes) -> str:
    """A file suffix for encoded image bytes (what PIL recognises them as; `.img` when it does not).

    >>> buf = io.BytesIO(); Image.new("RGB", (2, 2)).save(buf, "PNG"); image_suffix(buf.getvalue())
    '.png'
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format
    except Exception:  # noqa: BLE001 - not an image PIL knows: the reader reports it when it opens the file
        fmt = None
    return {"JPEG": ".jpg", None: ".img"}.get(fmt, f".{str(fmt).lower()}")
