"""A small client side of RFC 6455 for the node's event channel: text frames, ping/pong, close.

Written here rather than imported: the websocket libraries at hand (autobahn) bind
to one event loop framework per process, and the server's own stack in this
repository already picks Twisted for it; the node only needs to read small JSON events
and send heartbeats from one thread, with plain blocking sockets.
"""

from __future__ import annotations

import base64
import hashlib
import os
import select
import socket
import ssl
import struct
from urllib.parse import urlsplit

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_MESSAGE = 1024 * 1024


class WebSocketError(OSError):
    pass


class Closed(Exception):
    def __init__(self, code: int | None, reason: str):
        self.code, self.reason = code, reason
        super().__init__(f"closed ({code} {reason})")


class WebSocket:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._buffer = b""
        self._fragments: list[bytes] = []

    @classmethod
    def connect(cls, url: str, headers: dict[str, str], timeout: float = 10) -> WebSocket:
        parts = urlsplit(url)
        secure = parts.scheme == "wss"
        port = parts.port or (443 if secure else 80)
        sock = socket.create_connection((parts.hostname, port), timeout=timeout)
        try:
            if secure:
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=parts.hostname)
            key = base64.b64encode(os.urandom(16)).decode()
            lines = [
                f"GET {parts.path or '/'} HTTP/1.1", f"Host: {parts.netloc}", "Upgrade: websocket",
                "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
                *(f"{name}: {value}" for name, value in headers.items()),
            ]
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin1"))
            response = b""
            while b"\r\n\r\n" not in response:
                chunk = sock.recv(4096)
                if not chunk or len(response) > 65536:
                    raise WebSocketError("the server closed the connection during the handshake")
                response += chunk
            head, rest = response.split(b"\r\n\r\n", 1)
            status, *header_lines = head.decode("latin1").split("\r\n")
            if status.split(" ")[1:2] != ["101"]:
                raise WebSocketError(f"handshake refused: {status}")
            received = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
            expected = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
            if received.get("sec-websocket-accept") != expected:
                raise WebSocketError("handshake answer does not match the key")
        except BaseException:
            sock.close()
            raise
        ws = cls(sock)
        ws._buffer = rest
        return ws

    def send_text(self, text: str) -> None:
        self._send(OP_TEXT, text.encode("utf-8"))

    def close(self, code: int = 1000) -> None:
        try:
            self._send(OP_CLOSE, struct.pack(">H", code))
        except OSError:
            pass
        self.sock.close()

    def _send(self, opcode: int, payload: bytes) -> None:
        header = bytes([0x80 | opcode])
        length = len(payload)
        if length < 126:
            header += bytes([0x80 | length])
        elif length < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", length)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", length)
        mask = os.urandom(4)  # clients must mask every frame
        self.sock.sendall(header + mask + _unmask(payload, mask))

    def receive(self, timeout: float) -> list[str]:
        """Text messages that arrived within `timeout` seconds (maybe none).

        Raises Closed when the server closes, OSError when the connection breaks."""
        messages = self._complete_messages()
        if messages:
            return messages
        pending = isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()
        if not pending and not select.select([self.sock], [], [], timeout)[0]:
            return []
        chunk = self.sock.recv(65536)
        if not chunk:
            raise Closed(None, "connection lost")
        self._buffer += chunk
        return self._complete_messages()

    def _complete_messages(self) -> list[str]:
        messages = []
        while self._frame_complete():
            message = self._next_frame()
            if message is not None:
                messages.append(message)
        return messages

    def _frame_complete(self) -> bool:
        header = _frame_header(self._buffer)
        return header is not None and len(self._buffer) >= header[0] + header[1]

    def _next_frame(self) -> str | None:
        header_len, length, fin, opcode, mask = _frame_header(self._buffer)
        payload = self._buffer[header_len:header_len + length]
        self._buffer = self._buffer[header_len + length:]
        if mask:
            payload = _unmask(payload, mask)
        if opcode == OP_PING:
            self._send(OP_PONG, payload)
            return None
        if opcode == OP_PONG:
            return None
        if opcode == OP_CLOSE:
            code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
            self.close(code or 1000)
            raise Closed(code, payload[2:].decode("utf-8", "replace"))
        self._fragments.append(payload)
        if sum(len(f) for f in self._fragments) > MAX_MESSAGE:
            raise WebSocketError("message too large")
        if not fin:
            return None
        data, self._fragments = b"".join(self._fragments), []
        return data.decode("utf-8", "replace") if opcode in (OP_TEXT, OP_CONTINUATION) else None


def _frame_header(buffer: bytes):
    """(header length, payload length, fin, opcode, mask) of the frame at the start, or None."""
    if len(buffer) < 2:
        return None
    fin, opcode = bool(buffer[0] & 0x80), buffer[0] & 0x0F
    masked, length = bool(buffer[1] & 0x80), buffer[1] & 0x7F
    offset = 2
    if length == 126:
        if len(buffer) < 4:
            return None
        length, offset = struct.unpack(">H", buffer[2:4])[0], 4
    elif length == 127:
        if len(buffer) < 10:
            return None
        length, offset = struct.unpack(">Q", buffer[2:10])[0], 10
    mask = b""
    if masked:
        if len(buffer) < offset + 4:
            return None
        mask, offset = buffer[offset:offset + 4], offset + 4
    return offset, length, fin, opcode, mask


def _unmask(payload: bytes, mask: bytes) -> bytes:
    if not payload:
        return payload
    repeated = (mask * (len(payload) // 4 + 1))[:len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(len(payload), "big")
