"""Wire protocol between edge and recognizer: framing and message shapes, no sockets ("sans-IO").

Every message on the TCP stream is::

    uint32 body_length   (big-endian; length of everything after these 4 bytes)
    uint8  kind          (MessageKind)
    uint32 header_length (big-endian; length of the JSON header)
    bytes  header        (UTF-8 JSON object)
    bytes  payload       (the rest of the body: a JPEG image, or empty)

`body_length` is checked against the receiver's cap *before* anything is buffered, so a peer
cannot make us allocate more than the cap. A clean EOF between messages is a normal close; EOF
inside a message is `TruncatedMessage`. See docs/protocol.md for the full message catalogue.
"""
from __future__ import annotations

import enum
import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence

PROTOCOL_VERSION = 1
DEFAULT_MAX_MESSAGE = 8 * 1024 * 1024  # 8 MiB: a 1080p JPEG at high quality is ~1 MiB
MAX_HELLO = 8 * 1024  # cap on every message before the handshake succeeds: a HELLO is ~200 bytes
MAX_HEADER = 64 * 1024
MAX_DEPTH = 16  # header JSON nesting; ours is at most 3 levels deep
MAX_INT = 2**63 - 1  # header integers beyond +-this are refused (no huge-int arithmetic on peer input)

_LENGTH = struct.Struct("!I")
_PREFIX = struct.Struct("!BI")  # kind, header_length
_MIN_BODY = _PREFIX.size


class MessageKind(enum.IntEnum):
    HELLO = 0x01  # edge -> recognizer: station, login, token, protocol, credential?
    WELCOME = 0x02  # recognizer -> edge: handshake accepted
    REFUSE = 0x03  # recognizer -> edge: handshake refused, with reason; connection then closes
    FRAME = 0x10  # edge -> recognizer: seq, ts + JPEG
    RESULT = 0x11  # recognizer -> edge: seq, faces, error? + annotated JPEG
    ENROL = 0x20  # edge -> recognizer: name, request_id, grant? + JPEG
    ENROL_RESULT = 0x21  # recognizer -> edge: request_id, ok, reason
    SESSION = 0x30  # edge -> recognizer: login change
    HEARTBEAT = 0x40  # either way: ts; the recognizer echoes it
    VERIFY = 0x50  # edge -> recognizer: start (or cancel) a 1:1 sign-in face check of one identity
    VERIFY_RESULT = 0x51  # recognizer -> edge: progress of that check after each frame, then its decision
    ERROR = 0x7F  # recognizer -> edge: protocol error, with reason; connection then closes


class ProtocolError(Exception):
    """The peer sent something that breaks the protocol; the connection must be closed."""


class MessageTooLarge(ProtocolError):
    """A length field exceeds the receiver's cap."""


class MalformedMessage(ProtocolError):
    """Bytes that do not parse as a message (bad kind, bad JSON, bad header field)."""


class TruncatedMessage(ProtocolError):
    """The stream ended in the middle of a message."""


class UsageError(ValueError):
    """This program misused the protocol module (e.g. tried to send an oversized message)."""


@dataclass(frozen=True)
class Message:
    """One protocol message: its kind, a JSON-able header and an optional binary payload."""

    kind: MessageKind
    header: dict = field(default_factory=dict)
    payload: bytes = b""

    def get(self, key: str, typ: type | tuple[type, ...], default: Any = ...) -> Any:
        """Return header[key] checked against `typ`; raise MalformedMessage if absent or mistyped."""
        if key not in self.header:
            if default is not ...:
                return default
            raise MalformedMessage(f"{self.kind.name} header lacks {key!r}")
        value = self.header[key]
        # bool is an int subclass; a JSON true must not pass as a sequence number
        if isinstance(value, bool) and bool not in (typ if isinstance(typ, tuple) else (typ,)):
            raise MalformedMessage(f"{self.kind.name} header field {key!r} has the wrong type")
        if not isinstance(value, typ):
            raise MalformedMessage(f"{self.kind.name} header field {key!r} has the wrong type")
        return value


def encode(message: Message, max_size: int = DEFAULT_MAX_MESSAGE) -> bytes:
    """Serialise a message to bytes ready for one `sendall`."""
    if not isinstance(message.header, dict):
        raise UsageError("header must be a dict")
    try:
        header = json.dumps(message.header, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise UsageError(f"header is not JSON-serialisable: {exc}") from exc
    if len(header) > MAX_HEADER:
        raise UsageError(f"header is {len(header)} bytes; the limit is {MAX_HEADER}")
    try:
        _check_values(message.header)  # never send what a receiver must refuse
    except MalformedMessage as exc:
        raise UsageError(str(exc)) from None
    body_length = _PREFIX.size + len(header) + len(message.payload)
    if body_length > max_size:
        raise UsageError(f"message body is {body_length} bytes; the limit is {max_size}")
    return b"".join(
        (_LENGTH.pack(body_length), _PREFIX.pack(int(message.kind), len(header)), header, message.payload)
    )


def decode_body(body: bytes) -> Message:
    """Parse one message body (everything after the 4-byte length)."""
    if len(body) < _MIN_BODY:
        raise MalformedMessage(f"message body of {len(body)} bytes is shorter than its prefix")
    kind_value, header_length = _PREFIX.unpack_from(body)
    try:
        kind = MessageKind(kind_value)
    except ValueError:
        raise MalformedMessage(f"unknown message kind 0x{kind_value:02x}") from None
    if header_length > MAX_HEADER or _PREFIX.size + header_length > len(body):
        raise MalformedMessage(f"header length {header_length} does not fit the message")
    raw = body[_PREFIX.size : _PREFIX.size + header_length]
    try:
        header = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant) if raw else {}
    except RecursionError:
        raise MalformedMessage("header JSON is nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedMessage(f"header is not UTF-8 JSON: {exc}") from None
    if not isinstance(header, dict):
        raise MalformedMessage("header must be a JSON object")
    _check_values(header)
    return Message(kind, header, bytes(body[_PREFIX.size + header_length :]))


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _check_values(header: dict) -> None:
    """Refuse what JSON parses but no sender of ours writes: non-finite or huge numbers, lone surrogates
    (text that cannot be encoded back to UTF-8), deep nesting. Iterative, so depth cannot recurse."""
    stack: list[tuple[Any, int]] = [(header, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            if depth >= MAX_DEPTH:
                raise MalformedMessage(f"header JSON is nested deeper than {MAX_DEPTH} levels")
            stack.extend((k, depth + 1) for k in value)
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            if depth >= MAX_DEPTH:
                raise MalformedMessage(f"header JSON is nested deeper than {MAX_DEPTH} levels")
            stack.extend((v, depth + 1) for v in value)
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise MalformedMessage("header text holds a lone UTF-16 surrogate (not valid Unicode)") from None
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, int):
            if not -MAX_INT <= value <= MAX_INT:
                raise MalformedMessage("header holds an integer outside the 64-bit range")
        elif isinstance(value, float) and not math.isfinite(value):
            raise MalformedMessage("header holds a number too large to represent (infinite)")


class Decoder:
    """Incremental decoder: feed bytes as they arrive, take whole messages out.

    Holds at most one message body (bounded by `max_size`) plus one partial length field. `max_size`
    may be changed between messages (`set_max_size`): a server keeps it small until the handshake succeeds.
    """

    def __init__(self, max_size: int = DEFAULT_MAX_MESSAGE) -> None:
        if max_size < _MIN_BODY:
            raise UsageError(f"max_size must be at least {_MIN_BODY}")
        self.max_size = max_size
        self._buffer = bytearray()
        self._need: Optional[int] = None  # body length of the message being read
        self._eof = False

    def feed(self, data: bytes) -> None:
        """Add received bytes. An empty `data` means the peer closed the stream."""
        if self._eof:
            raise UsageError("feed() after end of stream")
        if not data:
            self._eof = True
            return
        self._buffer += data
        self._check_length()

    def _check_length(self) -> None:
        if self._need is None and len(self._buffer) >= _LENGTH.size:
            (need,) = _LENGTH.unpack_from(self._buffer)
            if need > self.max_size:
                raise MessageTooLarge(f"peer announced a {need}-byte message; the limit is {self.max_size}")
            if need < _MIN_BODY:
                raise MalformedMessage(f"peer announced a {need}-byte message, below the minimum {_MIN_BODY}")
            self._need = need

    def set_max_size(self, max_size: int) -> None:
        """Change the cap for messages whose length has not been read yet (e.g. raise it after the handshake)."""
        if max_size < _MIN_BODY:
            raise UsageError(f"max_size must be at least {_MIN_BODY}")
        self.max_size = max_size

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as messages."""
        return len(self._buffer)

    def next_message(self) -> Optional[Message]:
        """Return the next complete message, or None if more bytes are needed (or the stream ended cleanly).

        Raises TruncatedMessage if the stream ended inside a message.
        """
        self._check_length()
        if self._need is not None and len(self._buffer) >= _LENGTH.size + self._need:
            end = _LENGTH.size + self._need
            body = bytes(self._buffer[_LENGTH.size : end])
            del self._buffer[:end]
            self._need = None  # the next length is checked on the next call, against the cap in force then
            return decode_body(body)
        if self._eof and self._buffer:
            raise TruncatedMessage(f"stream ended inside a message ({len(self._buffer)} bytes pending)")
        return None

    @property
    def closed(self) -> bool:
        """True once the peer closed cleanly and every message has been taken out."""
        return self._eof and not self._buffer

    def messages(self) -> Iterator[Message]:
        """Yield every complete message currently buffered."""
        while (msg := self.next_message()) is not None:
            yield msg


# ---- message builders: one place that knows each message's header fields ----


def hello(station: str, login: str, token: str, client: str = "facemon-edge", credential: str = "",
          annotate: bool = True) -> Message:
    """`credential`: the station's own token (its dashboard token), which binds `station` (docs/trust.md).
    `annotate` False: RESULTs come without the annotated JPEG, the edge draws the boxes from `faces` itself."""
    header = {"protocol": PROTOCOL_VERSION, "station": station, "login": login, "token": token, "client": client}
    if credential:
        header["credential"] = credential
    if not annotate:
        header["annotate"] = False  # absent (older edges): annotated
    return Message(MessageKind.HELLO, header)


def welcome(server: str, max_in_flight: int, heartbeat_s: float, max_fps: float = 0.0) -> Message:
    """`max_fps`: frames a second the edge may send (the recognizer's fair share for it; 0: not said, no limit)."""
    header = {"protocol": PROTOCOL_VERSION, "server": server, "max_in_flight": max_in_flight, "heartbeat_s": heartbeat_s}
    if max_fps > 0:
        header["max_fps"] = max_fps
    return Message(MessageKind.WELCOME, header)


def refuse(code: str, reason: str) -> Message:
    return Message(MessageKind.REFUSE, {"code": code, "reason": reason})


def error(code: str, reason: str) -> Message:
    return Message(MessageKind.ERROR, {"code": code, "reason": reason})


def frame(seq: int, ts: float, jpeg: bytes) -> Message:
    return Message(MessageKind.FRAME, {"seq": seq, "ts": ts}, jpeg)


def result(seq: int, ts: float, faces: list, jpeg: bytes = b"", error: Optional[str] = None, **extra: Any) -> Message:
    header: dict = {"seq": seq, "ts": ts, "faces": faces, **extra}
    if error is not None:
        header["error"] = error
    return Message(MessageKind.RESULT, header, jpeg)


def enrol(request_id: str, name: str, jpeg: bytes, grant: str = "", confirm_lookalike: str = "") -> Message:
    """`grant`: the dashboard's single-use enrol grant for this station and name (who enrols comes from it).
    `confirm_lookalike`: the enrolled person an admin confirmed this face may look like (after a `looks_like`)."""
    header = {"request_id": request_id, "name": name}
    if grant:
        header["grant"] = grant
    if confirm_lookalike:
        header["confirm_lookalike"] = confirm_lookalike
    return Message(MessageKind.ENROL, header, jpeg)


def enrol_result(request_id: str, ok: bool, reason: str, name: str = "", count: int = 0, code: str = "",
                 box: Optional[Sequence[int]] = None, crop: bytes = b"", lookalike: Optional[dict] = None) -> Message:
    """The answer to ENROL. `code`: a machine-readable refusal (no_grant, grant_used, looks_like, ...) when enrolment
    was not allowed; `box` (top, right, bottom, left in the sent frame) and a JPEG `crop` (the payload) show the
    operator which face was taken; `lookalike` ({name, distance}): the enrolled person the face is within the
    accept distance of (the refusal's cause, or what an admin confirmed)."""
    header: dict = {"request_id": request_id, "ok": ok, "reason": reason, "name": name, "count": count}
    if code:
        header["code"] = code
    if box is not None:
        header["box"] = [int(v) for v in box]
    if lookalike is not None:
        header["lookalike"] = lookalike
    return Message(MessageKind.ENROL_RESULT, header, crop)


def session(login: str) -> Message:
    return Message(MessageKind.SESSION, {"login": login})


CAMERA_STATES = ("ok", "lost")


def heartbeat(ts: float, camera: Optional[dict] = None, alerts: Optional[str] = None) -> Message:
    """A heartbeat; the edge adds its camera's state: `camera` ("ok"/"lost"), `camera_error`, `camera_lost_s`
    (seconds since the last camera frame). The server echoes `ts`, adds `alerts` (what its alert outbox can do,
    `shared.alerts.OUTBOX_STATES`) when that is not "ok", and sends one unasked, with `alerts`, when it changes."""
    header: dict = {"ts": ts}
    if alerts is not None:
        header["alerts"] = alerts
    if camera is not None:
        if camera.get("state") not in CAMERA_STATES:
            raise UsageError(f"camera state must be one of {CAMERA_STATES}, got {camera.get('state')!r}")
        header["camera"] = camera["state"]
        if camera.get("error"):
            header["camera_error"] = str(camera["error"])[:300]
        if camera.get("lost_s") is not None:
            header["camera_lost_s"] = round(float(camera["lost_s"]), 2)
    return Message(MessageKind.HEARTBEAT, header)


def verify(request_id: str, identity: str, frames: int, timeout_s: float) -> Message:
    """Start a sign-in face check: the next frames are checked against `identity` only."""
    return Message(
        MessageKind.VERIFY, {"request_id": request_id, "identity": identity, "frames": frames, "timeout_s": timeout_s}
    )


def verify_cancel(request_id: str) -> Message:
    return Message(MessageKind.VERIFY, {"request_id": request_id, "cancel": True})


def verify_result(request_id: str, progress: dict) -> Message:
    """`progress`: state (pending/passed/failed), reason, message, agreeing, needed, blinked, elapsed_s, ..."""
    return Message(MessageKind.VERIFY_RESULT, {"request_id": request_id, **progress})
