"""The node's REST client: node token, re-authentication, streamed uploads.

Failures are classified for the caller: ServerUnavailable (network, timeouts, 5xx —
worth retrying later), Conflict (409: another node won, or the run is already final),
ServerRefused (any other 4xx: retrying the same request will not help).
"""

from __future__ import annotations

import base64
import contextlib
import re
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import requests

from nodeagent import VERSION

CONNECT_TIMEOUT = 5
READ_TIMEOUT = 30
UPLOAD_READ_TIMEOUT = 300
CHUNK = 256 * 1024
# Results up to this size are sent inline (base64 in JSON, 4/3 of it on the wire);
# the server's default request limit (VANTAGE_MAX_REQUEST_BYTES) is 20 MiB.
INLINE_RESULT_BYTES = 1024 * 1024


def _reason(exc: requests.RequestException) -> str:
    """The useful end of requests' long exception texts ("[Errno 111] Connection refused")."""
    if isinstance(exc, requests.Timeout):
        return "timed out"
    found = re.search(r"\[Errno -?\d+\] [^'\")\]]+", str(exc))
    return found.group(0) if found else f"{type(exc).__name__}: {exc}"


class ClientError(Exception):
    pass


class ServerUnavailable(ClientError):
    """The server could not be reached or failed (5xx): try again later."""


class ServerRefused(ClientError):
    def __init__(self, status: int, body: str, what: str):
        self.status, self.body = status, body
        super().__init__(f"{what}: the server answered {status}: {body[:300]}")


class Conflict(ServerRefused):
    pass


class NotFound(ServerRefused):
    pass


class MultipartStream:
    """A multipart/form-data body that reads its file part from disk chunk by chunk.

    requests would read a `files=` upload into memory whole; this object has a length
    (so requests sends Content-Length, not chunked encoding) and yields the file in
    CHUNK-sized pieces, so uploading a 2 GB result costs the node no more memory than
    uploading a small one.
    """

    def __init__(self, fields: dict[str, str], file_field: str | None = None, file_path: Path | None = None):
        self.boundary = f"vantage-{uuid.uuid4().hex}"
        self.fields = fields
        self.file_field, self.file_path = file_field, file_path
        self._head = b"".join(
            self._part_header(name) + value.encode("utf-8") + b"\r\n" for name, value in fields.items()
        )
        self._file_head = b""
        if file_path is not None:
            self._file_head = self._part_header(file_field, filename=file_path.name, content_type="application/json")
        self._tail = (b"\r\n" if file_path is not None else b"") + f"--{self.boundary}--\r\n".encode()
        self._file_size = file_path.stat().st_size if file_path is not None else 0

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def _part_header(self, name: str, filename: str | None = None, content_type: str | None = None) -> bytes:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        header = f"--{self.boundary}\r\nContent-Disposition: {disposition}\r\n"
        if content_type:
            header += f"Content-Type: {content_type}\r\n"
        return (header + "\r\n").encode("utf-8")

    def __len__(self) -> int:
        return len(self._head) + len(self._file_head) + self._file_size + len(self._tail)

    def __iter__(self) -> Iterator[bytes]:
        yield self._head
        if self.file_path is not None:
            yield self._file_head
            with open(self.file_path, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    yield chunk
        yield self._tail


class ServerClient:
    """Thread-safe: a request borrows an idle HTTP session (one at a time per session), so
    the short-lived threads of runs reuse kept-alive connections; the token is shared."""

    def __init__(self, url: str, api_key: str):
        self.url = url.rstrip("/")
        self._api_key = api_key
        self._token: str | None = None
        self._token_renew_at = 0.0
        self._token_lock = threading.Lock()
        self._idle_sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()

    @contextlib.contextmanager
    def _session(self) -> Iterator[requests.Session]:
        with self._sessions_lock:
            session = self._idle_sessions.pop() if self._idle_sessions else None
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = f"vantage-node/{VERSION}"
        try:
            yield session
        finally:
            with self._sessions_lock:
                self._idle_sessions.append(session)

    # ---------------------------------------------------------------- auth

    def authenticate(self) -> None:
        """Exchange the API key for a node token (raises ServerRefused on a bad key)."""
        with self._token_lock:
            self._authenticate_locked()

    def _authenticate_locked(self) -> None:
        response = self._send("POST", "/api/node/token/", json={"api_key": self._api_key})
        if response.status_code != 200:
            raise self._refused(response, "authentication with the API key")
        body = response.json()
        lifetime = float(body.get("expires_in") or 300)
        self._token = body["access"]
        # Renew well before expiry so a long request never starts with a dying token.
        self._token_renew_at = time.monotonic() + lifetime * 0.8

    def access_token(self) -> str:
        """A valid node token (for the websocket handshake)."""
        return self._bearer()

    def invalidate_token(self) -> None:
        with self._token_lock:
            self._token = None

    def _bearer(self) -> str:
        with self._token_lock:
            if self._token is None or time.monotonic() >= self._token_renew_at:
                self._authenticate_locked()
            return self._token

    def _invalidate(self, token: str) -> None:
        with self._token_lock:
            if self._token == token:
                self._token = None

    # ---------------------------------------------------------------- transport

    def _send(self, method: str, path: str, *, token: str | None = None, timeout=None, **kwargs) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        try:
            # Not streamed: the body is read and the connection idle again when the session goes back.
            with self._session() as session:
                response = session.request(
                    method, f"{self.url}{path}", headers=headers,
                    timeout=timeout or (CONNECT_TIMEOUT, READ_TIMEOUT), **kwargs,
                )
        except requests.RequestException as exc:
            raise ServerUnavailable(f"{method} {path}: {_reason(exc)}") from exc
        if response.status_code >= 500:
            raise ServerUnavailable(f"{method} {path}: the server answered {response.status_code}")
        return response

    def _call(self, method: str, path: str, what: str, ok=(200,), body_factory=None, **kwargs) -> requests.Response:
        """One authenticated call; on 401 authenticate again and retry once."""
        for attempt in (1, 2):
            if body_factory is not None:
                body = body_factory()
                kwargs["data"] = body
                kwargs["headers"] = {"Content-Type": body.content_type}
            token = self._bearer()
            response = self._send(method, path, token=token, **kwargs)
            if response.status_code == 401 and attempt == 1:
                self._invalidate(token)
                continue
            if response.status_code in ok:
                return response
            raise self._refused(response, what)
        raise AssertionError("unreachable")

    @staticmethod
    def _refused(response: requests.Response, what: str) -> ServerRefused:
        kind = {409: Conflict, 404: NotFound}.get(response.status_code, ServerRefused)
        return kind(response.status_code, response.text, what)

    # ---------------------------------------------------------------- API

    def me(self) -> dict:
        return self._call("GET", "/api/node/me/", "reading this node's record").json()

    def report(self, config: dict) -> None:
        self._call("POST", "/api/node/me/report/", "reporting the node's configuration", ok=(200, 201, 204),
                   json={"config": config})

    def pending_runs(self, limit: int) -> list[dict]:
        """Up to `limit` pending runs addressed to this node, oldest first."""
        return self.list_runs(status="pending", limit=limit)

    def list_runs(self, *, status: str, node: int | None = None, limit: int | None = None) -> list[dict]:
        runs: list[dict] = []
        path = f"/api/runs/?status={status}&page_size=100" + (f"&node={node}" if node is not None else "")
        while path:
            body = self._call("GET", path, f"listing {status} runs").json()
            runs.extend(body.get("results", []))
            if limit is not None and len(runs) >= limit:
                return runs[:limit]
            path = self._relative(body.get("next"))
        return runs

    def _relative(self, next_url: str | None) -> str | None:
        if not next_url:
            return None
        return next_url[len(self.url):] if next_url.startswith(self.url) else "/" + next_url.split("/", 3)[-1]

    def claim(self, run_id: int) -> dict | None:
        """The claimed run with its input and task, or None when another node won."""
        try:
            return self._call("POST", f"/api/runs/{run_id}/claim/", f"claiming run {run_id}").json()
        except Conflict:
            return None

    def get_run(self, run_id: int) -> dict:
        return self._call("GET", f"/api/runs/{run_id}/", f"reading run {run_id}").json()

    def container_token(self, run_id: int) -> str:
        """The run's own container token, for its token file and its proxy."""
        return self._call("POST", f"/api/runs/{run_id}/container-token/",
                          f"getting the container token of run {run_id}").json()["token"]

    def start(self, run_id: int, digest: str = "") -> None:
        """Mark the run as running; `digest` is the image digest its container runs."""
        self._call("POST", f"/api/runs/{run_id}/start/", f"marking run {run_id} as running",
                   json={"digest": digest} if digest else None)

    def catalogue_status(self, image: str, digest: str) -> str:
        """The catalogue's status for this image digest ("approved", "retired", ... or "unknown")."""
        response = self._call("GET", "/api/algorithms/catalogue-status/", "asking the catalogue",
                              params={"image": image, "digest": digest})
        return str(response.json().get("status") or "unknown")

    def append_log(self, run_id: int, text: str) -> None:
        self._call("POST", f"/api/runs/{run_id}/log/", f"sending the log of run {run_id}", ok=(200, 201, 204),
                   json={"text": text})

    def hold(self, run_id: int, *, output_type: str, size: int, flags: list[str], digest: str = "",
             started_at: float | None = None) -> None:
        """Tell the server the output gate holds this run's result: metadata only (and, as
        for finish, what ran and since when)."""
        self._call("POST", f"/api/runs/{run_id}/hold/", f"marking run {run_id} as awaiting release",
                   json={"output_type": output_type, "size": size, "flags": flags,
                         **_started_fields(digest, started_at)})

    def finish(self, run_id: int, *, status: str, exit_code: int | None, error_kind: str, log: str,
               result: Path | None, digest: str = "", started_at: float | None = None) -> None:
        """Report a run's end. A result up to INLINE_RESULT_BYTES goes inline as base64 in a
        JSON body (half the server's work of a multipart upload for a small aggregate);
        a larger one, or one whose JSON body the server refuses as too large, is streamed
        from disk as a multipart upload. `digest` and `started_at` (seconds since the epoch):
        what ran and since when, which the server records if the start was never reported."""
        what = f"finishing run {run_id}"
        started = _started_fields(digest, started_at)
        if result is None or result.stat().st_size <= INLINE_RESULT_BYTES:
            body = {"status": status, "error_kind": error_kind, "log": log, "exit_code": exit_code, **started}
            if result is not None:
                body["result"] = base64.b64encode(result.read_bytes()).decode("ascii")
            try:
                self._call("POST", f"/api/runs/{run_id}/finish/", what, json=body,
                           timeout=(CONNECT_TIMEOUT, UPLOAD_READ_TIMEOUT))
                return
            except ServerRefused as exc:
                if exc.status != 413:
                    raise
                # The server's VANTAGE_MAX_REQUEST_BYTES is below this body: its result
                # limit, which the multipart upload is held to, may still allow it.
        fields = {"status": status, "error_kind": error_kind, "log": log, **started}
        if exit_code is not None:
            fields["exit_code"] = str(exit_code)
        self._call(
            "POST", f"/api/runs/{run_id}/finish/", what,
            body_factory=lambda: MultipartStream(fields, "result" if result else None, result),
            timeout=(CONNECT_TIMEOUT, UPLOAD_READ_TIMEOUT),
        )


def _started_fields(digest: str, started_at: float | None) -> dict:
    """What ran and since when (seconds since the epoch), for the server to record if the
    run's start was never reported; nothing for a run that did not run."""
    if not digest:
        return {}
    fields = {"digest": digest}
    if started_at is not None:
        fields["started_at"] = datetime.fromtimestamp(started_at, timezone.utc).isoformat()
    return fields
