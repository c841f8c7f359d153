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


def test_webp_decoded_by_content_whatever_it_is_called_and_its_size_checked_first():
    """A WebP saved as .jpg (phones and browsers do that) is a photo like any other, for enrol and calibrate alike."""
    import cv2
    import numpy as np

    photo = cv2.imread(str(FIXTURES / "obama_probe.jpg"))
    for params in ([cv2.IMWRITE_WEBP_QUALITY, 90], [cv2.IMWRITE_WEBP_QUALITY, 101]):  # lossy (VP8), lossless (VP8L)
        ok, buf = cv2.imencode(".webp", photo, params)
        img = decode_image(buf.tobytes())
        assert img.shape == photo.shape
    # a VP8X header announcing 16384 x 16384: refused unread
    bomb = b"RIFF" + struct.pack("<I", 30) + b"WEBP" + b"VP8X" + struct.pack("<I", 10) + b"\0" * 4 \
        + (16383).to_bytes(3, "little") + (16383).to_bytes(3, "little")
    with pytest.raises(BadImage, match="WebP is 16384x16384"):
        decode_image(bomb)
    with pytest.raises(BadImage, match="corrupt WebP"):
        decode_image(b"RIFF" + b"\0" * 4 + b"WEBPXXXX" + b"\0" * 20)
    with pytest.raises(BadImage, match="not a JPEG, PNG or WebP"):
        decode_image(b"BM" + b"\0" * 60)
    assert np.asarray(img).dtype == np.uint8


def test_enrol_and_calibrate_agree_on_a_webp_named_jpg(engine, tmp_path):
    import cv2

    from recognizer.identity.enrol import build_index
    from recognizer.tools.calibrate import encode_photo, list_photos

    folder = tmp_path / "known" / "barack_obama"
    folder.mkdir(parents=True)
    ok, buf = cv2.imencode(".webp", cv2.imread(str(FIXTURES / "obama_probe.jpg")), [cv2.IMWRITE_WEBP_QUALITY, 90])
    (folder / "phone.jpg").write_bytes(buf.tobytes())
    index, skipped = build_index(engine, tmp_path / "known")
    assert list(index.names) == ["barack_obama"] and not skipped
    photos = list_photos(tmp_path / "known")
    assert [p.name for _, p in photos] == ["phone.jpg"] and encode_photo(engine, photos[0][1])[0] == "ok"
