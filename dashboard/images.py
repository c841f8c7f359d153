"""JPEG checks and thumbnails (Pillow, imported on first use)."""
from __future__ import annotations

import io

JPEG_MAGIC = b"\xff\xd8\xff"
THUMB_SIZE = (240, 180)
MAX_PIXELS = 40_000_000  # refuse decompression bombs long before they cost memory


class BadImage(ValueError):
    """Bytes that are not a JPEG we can decode; the message says why."""


def check_jpeg(data: bytes, what: str = "image") -> tuple[int, int]:
    """Return (width, height) of a JPEG that really decodes, else raise BadImage with a reason."""
    if not data:
        raise BadImage(f"{what} is empty")
    if not data.startswith(JPEG_MAGIC):
        raise BadImage(f"{what} is not a JPEG (it does not start with the JPEG marker FF D8 FF)")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format != "JPEG":
                raise BadImage(f"{what} is {img.format}, not JPEG")
            if img.width * img.height > MAX_PIXELS:
                raise BadImage(f"{what} is {img.width}x{img.height}, larger than {MAX_PIXELS} pixels")
            img.load()
            return img.width, img.height
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, BadImage):
            raise
        raise BadImage(f"{what} does not decode as a JPEG: {exc}") from None


def thumbnail(data: bytes) -> bytes:
    """A small JPEG (at most THUMB_SIZE) of an already checked JPEG."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        img = img.convert("RGB")
        img.thumbnail(THUMB_SIZE)
        out = io.BytesIO()
        img.save(out, format="JPEG", quality=80)
        return out.getvalue()
