"""The researcher's client for the Vantage REST API.

    client = Client("https://vantage.example.org", private_key="org-key.pem")
    client.login("alice", password)
    task = client.tasks.create(collaboration=1, image="registry/alg@sha256:...", method="partial",
                               kwargs={"column": "age"}, organizations=[1, 2], databases=["default"])
    client.tasks.wait(task["id"], timeout=600, progress=print)
    print(client.results(task["id"]))

In an encrypted collaboration, each organisation's input is sealed for that
organisation's public key before it leaves this process, and results (sealed by the
nodes for the researcher's organisation) are opened with the private key given here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import time
from typing import Any, Callable

import requests

from . import crypto
from .errors import VantageError

log = logging.getLogger(__name__)

FINAL_TASK_STATUSES = ("completed", "failed", "killed")
FINAL_RUN_STATUSES = ("completed", "failed", "crashed", "killed", "rejected", "timed_out")
AWAITING_RELEASE = "awaiting_release"  # held at the node for its data steward: not final
PAGE_SIZE = 500
TRANSIENT_STATUSES = (502, 503, 504)  # a proxy in front of a restarting server
REFRESH_MARGIN = 30  # seconds: refresh an access token this close to its expiry before using it


def _id(value) -> int:
    """Accept an id or an object as the API returns it (a dict with "id")."""
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, bool) or not isinstance(value, int):
        raise VantageError(f"expected an id (a number) or an object with an id, got {value!r}")
    return value


def _token_claims(token: str) -> dict:
    """The payload of a JWT, unverified: the client only reads its expiry and user id."""
    try:
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error):
        return {}


class Client:
    def __init__(self, url: str, *, private_key=None, private_key_password: bytes | None = None,
                 timeout: float = 30, verify: bool | str = True):
        """`private_key`: a path to the organisation's PEM private key, PEM bytes, or a
        key object; needed to read results in encrypted collaborations."""
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.verify = verify
        self.session.headers["Accept"] = "application/json"
        self._access: str | None = None
        self._refresh: str | None = None
        self.private_key = None
        self._encrypted: dict[int, bool] = {}
        if private_key is not None:
            self.use_private_key(private_key, private_key_password)
        self.collaborations = Collaborations(self)
        self.organizations = Organizations(self)
        self.tasks = Tasks(self)
        self.algorithms = Algorithms(self)
        self.nodes = Nodes(self)
        self.studies = Studies(self)
        self.runs = Runs(self)

    # ------------------------------------------------------------ session

    def login(self, username: str, password: str, otp: str | None = None) -> dict:
        """Log in; the client refreshes its access token by itself from then on.
        `otp`: the current code of the authenticator app (or a recovery code), once the
        account has a second factor. Returns the logged-in user as the API shows it."""
        body = {"username": username, "password": password}
        if otp is not None:
            body["otp"] = otp
        response = self._send("POST", "token/", json=body, auth=False)
        body = response.json()
        self._access, self._refresh = body["access"], body.get("refresh")
        return self.whoami()

    def logout(self, *, everywhere: bool = False) -> None:
        """End this login (its access and refresh tokens), or with `everywhere=True` every
        login, session and token of the account, on every device."""
        if self._access is None:
            return
        try:
            self._send("POST", "logout/everywhere/" if everywhere else "logout/").close()
        finally:
            self._access = self._refresh = None

    def whoami(self) -> dict:
        user_id = _token_claims(self.access_token).get("user_id")
        if user_id is None:
            raise VantageError("the access token names no user")
        return self.get(f"users/{user_id}/")

    @property
    def access_token(self) -> str:
        """A valid access token (refreshed when close to expiry), e.g. for the websocket."""
        if self._access is None:
            raise VantageError("not logged in: call login(username, password) first")
        expires = _token_claims(self._access).get("exp")
        if self._refresh and isinstance(expires, (int, float)) and expires - time.time() < REFRESH_MARGIN:
            self._refresh_access()
        return self._access

    def _refresh_access(self) -> None:
        if not self._refresh:
            raise VantageError("the session expired: log in again", status=401)
        try:
            response = self._send("POST", "token/refresh/", json={"refresh": self._refresh}, auth=False)
        except VantageError as exc:
            if exc.status == 401:
                raise VantageError("the session expired: log in again", status=401) from None
            raise
        body = response.json()
        self._access = body["access"]
        self._refresh = body.get("refresh", self._refresh)  # present when the server rotates them

    @property
    def tokens(self) -> tuple[str | None, str | None]:
        """The (access, refresh) tokens of this session, to keep it for a later process."""
        return self._access, self._refresh

    def use_tokens(self, access: str | None, refresh: str | None) -> None:
        """Continue a session kept from `tokens` (the `vantage` command line does)."""
        self._access, self._refresh = access, refresh

    def use_private_key(self, key, password: bytes | None = None) -> None:
        try:
            if isinstance(key, (str, os.PathLike)) and not str(key).lstrip().startswith("-----BEGIN"):
                key = crypto.read_private_key(key, password)
            elif isinstance(key, (str, bytes)):
                key = crypto.load_private_key(key, password)
        except crypto.KeyFormatError as exc:
            raise VantageError(f"the private key cannot be used: {exc}") from None
        self.private_key = key

    # ------------------------------------------------------------ HTTP

    def _send(self, method: str, path: str, *, auth: bool = True, **kwargs) -> requests.Response:
        if path.startswith(("http://", "https://")):
            url = path
        else:
            # "tasks/", "/tasks/" and "/api/tasks/" all name the same endpoint.
            relative = path.lstrip("/")
            url = f"{self.url}/api/{relative[4:] if relative.startswith('api/') else relative}"
        response = self._request(method, url, auth, kwargs)
        # An access token can expire between the expiry check and the request: refresh once.
        if auth and response.status_code == 401 and self._refresh:
            response.close()
            self._refresh_access()
            response = self._request(method, url, auth, kwargs)
        if response.status_code >= 400:
            error = VantageError.from_response(response)
            response.close()
            raise error
        return response

    def _request(self, method: str, url: str, auth: bool, kwargs: dict) -> requests.Response:
        headers = dict(kwargs.get("headers") or {})
        if auth:
            headers["Authorization"] = f"Bearer {self.access_token}"
        try:
            return self.session.request(method, url, timeout=self.timeout,
                                        **{**kwargs, "headers": headers})
        except requests.RequestException as exc:
            raise VantageError(f"cannot reach {self.url}: {type(exc).__name__}: {exc}") from None

    def get(self, path: str, **params) -> Any:
        return self._send("GET", path, params=params or None).json()

    def post(self, path: str, body: dict | None = None) -> Any:
        response = self._send("POST", path, json=body)
        return response.json() if response.content else None

    def patch(self, path: str, body: dict) -> Any:
        return self._send("PATCH", path, json=body).json()

    def list(self, path: str, **filters) -> list[dict]:
        """Every object of a list endpoint, following `next` to the last page."""
        params = {"page_size": PAGE_SIZE, **{k: v for k, v in filters.items() if v is not None}}
        page = self.get(path, **params)
        items = list(page.get("results", []))
        seen = set()
        while page.get("next"):
            if page["next"] in seen:
                raise VantageError(f"the server's pagination of {path} loops at {page['next']}")
            seen.add(page["next"])
            page = self._send("GET", page["next"]).json()
            items.extend(page.get("results", []))
        return items

    # ------------------------------------------------------------ encryption

    def collaboration_encrypted(self, collaboration) -> bool:
        collaboration_id = _id(collaboration)
        if collaboration_id not in self._encrypted:
            self._encrypted[collaboration_id] = bool(self.get(f"collaborations/{collaboration_id}/")["encrypted"])
        return self._encrypted[collaboration_id]

    def setup_encryption(self, key_path: str | os.PathLike, *, organization=None, bits: int = crypto.DEFAULT_RSA_BITS,
                         password: bytes | None = None) -> str:
        """Use the private key at `key_path` (created there first if missing, readable by
        its owner only) and publish its public key on the organisation (by default the
        logged-in user's). Returns the public key PEM."""
        if not os.path.exists(key_path):
            try:
                crypto.write_private_key(key_path, crypto.generate_private_key(bits), password)
            except (OSError, crypto.KeyFormatError) as exc:
                raise VantageError(f"cannot create the private key {key_path}: {exc}") from None
        self.use_private_key(key_path, password)
        organization_id = _id(organization) if organization is not None else self.whoami()["organization"]
        public_pem = crypto.public_key_pem(self.private_key)
        self.organizations.set_public_key(organization_id, public_pem)
        return public_pem

    def _open(self, data: bytes, encrypted: bool, what: str) -> Any:
        if encrypted:
            if self.private_key is None:
                raise VantageError(f"{what} is encrypted: give the organisation's private key "
                                   "(Client(..., private_key=path) or use_private_key)")
            try:
                data = crypto.decrypt(data, self.private_key)
            except crypto.EnvelopeError as exc:
                raise VantageError(f"{what} does not decrypt: {exc}") from None
        try:
            return json.loads(data)
        except (UnicodeDecodeError, ValueError) as exc:
            raise VantageError(f"{what} is not JSON: {exc}") from None

    # ------------------------------------------------------------ results

    def task_runs(self, task) -> list[dict]:
        """The task's runs, each with `result`: the decoded output of a completed run
        (decrypted in an encrypted collaboration), else None; `executed_digest` is the
        image digest the run's node verified and ran."""
        task = self.tasks.get(task) if not isinstance(task, dict) or "collaboration" not in task else task
        encrypted = self.collaboration_encrypted(task["collaboration"])
        # Small results come inline with the list (one request for the task); a larger
        # one is downloaded on its own.
        runs = self.list("runs/", task=task["id"], with_result="true")
        for run in runs:
            inline, run["result"] = run.get("result"), None
            if run["status"] == "completed" and run.get("result_size") is not None:
                data = self.download_result(run["id"]) if inline is None else self._inline_result(run, inline)
                run["result"] = self._open(data, encrypted, f"the result of run {run['id']}")
        return runs

    @staticmethod
    def _inline_result(run: dict, inline: str) -> bytes:
        """A result from the run list, checked against the SHA-256 the server recorded."""
        try:
            data = base64.b64decode(inline, validate=True)
        except (binascii.Error, ValueError):
            raise VantageError(f"the result of run {run['id']} arrived damaged (not base64)") from None
        _check_arrived(run["id"], run.get("result_sha256"), hashlib.sha256(data).hexdigest())
        return data

    def held(self, task) -> list[dict]:
        """The task's runs that an organisation's output gate holds for its data steward
        (status `awaiting_release`), each with `hold_info`: the output's type and size and
        the checks that flagged it. The result itself stays at that organisation until its
        steward releases it (the run then completes) or rejects it (the run is rejected,
        with the steward's reason in its log)."""
        return [run for run in self.list("runs/", task=_id(task), status=AWAITING_RELEASE)]

    def results(self, task) -> list:
        """The decoded results of the task's completed runs, in run order."""
        return [run["result"] for run in self.runs(task) if run["status"] == "completed"]

    def task_results(self, task, *, logs: bool = True) -> list:
        """The task's runs as Result objects: organisation, run, status, log and typed
        result, with to_frame(), plot() and an HTML view in notebooks."""
        from .results import task_results

        return task_results(self, task, logs=logs)

    def download_result(self, run_id: int) -> bytes:
        """A run's result file as stored (ciphertext in an encrypted collaboration), checked
        against the SHA-256 the server recorded."""
        response = self._send("GET", f"runs/{_id(run_id)}/result/", stream=True)
        with response:
            digest, chunks = hashlib.sha256(), []
            for chunk in response.iter_content(1024 * 1024):
                digest.update(chunk)
                chunks.append(chunk)
        _check_arrived(run_id, response.headers.get("X-Content-SHA256"), digest.hexdigest())
        return b"".join(chunks)


def _check_arrived(run_id: int, expected: str | None, actual: str) -> None:
    """A result's SHA-256 against the one the server recorded (when it sent one)."""
    if expected and expected != actual:
        raise VantageError(f"the result of run {run_id} arrived damaged (SHA-256 mismatch)")


class _Resource:
    path = ""

    def __init__(self, client: Client):
        self.client = client

    def list(self, **filters) -> list[dict]:
        return self.client.list(self.path, **filters)

    def get(self, obj) -> dict:
        return self.client.get(f"{self.path}{_id(obj)}/")


class Collaborations(_Resource):
    path = "collaborations/"


class Algorithms(_Resource):
    path = "algorithms/"


class Nodes(_Resource):
    path = "nodes/"


class Studies(_Resource):
    path = "studies/"


class Runs(_Resource):
    """`client.runs.list(task=...)`, `.get(id)`, `.log(id)`; and, as before,
    `client.runs(task)`: the task's runs with their decoded results."""

    path = "runs/"

    def __call__(self, task) -> list[dict]:
        return self.client.task_runs(task)

    def log(self, run) -> str:
        """What the run's algorithm printed (stdout and stderr), as its node streamed it."""
        return self.get(run).get("log") or ""


class Organizations(_Resource):
    path = "organizations/"

    def set_public_key(self, organization, public_key_pem: str) -> dict:
        """Publish an organisation's public key (the server checks it is a usable PEM key)."""
        return self.client.patch(f"{self.path}{_id(organization)}/", {"public_key": public_key_pem})


class Tasks(_Resource):
    path = "tasks/"

    def create(self, *, collaboration, method: str, organizations, image: str | None = None, algorithm=None,
               args: list | None = None, kwargs: dict | None = None, databases: list | None = None,
               name: str | None = None, description: str = "", study=None) -> dict:
        """Create a task. `organizations` is a list of ids (all get `args`/`kwargs`) or a
        dict {organisation id: {"args": [...], "kwargs": {...}}} for per-organisation
        input. Each input is `{"method", "args", "kwargs"}` as vantage6 algorithms read
        it, sealed for its organisation when the collaboration is encrypted."""
        if (image is None) == (algorithm is None):
            raise VantageError("name either an image or a catalogue algorithm")
        collaboration_id = _id(collaboration)
        if algorithm is not None:
            self._check_catalogue_arguments(algorithm, method, args, kwargs, organizations)
        if isinstance(organizations, dict):
            per_org = {_id(org): dict(value or {}) for org, value in organizations.items()}
        else:
            per_org = {_id(org): {} for org in organizations}
        if not per_org:
            raise VantageError("name at least one organisation")
        inputs = {}
        for org_id, given in per_org.items():
            unknown = set(given) - {"args", "kwargs"}
            if unknown:
                raise VantageError(f"organisation {org_id}: only args and kwargs may be given, not {sorted(unknown)}")
            inputs[org_id] = json.dumps({
                "method": method, "args": list(given.get("args", args or [])),
                "kwargs": dict(given.get("kwargs", kwargs or {})),
            }).encode()
        if self.client.collaboration_encrypted(collaboration_id):
            keys = self._public_keys(collaboration_id, list(inputs))
            inputs = {org_id: crypto.encrypt(payload, keys[org_id]) for org_id, payload in inputs.items()}
        body = {
            "collaboration": collaboration_id, "name": name or method, "description": description,
            "method": method,
            "organizations": [{"id": org_id, "input": base64.b64encode(payload).decode("ascii")}
                              for org_id, payload in inputs.items()],
            "databases": [{"label": db} if isinstance(db, str) else db for db in (databases or [])],
        }
        if image is not None:
            body["image"] = image
        else:
            body["algorithm"] = _id(algorithm)
        if study is not None:
            body["study"] = _id(study)
        return self.client.post(self.path, body)

    def _check_catalogue_arguments(self, algorithm, method: str, args, kwargs, organizations) -> None:
        """Refuse, before sending, arguments the catalogue entry's schema for `method` rules out."""
        from .present import check_arguments

        entry = algorithm if isinstance(algorithm, dict) and "functions" in algorithm else \
            self.client.algorithms.get(algorithm)
        functions = [f for f in entry.get("functions") or [] if isinstance(f, dict)]
        if functions and not any(f.get("name") == method for f in functions):
            raise VantageError(f"{entry.get('name')} has no method {method!r} "
                               f"(it has: {', '.join(str(f.get('name')) for f in functions)})")
        schema = next((f.get("arguments") for f in functions if f.get("name") == method), None)
        inputs = [(value or {}).get("kwargs", kwargs or {}) for value in organizations.values()] \
            if isinstance(organizations, dict) else [kwargs or {}]
        for given in inputs:
            check_arguments(dict(given), schema)

    def _public_keys(self, collaboration_id: int, organization_ids: list[int]) -> dict:
        found = {org["id"]: org for org in self.client.organizations.list()}
        keys = {}
        for org_id in organization_ids:
            org = found.get(org_id)
            if org is None:
                raise VantageError(f"organisation {org_id} is not visible to you")
            if not org.get("public_key"):
                raise VantageError(f"organisation {org_id} ({org.get('name')}) has no public key: collaboration "
                                   f"{collaboration_id} is encrypted, so every organisation needs one")
            try:
                keys[org_id] = crypto.load_public_key(org["public_key"])
            except crypto.KeyFormatError as exc:
                raise VantageError(f"organisation {org_id}: its public key cannot be used: {exc}") from None
        return keys

    def kill(self, task) -> dict:
        """Stop the task's job: pending runs end now, running ones are stopped by their nodes."""
        return self.client.post(f"{self.path}{_id(task)}/kill/")

    def wait(self, task, timeout: float | None = None, progress: Callable[[dict], None] | None = None,
             poll_interval: float = 2.0, live: bool | None = None, bar: bool | dict = False) -> dict:
        """Block until the task is completed, failed or killed; return it.

        Follows the task over the /ws/events/ websocket when the `websockets` package is
        installed (`live=False` forces polling). Every (re)connection is followed by a
        status read over HTTP, and a quiet socket is re-checked every `poll_interval` × 15
        seconds, so an end that happened before or between events is never missed.
        `progress(event)` gets each `run.updated` / `task.updated` event of this task (in
        polling mode, events of the same shape made from what changed).
        Raises VantageError when `timeout` seconds pass first. `bar=True` (or a dict of
        tqdm options) shows a progress bar of finished runs, per organisation (needs tqdm).
        """
        from . import live as live_events

        task_id = _id(task)
        if bar:
            from .progress import RunBar

            names = {o["id"]: o["name"] for o in self.client.organizations.list()}
            runs = self.client.list("runs/", task=task_id)
            progress = RunBar(len(runs), names, progress, **(bar if isinstance(bar, dict) else {}))
            try:
                for run in runs:  # where each run stands before any event
                    progress({"type": "run.updated", "run": run})
                return self.wait(task_id, timeout=timeout, progress=progress, poll_interval=poll_interval,
                                 live=live)
            finally:
                progress.close()
        deadline = None if timeout is None else time.monotonic() + timeout
        use_live = live_events.available() if live is None else live
        if use_live and not live_events.available():
            raise VantageError("live=True needs the websockets package (pip install 'vantage-client[live]')")
        if use_live:
            return live_events.wait(self.client, task_id, deadline, progress, poll_interval)
        return self._poll(task_id, deadline, progress, poll_interval)

    def _read(self, task_id: int) -> dict | None:
        """The task, or None while the server cannot be reached or is restarting."""
        try:
            return self.get(task_id)
        except VantageError as exc:
            if exc.status is None or exc.status in TRANSIENT_STATUSES:
                log.info("task %s: the server is away (%s); trying again", task_id, exc)
                return None
            raise

    @staticmethod
    def _late(task_id: int, status: str | None) -> VantageError:
        return VantageError(f"task {task_id} did not finish in time (still {status or 'unknown: server unreachable'})")

    def _poll(self, task_id: int, deadline: float | None, progress, poll_interval: float) -> dict:
        known: dict[int, str] = {}
        status = None
        while True:
            task = self._read(task_id)
            if task is not None:
                if progress is not None:
                    for run in task.get("runs", []):
                        if known.get(run["id"]) != run["status"]:
                            known[run["id"]] = run["status"]
                            progress({"type": "run.updated", "run": {**run, "task": task_id}})
                    if task["status"] != status:
                        progress({"type": "task.completed" if task["status"] in FINAL_TASK_STATUSES
                                  else "task.updated", "task": {"id": task_id, "status": task["status"]}})
                status = task["status"]
                if status in FINAL_TASK_STATUSES:
                    return task
            if deadline is not None and time.monotonic() >= deadline:
                raise self._late(task_id, status)
            time.sleep(poll_interval if deadline is None else max(0.0, min(poll_interval, deadline - time.monotonic())))
