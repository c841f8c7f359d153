"""Untrusted image bytes: real JPEGs decode; corrupt, truncated, huge or non-JPEG data are refused."""
import struct

import pytest

from recognizer.vision.imageio import BadImage, decode_image, decode_jpeg, jpeg_dimensions
from shared.jpeg import encode_jpeg
from tests.conftest import FIXTURES, KNOWN_FACES


def real_jpeg() -> bytes:
    return (FIXTURES / "obama_probe.jpg").read_bytes()


def test_real_jpeg_dimensions_match_decoder():
    data = real_jpeg()
    img = decode_jpeg(data)
    assert jpeg_dimensions(data) == (img.shape[1], img.shape[0])


def test_roundtrip():
    img = decode_jpeg(real_jpeg())
    again = decode_jpeg(encode_jpeg(img, 90))
    assert again.shape == img.shape


@pytest.mark.parametrize("data", [b"", b"garbage", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n" + b"0" * 40])
def test_not_a_jpeg(data):
    with pytest.raises(BadImage):
        decode_jpeg(data)


def test_truncated_jpeg():
    data = real_jpeg()
    with pytest.raises(BadImage, match="truncated"):
        decode_jpeg(data[: len(data) // 2])


def test_corrupt_body_with_valid_header():
    data = bytearray(real_jpeg())
    data[600:-2] = b"\x00" * (len(data) - 602)
    try:
        img = decode_jpeg(bytes(data))
    except BadImage:
        return
    assert img.ndim == 3  # libjpeg may still produce a (grey) picture: fine, it is an image


def test_huge_dimensions_refused_before_decoding():
    data = bytearray(real_jpeg())
    # patch the SOF height/width to 60000x60000
    i = 2
    while True:
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker in (0xC0, 0xC2):
            data[i + 5 : i + 9] = struct.pack(">HH", 60000, 60000)
            break
        i += 2 + length
    with pytest.raises(BadImage, match="limit"):
        decode_jpeg(bytes(data))


def test_png_accepted_for_enrolment_images():
    png = next(KNOWN_FACES.glob("*/*.png")).read_bytes()
    assert decode_image(png).ndim == 3
