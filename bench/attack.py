"""Hostile-input bench: attacks a real recognizer on loopback while one real station streams a face clip.

    python -m bench.attack [--slow 2000] [--slow-seconds 15] [--fuzz 3000] [--target HOST:PORT --pid PID --log FILE]

Starts `python -m recognizer` on a free 127.0.0.1 port (or targets a running one), streams
samples/hamilton_clip.mp4 from one legitimate station for the whole run, and in turn sends
decompression bombs (PNG 20000x20000, JPEG SOF 60000x60000, BMP), connections that buffer before the
handshake, slow connections (slowloris: one byte per second each), bad logins, bad JSON and fuzzed
messages. Prints a table per run: per phase the inputs attempted and the inputs the server accepted (read and
answered: a reply or its own close; a connection it never accepted, or an input still unanswered after the
wait, is not counted), crashes, recognizer memory (RSS of it and its children) before/peak/after, open
connections and threads, the legitimate station's frames/s and worst gap, and tracebacks in the recognizer's
log; then min / median / max over `--runs` runs (default 3, a fresh recognizer each).

The fuzz phase sends every input: each from the next of the source addresses 127.0.0.2 … 127.0.0.254 (the
recognizer slows failed handshakes per address, which stopped it at 286 of 3,000 from one address), and reads a
reply for at most `--fuzz-wait` s (a reply delayed longer for its address is not waited for: counted attempted,
not accepted). Loopback only; bounded in count and time.
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import random
import resource
import selectors
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

from shared import protocol
from shared.protocol import Message, MessageKind
from shared.stream import MessageStream
from tests.procs import free_port

log = logging.getLogger("bench.attack")
REPO = Path(__file__).resolve().parents[1]
TOKEN = "bench-attack-token"


# ---- hostile payloads ----


def png_bomb(side: int = 20000) -> bytes:
    """A real grey PNG of side x side zero pixels: ~400 KB of file, side² bytes once decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    comp = zlib.compressobj(9)
    row_block = b"\x00" * ((side + 1) * 256)  # 256 rows: filter byte 0 + side zero pixels each
    parts = [comp.compress(row_block) for _ in range(side // 256)]
    parts.append(comp.compress(b"\x00" * ((side + 1) * (side % 256))))
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def jpeg_bomb(jpeg: bytes, width: int = 60000, height: int = 60000) -> bytes:
    """A real JPEG whose frame header (SOF) claims width x height."""
    data = bytearray(jpeg)
    i = 2
    while i + 9 <= len(data):
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2 : i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            data[i + 5 : i + 9] = struct.pack(">HH", height, width)
            return bytes(data)
        i += 2 + length
    raise ValueError("no SOF marker in the JPEG")


def bmp_bomb(side: int = 20000) -> bytes:
    """A BMP header claiming side x side 24-bit pixels, with almost no pixel data."""
    header = b"BM" + struct.pack("<IHHI", 54 + 64, 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, side, side, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return header + info + b"\x00" * 64


def raw_message(kind: int, header_json: bytes, payload: bytes = b"") -> bytes:
    """Bytes of a message with a header given as raw JSON text (which `protocol.encode` would refuse)."""
    body = struct.pack("!BI", kind, len(header_json)) + header_json + payload
    return struct.pack("!I", len(body)) + body


def bad_json_headers() -> list[tuple[str, bytes]]:
    """Headers a careless parser chokes on, each as raw JSON text."""
    return [
        ("nested arrays", b"[" * 50000 + b"]" * 50000),
        ("nested objects", b'{"a":' * 20000 + b"1" + b"}" * 20000),
        ("NaN ts", b'{"seq":1,"ts":NaN}'),
        ("Infinity ts", b'{"seq":1,"ts":Infinity}'),
        ("1e999 ts", b'{"seq":1,"ts":1e999}'),
        ("huge int seq", b'{"seq":' + b"9" * 4000 + b',"ts":1}'),
        ("lone surrogate", b'{"seq":1,"ts":1,"x":"\\ud800"}'),
        ("huge VERIFY timeout", b'{"request_id":"r","identity":"x","frames":3,"timeout_s":1e308}'),
        ("huge VERIFY int timeout", b'{"request_id":"r","identity":"x","frames":3,"timeout_s":' + b"9" * 400 + b"}"),
        ("not an object", b'"hello"'),
    ]


def hello_variants(token: str) -> list[tuple[str, dict]]:
    """HELLO headers that must be refused: bad logins, stations, versions."""
    base = {"protocol": 1, "station": "desk-evil", "login": "alice", "token": token, "client": "attack"}
    out = [(f"login {v!r}", {**base, "login": v}) for v in ("x/y", "<b>", "..", "a" * 65, "\\x", 5)]
    out += [(f"station {v!r}", {**base, "station": v}) for v in ("../etc", "", "<script>", None)]
    out += [(f"protocol {v!r}", {**base, "protocol": v}) for v in (True, 1.0, "1", 2, None)]
    out += [("wrong token", {**base, "token": "nope"})]
    return out


# ---- measuring the recognizer process ----


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (from /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def _status_field(pid: int, name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_mb(pid: int) -> float:
    """Resident memory of `pid` plus its children, in MB."""
    return sum(_status_field(p, "VmRSS") for p in process_tree(pid)) / 1024


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


@dataclass
class Sampler:
    """Samples the recognizer's RSS (tree), open fds and threads every `every_s` in a thread."""

    pid: int
    every_s: float = 0.1
    peak_mb: float = 0.0
    peak_fds: int = 0
    peak_threads: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: Optional[threading.Thread] = None

    def sample(self) -> float:
        mb = rss_mb(self.pid)
        self.peak_mb = max(self.peak_mb, mb)
        self.peak_fds = max(self.peak_fds, open_fds(self.pid))
        self.peak_threads = max(self.peak_threads, _status_field(self.pid, "Threads"))
        return mb

    def start(self) -> "Sampler":
        def loop() -> None:
            while not self._stop.wait(self.every_s):
                self.sample()
        self._thread = threading.Thread(target=loop, name="sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


# ---- the recognizer under attack ----




class RecognizerProcess:
    """`python -m recognizer` on a free loopback port, its log in a file; a context manager."""

    def __init__(self, index_dir: Path, workdir: Path, token: str = TOKEN, extra: tuple[str, ...] = (),
                 pythonpath: Optional[str] = None, workers: int = 1) -> None:
        self.port = free_port()
        self.address = ("127.0.0.1", self.port)
        self.token = token
        self.log_path = workdir / "recognizer.log"
        env = dict(os.environ)
        if pythonpath is not None:
            env["PYTHONPATH"] = pythonpath
        cmd = [sys.executable, "-m", "recognizer", "--host", "127.0.0.1", "--port", str(self.port), "--token", token,
               "--index", str(index_dir), "--known-faces", str(workdir / "known_faces"), "--workers", str(workers),
               "--no-liveness", "--outbox", str(workdir / "outbox.sqlite3"),
               # the worst case: with the default grant policy an ENROL without a grant is refused before its
               # image is even looked at; with "open" every bomb reaches the image checks
               "--enrol-policy", "open", *extra]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=workdir)
        self.pid = self.proc.pid

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"recognizer exited with {self.proc.returncode}: {self.log_text()[-2000:]}")
            if b"listening on" in self.log_path.read_bytes():
                return
            time.sleep(0.2)
        raise TimeoutError(f"recognizer not listening after {timeout_s} s")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def __enter__(self) -> "RecognizerProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def build_index(out: Path) -> Path:
    """The repo's known_faces/ built into an index with `python -m recognizer.identity.enrol`."""
    subprocess.run([sys.executable, "-m", "recognizer.identity.enrol", "--known-faces", str(REPO / "known_faces"),
                    "--index", str(out), "--quiet"], check=True, stdout=subprocess.DEVNULL, cwd=REPO)
    return out


# ---- clients ----


def handshake(address: tuple[str, int], station: str, token: str, login: str = "alice",
              timeout_s: float = 10.0) -> tuple[MessageStream, Message]:
    sock = socket.create_connection(address, timeout=timeout_s)
    stream = MessageStream(sock)
    stream.send(protocol.hello(station, login, token))
    reply = stream.recv()
    if reply is None:
        stream.close()
        raise ConnectionError("closed during the handshake")
    return stream, reply


def clip_jpegs(limit: int = 300) -> list[bytes]:
    """Frames of samples/hamilton_clip.mp4 as JPEGs (a real face on stage)."""
    import cv2

    cap = cv2.VideoCapture(str(REPO / "samples" / "hamilton_clip.mp4"))
    out = []
    while len(out) < limit:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes())
    cap.release()
    if not out:
        raise RuntimeError("could not read samples/hamilton_clip.mp4")
    return out


class LegitStation:
    """One real station streaming a clip, one frame at a time; records when each answer came."""

    def __init__(self, address: tuple[str, int], token: str, frames: list[bytes], station: str = "desk-legit") -> None:
        self.address, self.token, self.frames, self.station = address, token, frames, station
        self.answers: list[float] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="legit", daemon=True)

    def start(self) -> "LegitStation":
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            stream, reply = handshake(self.address, self.station, self.token)
            if reply.kind != MessageKind.WELCOME:
                self.errors.append(f"refused: {reply.header}")
                return
            seq = 0
            while not self._stop.is_set():
                stream.send(protocol.frame(seq, time.time(), self.frames[seq % len(self.frames)]))
                answer = stream.recv()
                if answer is None or answer.kind != MessageKind.RESULT:
                    self.errors.append(f"unexpected answer {answer and answer.kind.name}")
                    return
                self.answers.append(time.monotonic())
                seq += 1
            stream.close()
        except (OSError, protocol.ProtocolError) as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def window(self, t0: float, t1: float) -> tuple[float, float]:
        """(frames/s, worst gap in s) of the answers between t0 and t1 (monotonic)."""
        inside = [t for t in self.answers if t0 <= t <= t1]
        if len(inside) < 2:
            return 0.0, t1 - t0
        edges = [t0, *inside, t1]
        return len(inside) / (t1 - t0), max(b - a for a, b in zip(edges, edges[1:]))


def send_and_read(address: tuple[str, int], data_parts: list[bytes], timeout_s: float = 10.0,
                  source: str = "") -> list[Message]:
    """Connect (from `source`), send each part, read replies until the server closes; the messages it sent."""
    return exchange(address, data_parts, timeout_s, source)[1]


def exchange(address: tuple[str, int], data_parts: list[bytes], timeout_s: float = 10.0,
             source: str = "") -> tuple[bool, list[Message], bool]:
    """(connected and sent, messages the server sent, it closed the connection) within `timeout_s`."""
    out: list[Message] = []
    sent = closed = False
    try:
        sock = socket.create_connection(address, timeout=timeout_s, source_address=(source, 0) if source else None)
    except OSError:
        return False, out, False
    with sock:
        decoder = protocol.Decoder()
        try:
            for part in data_parts:
                sock.sendall(part)
            sent = True
            while True:
                data = sock.recv(65536)
                decoder.feed(data)
                out.extend(decoder.messages())
                if not data:
                    closed = True
                    break
        except ConnectionError:
            closed = sent  # reset by the server after reading
        except (OSError, protocol.ProtocolError):
            pass
    return sent, out, closed


def hello_bytes(token: str, station: str = "desk-fuzz") -> bytes:
    return protocol.encode(protocol.hello(station, "alice", token))


def fuzz_inputs(token: str, seed: int, jpeg: bytes) -> Iterator[tuple[str, list[bytes]]]:
    """Endless (name, parts) of hostile inputs: mutated valid messages before and after a good HELLO."""
    rng = random.Random(seed)
    valid = [
        protocol.encode(protocol.frame(1, 1.0, jpeg[:2000])),
        protocol.encode(protocol.heartbeat(1.0)),
        protocol.encode(protocol.session("bob")),
        protocol.encode(protocol.verify("r", "alice", 3, 5.0)),
        protocol.encode(protocol.enrol("r", "Kit", b"\xff\xd8garbage")),
        protocol.encode(protocol.hello("desk-x", "alice", token)),
    ]
    for n in itertools.count():
        msg = bytearray(rng.choice(valid))
        for _ in range(rng.randint(1, 6)):
            op = rng.random()
            pos = rng.randrange(len(msg))
            if op < 0.4:
                msg[pos] = rng.randrange(256)
            elif op < 0.6:
                del msg[pos : pos + rng.randint(1, 8)]
            elif op < 0.8:
                msg[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            else:
                tok = rng.choice([b"NaN", b"1e999", b"[[[[", b"\\ud800", b"true", b"-0", b"\"", b"}"])
                msg[pos:pos] = tok
        if rng.random() < 0.5:
            # one station id per input: a second connection with the same id would replace the first
            yield "fuzz after HELLO", [hello_bytes(token, f"desk-fuzz{n}"), bytes(msg)]
        else:
            yield "fuzz before HELLO", [bytes(msg)]


def slow_connections(address: tuple[str, int], count: int, seconds: float, byte_every_s: float = 1.0,
                     token: str = "") -> dict:
    """Keep up to `count` connections open for `seconds`, each sending one byte of a HELLO per `byte_every_s`,
    reopening those the server closes. Returns figures: opened, closed by the server, most held at once."""
    sel = selectors.DefaultSelector()
    hello = hello_bytes(token, "desk-slow")
    opened = closed_by_server = connect_failures = most_open = 0
    conns: dict[socket.socket, list] = {}  # sock -> [bytes sent, next send time]

    def open_one() -> None:
        nonlocal opened, connect_failures
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect_ex(address)
        except OSError:
            connect_failures += 1
            s.close()
            return
        conns[s] = [0, time.monotonic() + random.random() * byte_every_s]
        sel.register(s, selectors.EVENT_READ)
        opened += 1

    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            while len(conns) < count and time.monotonic() < end:
                open_one()
                if len(conns) % 200 == 0:
                    break  # keep sending and reading while the pool fills
            most_open = max(most_open, len(conns))
            for key, _ in sel.select(0.05):
                s = key.fileobj
                try:
                    data = s.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:  # the server closed it
                    closed_by_server += 1
                    sel.unregister(s)
                    del conns[s]
                    s.close()
            now = time.monotonic()
            for s, state in list(conns.items()):
                if now >= state[1]:
                    try:
                        s.send(hello[state[0] % len(hello) : state[0] % len(hello) + 1])
                        state[0] += 1
                    except (BlockingIOError, OSError):
                        pass
                    state[1] = now + byte_every_s
    finally:
        for s in conns:
            s.close()
        sel.close()
    return {"opened": opened, "closed_by_server": closed_by_server, "most_open": most_open,
            "connect_failures": connect_failures}


def prehandshake_buffers(address: tuple[str, int], count: int, hold_s: float) -> int:
    """`count` connections that announce an 8 MiB message before any HELLO and send 1 MiB of it; held `hold_s`."""
    socks = []
    head = struct.pack("!I", 8 * 1024 * 1024 - 4) + bytes([MessageKind.HELLO]) + struct.pack("!I", 0)
    chunk = b"\x00" * (1 << 20)
    for _ in range(count):
        try:
            s = socket.create_connection(address, timeout=2)
            s.setblocking(False)
            try:
                s.send(head)
                s.send(chunk)
            except OSError:
                pass
            socks.append(s)
        except OSError:
            pass
    time.sleep(hold_s)
    for s in socks:
        s.close()
    return len(socks)


# ---- the run ----


@dataclass
class Phase:
    name: str
    inputs: int  # attempted
    accepted: int  # read and answered by the server (see the module doc)
    t0: float
    t1: float
    mem_before: float
    mem_peak: float
    mem_after: float
    fds_peak: int
    threads_peak: int
    note: str = ""


def run_phase(name: str, target: "Target", action: Callable[[], tuple[int, int, str]]) -> Phase:
    sampler = Sampler(target.pid).start()
    before = sampler.sample()
    sampler.peak_mb, sampler.peak_fds, sampler.peak_threads = before, 0, 0
    t0 = time.monotonic()
    inputs, accepted, note = action()
    t1 = time.monotonic()
    time.sleep(1.0)  # let the recognizer release what it freed
    after = sampler.sample()
    sampler.stop()
    log.info("%s: %d inputs, %d accepted, %s", name, inputs, accepted, note)
    return Phase(name, inputs, accepted, t0, t1, before, sampler.peak_mb, after, sampler.peak_fds, sampler.peak_threads, note)


@dataclass
class Target:
    address: tuple[str, int]
    pid: int
    token: str
    log_path: Path
    process: Optional[RecognizerProcess] = None

    def alive(self) -> bool:
        return self.process.proc.poll() is None if self.process is not None else Path(f"/proc/{self.pid}").exists()


def count_tracebacks(text: str) -> int:
    return text.count("Traceback (most recent call last)")


def attack(target: Target, args: argparse.Namespace) -> list[Phase]:
    jpeg = (REPO / "tests" / "fixtures" / "obama_probe.jpg").read_bytes()
    addr, token = target.address, target.token
    phases: list[Phase] = []

    def idle() -> tuple[int, int, str]:
        time.sleep(args.baseline_s)
        return 0, 0, "no attack"

    def bombs() -> tuple[int, int, str]:
        payloads = [("PNG 20000x20000", png_bomb(args.bomb_side))] * 3 + [
            ("JPEG SOF 60000x60000", jpeg_bomb(jpeg)), ("BMP 20000x20000", bmp_bomb())]
        replies: list[str] = []
        answered: list[bool] = []

        def one(name: str, data: bytes, i: int) -> None:
            try:
                stream, _ = handshake(addr, f"desk-bomb{i}", token)
                stream.send(protocol.enrol(f"b{i}", "Bomb", data))
                reply = stream.recv()
                replies.append(f"{name}: {reply.header.get('reason') if reply else 'closed'}")
                answered.append(reply is not None)
                stream.close()
            except (OSError, protocol.ProtocolError) as exc:
                replies.append(f"{name}: {exc}")

        threads = [threading.Thread(target=one, args=(n, d, i)) for i, (n, d) in enumerate(payloads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        log.info("bomb replies: %s", replies)
        return len(payloads), sum(answered), f"{len(payloads[0][1]) // 1024} KB PNG; " + "; ".join(sorted(set(replies)))[:160]

    def buffers() -> tuple[int, int, str]:
        n = prehandshake_buffers(addr, args.buffers, args.buffers_hold_s)
        return args.buffers, n, f"{n} conns (accepted by the server) announcing 8 MiB before HELLO"

    def slow() -> tuple[int, int, str]:
        probe: dict = {}

        def newcomer() -> None:  # a station (re)connecting in the middle of the flood
            time.sleep(args.slow_seconds / 2)
            t = time.monotonic()
            try:
                stream, reply = handshake(addr, "desk-newcomer", token)
                probe["welcome_s"] = time.monotonic() - t if reply.kind == MessageKind.WELCOME else None
                stream.close()
            except OSError as exc:
                probe["error"] = str(exc)

        nc = threading.Thread(target=newcomer)
        nc.start()
        figures = slow_connections(addr, args.slow, args.slow_seconds, token=token)
        nc.join()
        welcome = probe.get("welcome_s")
        return figures["opened"], figures["opened"] - figures["connect_failures"], (f"held at once {figures['most_open']}, closed by server {figures['closed_by_server']}; "
                                   f"newcomer WELCOME in {welcome:.2f} s" if welcome is not None
                                   else f"newcomer failed: {probe}")

    def logins_and_json() -> tuple[int, int, str]:
        cases: list[tuple[str, list[bytes]]] = []
        for name, header in hello_variants(token):
            cases.append((name, [raw_message(MessageKind.HELLO, json.dumps(header).encode())]))
        for name, header in bad_json_headers():
            cases.append((f"{name} in HELLO", [raw_message(MessageKind.HELLO, header)]))
            for kind in (MessageKind.FRAME, MessageKind.VERIFY, MessageKind.HEARTBEAT):
                cases.append((f"{name} in {kind.name}", [hello_bytes(token, f"desk-json{len(cases)}"), raw_message(kind, header)]))
        for bad in ("x/y", "<b>", "a" * 65):
            cases.append((f"SESSION {bad!r}", [hello_bytes(token, f"desk-session{len(cases)}"),
                                                raw_message(MessageKind.SESSION, json.dumps({"login": bad}).encode())]))
        unanswered = []
        lock = threading.Lock()
        todo = list(cases)

        def worker() -> None:
            while True:
                with lock:
                    if not todo:
                        return
                    name, parts = todo.pop()
                replies = send_and_read(addr, parts)
                # well-formed but out-of-range (a 1e308 VERIFY timeout) is answered, not an error: any reply counts
                if not any(r.kind != MessageKind.WELCOME for r in replies):
                    with lock:
                        unanswered.append(name)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return len(cases), len(cases) - len(unanswered), f"left unanswered: {unanswered or 'none'}"

    def fuzz() -> tuple[int, int, str]:
        gen = fuzz_inputs(token, args.seed, jpeg)
        end = time.monotonic() + args.fuzz_seconds
        n = sent = answered = 0
        lock = threading.Lock()
        sources = [f"127.0.0.{i}" for i in range(2, 255)]  # the per-address failure delay applies to each apart

        def worker() -> None:
            nonlocal n, sent, answered
            while time.monotonic() < end:
                with lock:
                    if n >= args.fuzz:
                        return
                    source = sources[n % len(sources)]
                    n += 1
                    _, parts = next(gen)
                ok, replies, closed = exchange(addr, parts, timeout_s=args.fuzz_wait, source=source)
                with lock:
                    sent += ok
                    answered += ok and (bool(replies) or closed)

        threads = [threading.Thread(target=worker) for _ in range(48)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return n, answered, f"seed {args.seed}; sent {sent} from {min(n, len(sources))} addresses 127.0.0.x"

    plan = [("baseline", idle), ("bombs", bombs), ("pre-handshake 8 MiB", buffers), ("slowloris", slow),
            ("bad logins + JSON", logins_and_json), ("fuzz", fuzz), ("settle", idle)]
    for name, action in plan:
        if name not in args.skip:
            phases.append(run_phase(name, target, action))
        if not target.alive():
            log.error("the recognizer died during %s", name)
            break
    return phases


def print_table(phases: list[Phase], legit: LegitStation, target: Target, log_before: int, start_mb: float) -> None:
    text = target.log_path.read_text(errors="replace") if target.log_path.exists() else ""
    tracebacks = count_tracebacks(text) - log_before
    rows = [("phase", "attempted", "accepted", "mem before", "peak", "after", "fds peak", "threads peak", "legit fps", "worst gap", "note")]
    for p in phases:
        fps, gap = legit.window(p.t0, p.t1)
        rows.append((p.name, str(p.inputs), str(p.accepted), f"{p.mem_before:.0f} MB", f"{p.mem_peak:.0f} MB", f"{p.mem_after:.0f} MB",
                     str(p.fds_peak), str(p.threads_peak), f"{fps:.1f}", f"{gap:.2f} s", p.note))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    end_mb = rss_mb(target.pid) if target.alive() else float("nan")
    print(f"\ninputs tried: {sum(p.inputs for p in phases)}; recognizer crashed: {'no' if target.alive() else 'YES'}; "
          f"memory start {start_mb:.0f} MB, peak {max(p.mem_peak for p in phases):.0f} MB, end {end_mb:.0f} MB "
          f"(end - start {end_mb - start_mb:+.0f} MB); tracebacks in the log: {tracebacks}; "
          f"log lines: {len(text.splitlines())}; legit station errors: {legit.errors or 'none'}")


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.attack", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="", help="HOST:PORT of a running recognizer (default: start one)")
    p.add_argument("--pid", type=int, default=0, help="its process id, for memory (with --target)")
    p.add_argument("--log", type=Path, default=None, help="its log file, to count tracebacks (with --target)")
    p.add_argument("--token", default=TOKEN, help="its token (with --target)")
    p.add_argument("--index", type=Path, default=None, help="face index for the started recognizer (default: build one)")
    p.add_argument("--pythonpath", default=None, help="PYTHONPATH for the started recognizer (e.g. an older tree)")
    p.add_argument("--slow", type=int, default=2000, help="slow connections held at once (default: %(default)s)")
    p.add_argument("--slow-seconds", type=float, default=15.0, help="how long they are held (default: %(default)s)")
    p.add_argument("--buffers", type=int, default=100, help="connections buffering before HELLO (default: %(default)s)")
    p.add_argument("--buffers-hold-s", type=float, default=3.0)
    p.add_argument("--fuzz", type=int, default=3000, help="fuzzed inputs at most (default: %(default)s)")
    p.add_argument("--fuzz-seconds", type=float, default=20.0, help="time for fuzzing at most (default: %(default)s)")
    p.add_argument("--fuzz-wait", type=float, default=2.0, help="seconds a fuzz input waits for its answer (default: %(default)s)")
    p.add_argument("--runs", type=int, default=3, help="runs, each against a fresh recognizer (default: %(default)s)")
    p.add_argument("--bomb-side", type=int, default=20000, help="PNG bomb width and height (default: %(default)s)")
    p.add_argument("--baseline-s", type=float, default=3.0)
    p.add_argument("--warmup-s", type=float, default=8.0, help="legit station streams this long before 'start'")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--skip", nargs="*", default=[], help="phase names to skip")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, args.slow + args.buffers + 512))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    frames = clip_jpegs()
    runs: list[list[tuple[Phase, float, float]]] = []  # per run: (phase, legit fps, worst gap)
    with tempfile.TemporaryDirectory(prefix="facemon-attack-") as tmp:
        work = Path(tmp)
        index = None if args.target else (args.index or build_index(work / "encodings"))
        for run in range(1 if args.target else args.runs):
            run_dir = work / f"run{run}"
            run_dir.mkdir()
            if args.target:
                host, port = args.target.rsplit(":", 1)
                if host not in ("127.0.0.1", "localhost", "::1"):
                    p.error("--target must be a loopback address")
                target = Target((host, int(port)), args.pid, args.token, args.log or run_dir / "none.log")
            else:
                proc = RecognizerProcess(index, run_dir, pythonpath=args.pythonpath)
                proc.wait_ready()
                target = Target(proc.address, proc.pid, proc.token, proc.log_path, proc)
            try:
                log_before = count_tracebacks(target.log_path.read_text(errors="replace")) if target.log_path.exists() else 0
                legit = LegitStation(target.address, target.token, frames).start()
                time.sleep(args.warmup_s)  # first frames (model and track warm-up) are not part of the measurement
                start_mb = rss_mb(target.pid) if target.pid else 0.0
                phases = attack(target, args)
                legit.stop()
                print(f"\n== run {run + 1} ==")
                print_table(phases, legit, target, log_before, start_mb)
                runs.append([(ph, *legit.window(ph.t0, ph.t1)) for ph in phases])
            finally:
                if target.process is not None:
                    target.process.stop()
    if len(runs) > 1:
        print_summary(runs)
    return 0


def print_summary(runs: list[list[tuple[Phase, float, float]]]) -> None:
    """Per phase, min / median / max over the runs."""
    import statistics

    def mmm(xs: list[float], fmt: str) -> str:
        return " / ".join(fmt.format(x) for x in (min(xs), statistics.median(xs), max(xs)))

    print(f"\n== min / median / max over {len(runs)} runs ==")
    rows = [("phase", "attempted", "accepted", "peak MB over before", "legit fps", "worst gap s")]
    for i, (first, _, _) in enumerate(runs[0]):
        got = [r[i] for r in runs if len(r) > i]
        rows.append((first.name, mmm([g[0].inputs for g in got], "{:.0f}"), mmm([g[0].accepted for g in got], "{:.0f}"),
                     mmm([g[0].mem_peak - g[0].mem_before for g in got], "{:+.0f}"), mmm([g[1] for g in got], "{:.1f}"),
                     mmm([g[2] for g in got], "{:.2f}")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))

if __name__ == "__main__":
    sys.exit(main())
