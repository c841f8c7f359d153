"""The one HTTP client of facemon's own calls: recognizer → dashboard and webhook, edge → dashboard.

Standard library only (the recognizer workstation and the Pi install no HTTP package). POST (a JSON or
multipart/form-data body) and GET, an optional bearer token, a timeout per request. A redirect is not followed
(a redirected POST would silently lose its body); it comes back as the 3xx answer with its `location`.

Every answer the server gives, 4xx and 5xx included, is a `Response`; only "no answer" (refused,
unreachable, reset, timed out, a garbled reply, a URL that cannot work) raises `HttpError`, never a raw
urllib or http.client exception. What an answer means is the caller's business.
"""
from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any, Optional

TIMEOUT_S = 15.0  # connect and read, per request


class HttpError(Exception):
    """No answer came back. `transient` is False when retrying cannot help (a malformed URL)."""

    def __init__(self, message: str, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    location: str = ""  # the Location of a 3xx answer

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Optional[dict]:
        """The body as a JSON object ({} when empty); None when it is not one."""
        try:
            data = json.loads(self.body or b"{}")
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def reason(self) -> str:
        """The server's `error` text when it sent JSON, else the start of the body."""
        data = self.json()
        if data is not None and data.get("error"):
            return str(data["error"])[:300]
        return self.body[:300].decode("utf-8", "replace").strip()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201 - reported, not followed
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)  # stateless; safe to share between threads


def post(url: str, body: bytes, headers: dict[str, str], timeout_s: float = TIMEOUT_S) -> Response:
    """POST `body` to `url`; any HTTP status is a Response, no answer is an HttpError."""
    return _send("POST", url, body, headers, timeout_s)


def get(url: str, token: str = "", timeout_s: float = TIMEOUT_S) -> Response:
    """GET `url`, with `Authorization: Bearer token` when a token is given; as `post` for answers and errors."""
    return _send("GET", url, None, {"Authorization": f"Bearer {token}"} if token else {}, timeout_s)


def _send(method: str, url: str, body: Optional[bytes], headers: dict[str, str], timeout_s: float) -> Response:
    try:
        request = urllib.request.Request(url, data=body, headers=headers, method=method)
        with _OPENER.open(request, timeout=timeout_s) as answer:  # noqa: S310 - a configured http(s) URL
            return Response(answer.status, answer.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return Response(exc.code, exc.read() or b"", exc.headers.get("Location", "") if exc.headers else "")
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:  # refused, reset, timed out, garbled
        raise HttpError(f"{getattr(exc, 'reason', exc)} ({url})") from None
    except ValueError as exc:  # a malformed URL: retrying will not help
        raise HttpError(f"bad URL {url!r}: {exc}", transient=False) from None


def _headers(token: str, content_type: str, extra: Optional[dict[str, str]]) -> dict[str, str]:
    headers = dict(extra or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    headers["Content-Type"] = content_type
    return headers


def post_json(url: str, data: Any, token: str = "", timeout_s: float = TIMEOUT_S,
              headers: Optional[dict[str, str]] = None) -> Response:
    """POST `data` as JSON, with `Authorization: Bearer token` when a token is given."""
    return post(url, json.dumps(data).encode(), _headers(token, "application/json", headers), timeout_s)


Part = tuple[str, Optional[str], str, bytes]  # (field name, file name or None, content type, data)


def multipart(parts: list[Part]) -> tuple[bytes, str]:
    """multipart/form-data body from `parts`; returns (body, content type)."""
    boundary = uuid.uuid4().hex
    out = bytearray()
    for name, filename, ctype, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\nContent-Type: {ctype}\r\n\r\n".encode()
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def post_multipart(url: str, parts: list[Part], token: str = "", timeout_s: float = TIMEOUT_S) -> Response:
    """POST `parts` as multipart/form-data, with `Authorization: Bearer token` when a token is given."""
    body, content_type = multipart(parts)
    return post(url, body, _headers(token, content_type, None), timeout_s)
