"""Framing: whole, byte by byte, truncated, oversized, garbage, and fuzzed input."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import protocol
from shared.protocol import Decoder, Message, MessageKind

JPEG_LIKE = b"\xff\xd8" + bytes(range(256)) * 4 + b"\xff\xd9"


def sample_messages() -> list[Message]:
    return [
        protocol.hello("desk-1", "alice", "tok"),
        protocol.frame(7, 1700000000.25, JPEG_LIKE),
        protocol.result(7, 1.0, [{"box": [1, 2, 3, 4], "name": None}], JPEG_LIKE),
        protocol.enrol("r1", "Zoë O'Neil", JPEG_LIKE),
        protocol.heartbeat(3.5),
        Message(MessageKind.ERROR, {}, b""),
    ]


def test_roundtrip_whole_stream():
    msgs = sample_messages()
    d = Decoder()
    d.feed(b"".join(protocol.encode(m) for m in msgs))
    assert list(d.messages()) == msgs


def test_one_byte_at_a_time():
    msgs = sample_messages()
    data = b"".join(protocol.encode(m) for m in msgs)
    d = Decoder()
    out = []
    for i in range(len(data)):
        d.feed(data[i : i + 1])
        out.extend(d.messages())
    d.feed(b"")
    assert out == msgs
    assert d.closed


def test_length_is_big_endian_and_explicit():
    data = protocol.encode(protocol.heartbeat(1.0))
    (n,) = struct.unpack("!I", data[:4])
    assert n == len(data) - 4
    assert data[4] == MessageKind.HEARTBEAT


def test_eof_between_messages_is_clean_close():
    d = Decoder()
    d.feed(protocol.encode(protocol.heartbeat(1.0)))
    d.feed(b"")
    assert d.next_message().kind == MessageKind.HEARTBEAT
    assert d.next_message() is None and d.closed


@pytest.mark.parametrize("cut", [1, 3, 4, 5, 9, 20])
def test_eof_inside_message_is_truncated(cut):
    data = protocol.encode(protocol.frame(1, 0.0, JPEG_LIKE))
    d = Decoder()
    d.feed(data[:cut])
    d.feed(b"")
    with pytest.raises(protocol.TruncatedMessage):
        d.next_message()


def test_oversized_length_rejected_before_buffering():
    d = Decoder(max_size=1024)
    with pytest.raises(protocol.MessageTooLarge):
        d.feed(struct.pack("!I", 0xFFFFFFFF))
    assert d.buffered <= 4  # nothing beyond the length field was kept


def test_sender_refuses_to_build_oversized_message():
    with pytest.raises(protocol.UsageError):
        protocol.encode(protocol.frame(1, 0.0, b"x" * 2048), max_size=1024)


@pytest.mark.parametrize(
    "body",
    [
        b"\x99\x00\x00\x00\x00",  # unknown kind
        b"\x10\x00\x00\x00\x09{notjson}",  # bad JSON
        b"\x10\x00\x00\x00\x02[]",  # header not an object
        b"\x10\x00\x00\x10\x00{}",  # header length beyond the body
        b"\x10\x00\x00\x00\x02\xff\xfe",  # not UTF-8
    ],
)
def test_malformed_bodies(body):
    d = Decoder()
    d.feed(struct.pack("!I", len(body)) + body)
    with pytest.raises(protocol.MalformedMessage):
        d.next_message()


def test_tiny_length_is_malformed():
    d = Decoder()
    with pytest.raises(protocol.MalformedMessage):
        d.feed(struct.pack("!I", 2) + b"ab")


def test_header_field_types_checked():
    m = protocol.frame(1, 0.0, b"")
    assert m.get("seq", int) == 1
    bad = Message(MessageKind.FRAME, {"seq": True})
    with pytest.raises(protocol.MalformedMessage):
        bad.get("seq", int)
    with pytest.raises(protocol.MalformedMessage):
        Message(MessageKind.FRAME, {}).get("seq", int)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(1, 64), max_size=20))
def test_fuzz_decoder_never_crashes_or_overbuffers(data, chunks):
    """Arbitrary bytes in arbitrary chunks: only ProtocolError may come out, and buffering stays bounded."""
    d = Decoder(max_size=256)
    pos = 0
    try:
        for size in chunks + [len(data)]:
            d.feed(data[pos : pos + size]) if data[pos : pos + size] else None
            pos += size
            for msg in d.messages():
                assert isinstance(msg.header, dict)
            assert d.buffered <= 256 + 4 + 64
        d.feed(b"")
        list(d.messages())
    except protocol.ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(list(MessageKind)),
    st.dictionaries(st.text(max_size=8), st.one_of(st.integers(-protocol.MAX_INT, protocol.MAX_INT),
                                                    st.text(max_size=20), st.none()), max_size=5),
    st.binary(max_size=200),
    st.integers(1, 17),
)
def test_fuzz_roundtrip_any_chunking(kind, header, payload, step):
    msg = Message(kind, header, payload)
    data = protocol.encode(msg)
    d = Decoder()
    out = []
    for i in range(0, len(data), step):
        d.feed(data[i : i + step])
        out.extend(d.messages())
    assert out == [msg]
