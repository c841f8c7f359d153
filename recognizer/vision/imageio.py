"""Turning untrusted JPEG/PNG/WebP bytes into images, with the size read from the header before decoding.

Only JPEG and PNG (and WebP, for enrolment photos) are decoded, recognised by their content whatever a file is
called; every other format OpenCV knows (BMP, TIFF, PPM, EXR, …) is refused unread, so a small file announcing a
huge image (a decompression bomb) never reaches a decoder.
"""
from __future__ import annotations

import struct

import cv2
import numpy as np

MAX_PIXELS = 4096 * 4096  # a 16 MP frame; far above any desk camera


class BadImage(ValueError):
    """Bytes that are not a usable image (corrupt, not a JPEG, too large)."""


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_dimensions(data: bytes) -> tuple[int, int]:
    """(width, height) read from a JPEG's frame header, without decoding it."""
    if len(data) < 4 or data[:2] != b"\xff\xd8":
        raise BadImage("not a JPEG (missing the FFD8 start marker)")
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise BadImage("corrupt JPEG (bad marker)")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in _SOF:
            if i + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        if length < 2:
            raise BadImage("corrupt JPEG (bad segment length)")
        i += 2 + length
    raise BadImage("corrupt JPEG (no frame header)")


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_dimensions(data: bytes) -> tuple[int, int]:
    """(width, height) read from a PNG's IHDR chunk (which must come first), without decoding it."""
    if data[:8] != _PNG_SIGNATURE:
        raise BadImage("not a PNG (missing the PNG signature)")
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise BadImage("corrupt PNG (no IHDR header first)")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _check_size(kind: str, width: int, height: int, max_pixels: int) -> None:
    if width == 0 or height == 0:
        raise BadImage(f"{kind} has zero width or height")
    if width * height > max_pixels:
        raise BadImage(f"{kind} is {width}x{height}; the limit is {max_pixels} pixels")


def decode_jpeg(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode JPEG bytes to a BGR uint8 image; BadImage with a reason otherwise."""
    width, height = jpeg_dimensions(data)
    if data.rstrip(b"\x00")[-2:] != b"\xff\xd9":
        raise BadImage("truncated JPEG (no end-of-image marker)")
    _check_size("JPEG", width, height, max_pixels)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise BadImage("corrupt JPEG (could not be decoded)")
    return image


def webp_dimensions(data: bytes) -> tuple[int, int]:
    """(width, height) read from a WebP's first chunk (VP8, VP8L or VP8X), without decoding it."""
    if len(data) < 30 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise BadImage("not a WebP (missing the RIFF/WEBP header)")
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    raise BadImage("corrupt WebP (unknown first chunk)")


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode a JPEG, PNG or WebP file's bytes (enrolment photos), recognised by content, to BGR; BadImage
    otherwise (other formats too)."""
    if data[:2] == b"\xff\xd8":
        return decode_jpeg(data, max_pixels)
    if data[:8] == _PNG_SIGNATURE:
        kind, size = "PNG", png_dimensions(data)
    elif data[:4] == b"RIFF":
        kind, size = "WebP", webp_dimensions(data)
    else:
        raise BadImage("not a JPEG, PNG or WebP image")
    _check_size(kind, *size, max_pixels)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise BadImage(f"corrupt {kind} (could not be decoded)")
    return image
