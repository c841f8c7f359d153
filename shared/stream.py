"""Blocking socket shell over `shared.protocol`: send and receive whole messages."""
from __future__ import annotations

import select
import socket
import threading
from typing import Optional

from shared import protocol
from shared.protocol import Message

_RECV_CHUNK = 256 * 1024


class MessageStream:
    """A connected TCP socket that speaks `shared.protocol` messages.

    `send` may be called from several threads (a lock keeps messages whole); `recv` from one.
    """

    def __init__(self, sock: socket.socket, max_size: int = protocol.DEFAULT_MAX_MESSAGE,
                 decoder: Optional[protocol.Decoder] = None) -> None:
        """`decoder`: one that already holds bytes read from `sock` (a server's handshake), else a new one."""
        self.sock = sock
        self.max_size = max_size
        self._decoder = decoder if decoder is not None else protocol.Decoder(max_size)
        self._send_lock = threading.Lock()
        try:
            # Header and payload go out in one sendall; no reason to wait for Nagle.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def send(self, message: Message) -> None:
        """Send one message (raises OSError if the connection is gone)."""
        data = protocol.encode(message, self.max_size)
        with self._send_lock:
            self.sock.sendall(data)

    def recv(self) -> Optional[Message]:
        """Block for the next message; None on a clean close between messages.

        Raises ProtocolError for a malformed, oversized or truncated message, socket.timeout
        when the socket's timeout elapses with no complete message, OSError on a broken socket.
        """
        while True:
            msg = self._decoder.next_message()
            if msg is not None:
                return msg
            if self._decoder.closed:
                return None
            data = self.sock.recv(_RECV_CHUNK)
            self._decoder.feed(data)

    def waiting(self) -> bool:
        """Bytes of a next message are already here (read into the decoder, or waiting in the socket): the peer sent
        it before this side asked for it. Never blocks."""
        if self._decoder.buffered:
            return True
        try:
            poller = select.poll()
            poller.register(self.sock, select.POLLIN)
            return bool(poller.poll(0))
        except (OSError, ValueError):  # closed meanwhile: nothing is waiting
            return False

    def close(self) -> None:
        """Shut the connection down; safe to call twice and from another thread."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
