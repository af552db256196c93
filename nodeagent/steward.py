"""The steward's page: the node's own web page, on loopback only, where the hospital's data
steward reviews what the output gate held and decides (`manage.py steward --config node.toml`).

It reads the airlock and writes decisions (into the keyed decision log, then onto the
entry); the node agent sends what was decided at its next sweep. The page itself never
talks to the server, so nothing leaves from here.

Its own login: `[steward] password_hash` in node.toml (scrypt, made by
`manage.py steward --hash-password`). A session is a random cookie (HttpOnly,
SameSite=Strict) kept in memory; every form carries the session's CSRF token; requests
whose Host or Origin is not this loopback address are refused (DNS rebinding).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import logging
import secrets
import threading
import time
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

from nodeagent.airlock import HELD, RELEASED, REJECTED, Airlock, AirlockError
from nodeagent.config import NodeConfig
from nodeagent.gate import Thresholds, suppress

log = logging.getLogger(__name__)

COOKIE = "steward_session"
SESSION_SECONDS = 8 * 3600
SHOW_BYTES = 256 * 1024  # of an output, log or input on the page: the rest stays encrypted
MAX_FORM_BYTES = 16 * 1024
MAX_REASON = 500
LOCKOUT_FAILURES, LOCKOUT_SECONDS = 5, 60
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


# ---------------------------------------------------------------- passwords


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return "$".join(["scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P),
                     base64.b64encode(salt).decode(), base64.b64encode(digest).decode()])


def check_password(password: str, encoded: str) -> bool:
    try:
        _, n, r, p, salt, expected = encoded.split("$")
        digest = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, base64.b64decode(expected))


# ---------------------------------------------------------------- rendering


def _e(value) -> str:
    return html.escape(str(value), quote=True)


STYLE = """
body{font-family:sans-serif;margin:2em;max-width:70em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #999;padding:.2em .6em;text-align:right}
th{background:#eee}.small{background:#fbb;font-weight:bold}.hidden{color:#888}
.flags li{color:#a00}pre{background:#f6f6f6;padding:.6em;overflow:auto;max-height:30em;white-space:pre-wrap}
dl{margin:.2em 0 .2em 1em}dt{font-weight:bold}form.inline{display:inline}
textarea{width:40em;height:4em}.error{color:#a00;font-weight:bold}
"""


def page(title: str, body: str) -> bytes:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{_e(title)}</h1>{body}</body></html>").encode()


def render_value(value, min_cell: int, depth: int = 0) -> str:
    """A typed output as a person reads it: count tables as tables, the rest as nested lists."""
    if depth > 12:
        return "<pre>…</pre>"
    if isinstance(value, dict) and value.get("type") == "count_table":
        return render_table(value, min_cell)
    if isinstance(value, dict):
        items = "".join(f"<dt>{_e(k)}</dt><dd>{render_value(v, min_cell, depth + 1)}</dd>" for k, v in value.items())
        return f"<dl>{items}</dl>"
    if isinstance(value, list):
        if all(not isinstance(v, (dict, list)) for v in value):
            shown = ", ".join(_e(json.dumps(v)) for v in value[:200])
            return f"[{shown}{', …' if len(value) > 200 else ''}] <small>({len(value)} values)</small>"
        return "<ol start='0'>" + "".join(f"<li>{render_value(v, min_cell, depth + 1)}</li>"
                                         for v in value[:100]) + "</ol>"
    return _e(json.dumps(value))


def render_table(table: dict, min_cell: int) -> str:
    levels, counts = table.get("levels") or [], table.get("counts")
    dims = table.get("dimensions") or []

    def cell(c) -> str:
        if c is None:
            return "<td class='hidden'>hidden</td>"
        css = " class='small'" if isinstance(c, int) and 0 < c < min_cell else ""
        return f"<td{css}>{_e(c)}</td>"

    caption = f"<caption>{_e(' × '.join(map(str, dims)))} (total {_e(table.get('total'))})</caption>"
    if len(levels) == 1 and isinstance(counts, list):
        head = "".join(f"<th>{_e(v)}</th>" for v in levels[0])
        return f"<table>{caption}<tr>{head}</tr><tr>{''.join(cell(c) for c in counts)}</tr></table>"
    if len(levels) == 2 and isinstance(counts, list):
        head = "<th></th>" + "".join(f"<th>{_e(v)}</th>" for v in levels[1])
        rows = "".join(f"<tr><th>{_e(label)}</th>{''.join(cell(c) for c in (row or []))}</tr>"
                       for label, row in zip(levels[0], counts))
        return f"<table>{caption}<tr>{head}</tr>{rows}</table>"
    return f"<pre>{_e(json.dumps(table, indent=1)[:SHOW_BYTES])}</pre>"


def text_block(data: bytes, what: str) -> str:
    if not data:
        return f"<p><em>no {_e(what)}</em></p>"
    note = f"<p><small>the first {SHOW_BYTES} bytes are shown</small></p>" if len(data) >= SHOW_BYTES else ""
    return f"{note}<pre>{_e(data.decode('utf-8', 'replace'))}</pre>"


# ---------------------------------------------------------------- the server


class Steward:
    """State shared by the request handlers: config, airlock, sessions."""

    def __init__(self, config: NodeConfig):
        self.config = config
        self.airlock = Airlock(config.state_dir)
        self.min_cell = Thresholds.from_env(config.algorithm_env).min_cell
        self.sessions: dict[str, tuple[float, str]] = {}  # token → (expires at, CSRF token)
        self.failures: list[float] = []
        self.lock = threading.Lock()

    def login(self, password: str) -> str | None:
        with self.lock:
            now = time.time()
            self.failures = [t for t in self.failures if now - t < LOCKOUT_SECONDS]
            if len(self.failures) >= LOCKOUT_FAILURES:
                return None
        if not self.config.steward.password_hash or not check_password(password, self.config.steward.password_hash):
            with self.lock:
                self.failures.append(time.time())
            return None
        token = secrets.token_urlsafe(32)
        with self.lock:
            self.sessions[token] = (time.time() + SESSION_SECONDS, secrets.token_urlsafe(32))
        return token

    def session(self, token: str | None) -> str | None:
        """The session's CSRF token, or None when the cookie names no live session."""
        if not token:
            return None
        with self.lock:
            found = self.sessions.get(token)
            if found is None or found[0] < time.time():
                self.sessions.pop(token, None)
                return None
            return found[1]

    def logout(self, token: str | None) -> None:
        with self.lock:
            self.sessions.pop(token or "", None)

    def earlier_releases(self, requester: str | None) -> list[dict]:
        if not requester:
            return []
        return [e for e in self.airlock.decisions.entries()
                if e.get("requester") == requester and str(e.get("decision", "")).startswith(RELEASED)]


class Handler(BaseHTTPRequestHandler):
    server_version = "vantage-steward"
    steward: Steward  # set on the class made by serve()

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        log.info("steward page: %s", format % args)

    # ------------------------------------------------------------ plumbing

    def _send(self, status: int, body: bytes = b"", *, location: str | None = None, cookie: str | None = None):
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        # Not no-referrer: under it a browser sends "Origin: null" with the page's own forms.
        self.send_header("Referrer-Policy", "same-origin")
        self.send_header("Content-Security-Policy",
                         "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'")
        if location:
            self.send_header("Location", location)
        if cookie is not None:
            self.send_header("Set-Cookie", cookie)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        self._send(status, page(HTTPStatus(status).phrase, f"<p class='error'>{_e(message)}</p><p><a href='/'>back</a></p>"))

    def _host_ok(self) -> bool:
        """Only requests addressed to this loopback page: a web page elsewhere that resolves
        its own name to 127.0.0.1 (DNS rebinding) sends another Host, and another Origin."""
        port = self.server.server_address[1]
        allowed = {f"127.0.0.1:{port}", f"localhost:{port}"}
        if self.headers.get("Host") not in allowed:
            return False
        origin = self.headers.get("Origin")
        return origin is None or origin in {f"http://{h}" for h in allowed}

    def _token(self) -> str | None:
        cookie = SimpleCookie(self.headers.get("Cookie") or "")
        return cookie[COOKIE].value if COOKIE in cookie else None

    def _form(self) -> dict[str, str] | None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return None
        if length > MAX_FORM_BYTES:
            return None
        fields = parse_qs(self.rfile.read(length).decode("utf-8", "replace"), keep_blank_values=True)
        return {k: v[0] for k, v in fields.items()}

    # ------------------------------------------------------------ routes

    def do_GET(self):  # noqa: N802 - the base class's name
        if not self._host_ok():
            return self._error(403, "This page answers on its loopback address only.")
        if self.path == "/login":
            return self._send(200, self._login_page())
        csrf = self.steward.session(self._token())
        if csrf is None:
            return self._send(303, location="/login")
        if self.path == "/":
            return self._send(200, self._list_page(csrf))
        if self.path.startswith("/runs/"):
            return self._detail(self.path[len("/runs/"):], csrf)
        return self._error(404, "No such page.")

    def do_POST(self):  # noqa: N802
        if not self._host_ok():
            return self._error(403, "This page answers on its loopback address only.")
        form = self._form()
        if form is None:
            return self._error(400, "The form is too large.")
        if self.path == "/login":
            token = self.steward.login(form.get("password", ""))
            if token is None:
                return self._send(401, self._login_page("Wrong password, or too many tries: wait a minute."))
            return self._send(303, location="/", cookie=f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/")
        token = self._token()
        csrf = self.steward.session(token)
        if csrf is None:
            return self._send(303, location="/login")
        if not hmac.compare_digest(form.get("csrf", ""), csrf):
            return self._error(403, "The form's CSRF token is missing or wrong: reload the page.")
        if self.path == "/logout":
            self.steward.logout(token)
            return self._send(303, location="/login", cookie=f"{COOKIE}=; Max-Age=0; Path=/")
        if self.path.startswith("/runs/") and self.path.endswith("/decide"):
            return self._decide(self.path[len("/runs/"):-len("/decide")], form, csrf)
        return self._error(404, "No such page.")

    # ------------------------------------------------------------ pages

    def _login_page(self, error: str = "") -> bytes:
        message = f"<p class='error'>{_e(error)}</p>" if error else ""
        return page("Vantage node: data steward", f"{message}<form method='post' action='/login'>"
                    "<label>Password <input type='password' name='password' id='password' autofocus></label> "
                    "<button type='submit' id='login'>Log in</button></form>")

    def _list_page(self, csrf: str) -> bytes:
        entries = self.steward.airlock.entries()
        timeout = self.steward.config.output.hold_timeout
        rows = "".join(
            f"<tr><td><a href='/runs/{_e(m['name'])}' class='entry'>run {_e(m['run_id'])}</a></td>"
            f"<td>{_e(m['task'].get('created_by_username') or '?')}</td><td>{_e(m['verdict']['output_type'])}</td>"
            f"<td>{_e(m['verdict']['size'])}</td><td>{len(m['verdict']['flags'])}</td><td>{_e(m['state'])}</td>"
            f"<td>{_e(time.strftime('%Y-%m-%d %H:%M', time.gmtime(m['held_at'] + timeout)))} UTC</td></tr>"
            for m in entries
        )
        table = ("<table id='held'><tr><th>run</th><th>requester</th><th>type</th><th>bytes</th><th>flags</th>"
                 f"<th>state</th><th>rejected unreviewed at</th></tr>{rows}</table>") if entries else \
            "<p id='empty'>Nothing is waiting for review.</p>"
        return page("Held results", table + self._logout(csrf))

    def _logout(self, csrf: str) -> str:
        return (f"<form method='post' action='/logout' class='inline'><input type='hidden' name='csrf' "
                f"value='{_e(csrf)}'><button type='submit' id='logout'>Log out</button></form>")

    def _detail(self, name: str, csrf: str, error: str = "", status: int = 200) -> None:
        airlock = self.steward.airlock
        try:
            meta = airlock.get(name)
            output = airlock.read(name, "output", SHOW_BYTES)
            log_text = airlock.read(name, "log", SHOW_BYTES)
            run_input = airlock.read(name, "input", SHOW_BYTES)
        except AirlockError as exc:
            return self._error(404, str(exc))
        task, verdict = meta["task"], meta["verdict"]
        flags = "".join(f"<li>{_e(f)}</li>" for f in verdict["flags"]) or "<li>none</li>"
        rendered = self._render_output(output, verdict["output_type"])
        earlier = self.steward.earlier_releases(task.get("created_by_username"))
        history = "".join(
            f"<li>run {_e(e['run_id'])}: {_e(e['decision'])} by {_e(e['actor'])} at "
            f"{_e(time.strftime('%Y-%m-%d %H:%M', time.gmtime(e['at'])))} UTC ({_e(e.get('output_type'))})</li>"
            for e in earlier) or "<li>none</li>"
        signer = _e(task.get("signer")) if task.get("signer") else "not known to this node (see the digest)"
        decided = meta["state"] != HELD
        decision = meta.get("decision") or {}
        actions = (f"<p id='decided'>Decided: {_e(meta['state'])} by {_e(decision.get('actor'))}"
                   f"{': ' + _e(decision.get('reason')) if decision.get('reason') else ''}. "
                   "The node agent sends it at its next sweep.</p>") if decided else self._actions(name, csrf, verdict)
        body = f"""
<p><a href='/'>all held results</a></p>
{f"<p class='error' id='error'>{_e(error)}</p>" if error else ""}
<h2>Run {_e(meta['run_id'])} of task {_e(task.get('id'))}</h2>
<dl>
<dt>requester</dt><dd id='requester'>{_e(task.get('created_by_username') or '?')} (user {_e(task.get('created_by'))})</dd>
<dt>organisation</dt><dd>{_e(task.get('init_organization'))} (collaboration {_e(task.get('collaboration'))})</dd>
<dt>image</dt><dd id='image'>{_e(task.get('image'))}</dd><dt>digest</dt><dd>{_e(task.get('digest') or '?')}</dd>
<dt>signer</dt><dd>{signer}</dd><dt>method</dt><dd>{_e(task.get('method'))}</dd>
<dt>run status</dt><dd>{_e(meta['outcome']['status'])} (exit code {_e(meta['outcome']['exit_code'])})</dd>
<dt>output</dt><dd>{_e(verdict['output_type'])}, {_e(verdict['size'])} bytes</dd>
</dl>
<h3>Why it was held</h3><ul class='flags' id='flags'>{flags}</ul>
<h3>Output</h3><div id='output'>{rendered}</div>
<h3>Log</h3><div id='log'>{text_block(log_text, 'log')}</div>
<h3>Task input</h3><div id='input'>{text_block(run_input, 'input')}</div>
<h3>Earlier releases to this requester</h3><ul id='history'>{history}</ul>
<h3>Decision</h3>{actions}
{self._logout(csrf)}"""
        self._send(status, page(f"Held result: run {meta['run_id']}", body))

    def _render_output(self, output: bytes, output_type: str) -> str:
        if not output:
            return "<p><em>no output</em></p>"
        if output_type != "opaque" and len(output) < SHOW_BYTES:
            try:
                return render_value(json.loads(output), self.steward.min_cell)
            except ValueError:
                pass
        return text_block(output, "output")

    def _actions(self, name: str, csrf: str, verdict: dict) -> str:
        hidden = f"<input type='hidden' name='csrf' value='{_e(csrf)}'>"
        target = f"/runs/{_e(name)}/decide"
        suppress_button = (f"<form method='post' action='{target}' class='inline'>{hidden}"
                           "<input type='hidden' name='decision' value='suppress'>"
                           "<button type='submit' id='release-suppressed'>Release with small cells suppressed"
                           "</button></form> ") if verdict["output_type"] == "count_table" else ""
        return (f"<form method='post' action='{target}' class='inline'>{hidden}"
                "<input type='hidden' name='decision' value='release'>"
                "<button type='submit' id='release'>Release as it is</button></form> " + suppress_button +
                f"<form method='post' action='{target}'>{hidden}<input type='hidden' name='decision' value='reject'>"
                f"<p><label>Reason (the researcher sees it)<br><textarea name='reason' id='reason' "
                f"maxlength='{MAX_REASON}'></textarea></label></p>"
                "<button type='submit' id='reject'>Reject</button></form>")

    def _decide(self, name: str, form: dict, csrf: str) -> None:
        choice, reason = form.get("decision"), form.get("reason", "").strip()
        if choice not in ("release", "suppress", "reject"):
            return self._detail(name, csrf, "Choose release, release with suppression, or reject.", 400)
        if choice == "reject" and not reason:
            return self._detail(name, csrf, "A rejection needs a reason: the researcher sees it.", 400)
        if len(reason) > MAX_REASON:
            return self._detail(name, csrf, f"The reason is longer than {MAX_REASON} characters.", 400)
        try:
            if choice == "suppress":
                # Fail here, not at delivery, when the output cannot be suppressed.
                suppress(json.loads(self.steward.airlock.read(name, "output")), self.steward.min_cell)
            self.steward.airlock.decide(name, decision=REJECTED if choice == "reject" else RELEASED,
                                        actor="steward", reason=reason, suppress=choice == "suppress")
        except AirlockError as exc:
            return self._detail(name, csrf, str(exc), 409)
        except (ValueError, KeyError, TypeError):
            return self._detail(name, csrf, "This output cannot be suppressed: release or reject it.", 400)
        return self._send(303, location=f"/runs/{name}")


def serve(config: NodeConfig, *, port: int | None = None) -> ThreadingHTTPServer:
    """The page's server, bound to 127.0.0.1 only; the caller runs serve_forever()."""
    steward = Steward(config)
    handler = type("StewardHandler", (Handler,), {"steward": steward})
    server = ThreadingHTTPServer(("127.0.0.1", config.steward.port if port is None else port), handler)
    server.daemon_threads = True
    return server
