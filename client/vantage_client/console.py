"""`vantage`: the researcher's command line for tasks.

    vantage login --url https://vantage.example.org --username alice [--otp 123456]
    vantage whoami | collaborations | nodes | algorithms
    vantage tasks list [--collaboration 3] [--status completed]
    vantage tasks create --collaboration 3 --algorithm cox --method cox --arg covariates=age,sex \\
                         --arg duration=time --arg event=cens --database gbsg2 [--wait]
    vantage tasks create --collaboration 3 --image registry/x:1 --method summary --kwargs '{"columns": ["age"]}'
    vantage tasks show|wait|results|logs|kill ID      (results: --plot out.svg)

Every command takes `--json` (before or after the command) and then prints JSON only,
for scripts. The session (server address and tokens) is kept in
$VANTAGE_CONFIG_DIR/session.json (default ~/.config/vantage), readable by its owner only;
the password comes from VANTAGE_PASSWORD or is asked for. An error is one line on
stderr and exit status 1 (2 for bad arguments).
"""

from __future__ import annotations

import argparse
import getpass
import inspect
import json
import os
import sys
from pathlib import Path
from typing import Any

from .client import Client
from .errors import VantageError
from .present import check_arguments, result_tables, save_plot, schema_value



# ---------------------------------------------------------------- session file


def _config_dir() -> Path:
    return Path(os.environ.get("VANTAGE_CONFIG_DIR") or Path.home() / ".config" / "vantage")


def _session_path() -> Path:
    return _config_dir() / "session.json"


def _save_session(client: Client, username: str) -> None:
    folder = _config_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = _session_path()
    access, refresh = client.tokens
    # Created 0600 before anything is written: the tokens are never readable by others.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"url": client.url, "username": username, "access": access, "refresh": refresh}, handle)


def _load_client(url: str | None) -> tuple[Client, dict]:
    try:
        saved = json.loads(_session_path().read_text())
    except FileNotFoundError:
        raise VantageError("not logged in: run `vantage login --url URL --username NAME` first") from None
    except (OSError, ValueError) as exc:
        raise VantageError(f"the session file {_session_path()} cannot be read ({exc}): log in again") from None
    if url and url.rstrip("/") != saved.get("url"):
        raise VantageError(f"logged in to {saved.get('url')}, not {url}: log in there first")
    client = Client(saved["url"])
    client.use_tokens(saved.get("access"), saved.get("refresh"))
    return client, saved


# ---------------------------------------------------------------- output


def _emit(args, value: Any, text: str | None = None) -> None:
    if args.json:
        print(json.dumps(value, indent=2, default=str))
    elif text is not None:
        print(text)


def table(header: list[str], rows: list[list]) -> str:
    """Rows as aligned plain-text columns."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


# ---------------------------------------------------------------- commands


def cmd_login(args) -> None:
    if not args.url:
        raise VantageError("give the server address: --url https://vantage.example.org (or VANTAGE_URL)")
    password = os.environ.get("VANTAGE_PASSWORD") or getpass.getpass(f"password for {args.username}: ")
    client = Client(args.url)
    if args.otp:
        if "otp" not in inspect.signature(client.login).parameters:
            raise VantageError("this version of the client cannot send a one-time code: upgrade vantage-client")
        user = client.login(args.username, password, otp=args.otp)
    else:
        user = client.login(args.username, password)
    _save_session(client, args.username)
    _emit(args, user, f"logged in to {client.url} as {user.get('username', args.username)}")


def cmd_logout(args) -> None:
    try:
        _session_path().unlink()
    except FileNotFoundError:
        pass
    _emit(args, {"logged_out": True}, "logged out")


def cmd_whoami(args, client: Client) -> None:
    user = client.whoami()
    organization = client.get(f"organizations/{user['organization']}/") if user.get("organization") else None
    _emit(args, {**user, "organization_name": organization and organization.get("name")},
          f"{user.get('username')} (id {user.get('id')}) of "
          f"{organization['name'] if organization else 'no organisation'}, at {client.url}")


def cmd_collaborations(args, client: Client) -> None:
    items = client.collaborations.list()
    _emit(args, items, table(["id", "name", "status", "encrypted", "organisations"],
                             [[c["id"], c["name"], c.get("status"), c.get("encrypted"), len(c.get("organizations", []))]
                              for c in items]))


def cmd_nodes(args, client: Client) -> None:
    items = client.list("nodes/", collaboration=args.collaboration)
    _emit(args, items, table(["id", "name", "organisation", "collaboration", "status", "last seen"],
                             [[n["id"], n.get("name"), n.get("organization"), n.get("collaboration"), n.get("status"),
                               n.get("last_seen_at") or n.get("last_seen")] for n in items]))


def cmd_algorithms(args, client: Client) -> None:
    items = client.list("algorithms/")
    lines = []
    for algorithm in items:
        lines.append(f"{algorithm['id']}  {algorithm['name']}  [{algorithm.get('status')}]  {algorithm.get('image')}")
        for fn in algorithm.get("functions") or []:
            if not isinstance(fn, dict):
                continue
            schema = fn.get("arguments") if isinstance(fn.get("arguments"), dict) else {}
            required = set(schema.get("required") or [])
            arguments = ", ".join(f"{name}{'' if name in required else '?'}: {spec.get('type', 'any')}"
                                  for name, spec in (schema.get("properties") or {}).items() if isinstance(spec, dict))
            lines.append(f"    {fn.get('kind', 'partial'):8} {fn.get('name')}({arguments})")
    _emit(args, items, "\n".join(lines) if lines else "no algorithms you may see")


def cmd_tasks_list(args, client: Client) -> None:
    items = client.list("tasks/", collaboration=args.collaboration, status=args.status)
    if not args.all:
        items = [t for t in items if t.get("parent") is None]
    _emit(args, items, table(["id", "name", "method", "status", "collaboration", "created"],
                             [[t["id"], t.get("name"), t.get("method"), t.get("status"), t.get("collaboration"),
                               (t.get("created_at") or "")[:19]] for t in items]))


def _organization_names(client: Client) -> dict[int, str]:
    return {o["id"]: o["name"] for o in client.organizations.list()}


def cmd_tasks_show(args, client: Client) -> None:
    task = client.tasks.get(args.id)
    names = _organization_names(client)
    runs = client.list("runs/", task=args.id)
    text = "\n".join([
        f"task {task['id']} {task.get('name')}: {task.get('status')}",
        f"  method {task.get('method')}, image {task.get('image')}",
        f"  collaboration {task.get('collaboration')}, created {(task.get('created_at') or '')[:19]}",
        "",
        table(["run", "organisation", "status", "exit code", "finished"],
              [[r["id"], names.get(r["organization"], r["organization"]), r["status"], r.get("exit_code"),
                (r.get("finished_at") or "")[:19]] for r in runs]),
    ])
    _emit(args, {**task, "runs": runs}, text)


def _resolve_algorithm(client: Client, given: str) -> dict:
    items = client.list("algorithms/")
    found = [a for a in items if str(a["id"]) == given or a["name"] == given]
    if not found:
        raise VantageError(f"no catalogue algorithm named {given!r}: `vantage algorithms` lists them")
    approved = [a for a in found if a.get("status") == "approved"] or found
    return approved[0]


def _function(algorithm: dict, method: str) -> dict | None:
    return next((fn for fn in algorithm.get("functions") or []
                 if isinstance(fn, dict) and fn.get("name") == method), None)


def parse_arguments(pairs: list[str], raw_kwargs: str | None, schema: dict | None) -> dict:
    """--arg name=value pairs (typed by the catalogue's schema when there is one, else
    JSON where the value parses as JSON, lists where it has commas) over --kwargs JSON."""
    kwargs: dict = {}
    if raw_kwargs:
        try:
            kwargs = json.loads(raw_kwargs)
        except ValueError as exc:
            raise VantageError(f"--kwargs is not valid JSON: {exc}") from None
        if not isinstance(kwargs, dict):
            raise VantageError("--kwargs must be a JSON object")
    properties = (schema or {}).get("properties") or {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise VantageError(f"--arg {pair!r}: write it as name=value")
        kwargs[name] = schema_value(name, value, properties.get(name) if isinstance(properties, dict) else None)
    return kwargs


def cmd_tasks_create(args, client: Client) -> None:
    if bool(args.algorithm) == bool(args.image):
        raise VantageError("name either --algorithm (from the catalogue) or --image")
    algorithm = _resolve_algorithm(client, args.algorithm) if args.algorithm else None
    schema = None
    if algorithm is not None:
        fn = _function(algorithm, args.method)
        if fn is None:
            names = ", ".join(str(f.get("name")) for f in algorithm.get("functions") or [] if isinstance(f, dict))
            raise VantageError(f"{algorithm['name']} has no method {args.method!r} (it has: {names or 'none listed'})")
        schema = fn.get("arguments") if isinstance(fn.get("arguments"), dict) else None
    kwargs = parse_arguments(args.arg or [], args.kwargs, schema)
    check_arguments(kwargs, schema)
    organizations = [int(o) for o in args.organizations.split(",")] if args.organizations else None
    if organizations is None:
        collaboration = client.collaborations.get(args.collaboration)
        organizations = [o if isinstance(o, int) else o["id"] for o in collaboration.get("organizations", [])]
        if algorithm is not None and any(isinstance(f, dict) and f.get("kind") == "central" and
                                         f.get("name") == args.method for f in algorithm.get("functions") or []):
            # A central function runs once, at the researcher's own organisation.
            organizations = [client.whoami()["organization"]]
    task = client.tasks.create(
        collaboration=args.collaboration, method=args.method, organizations=organizations,
        image=args.image, algorithm=algorithm["id"] if algorithm else None, kwargs=kwargs,
        databases=args.database or [], name=args.name, description=args.description or "",
    )
    if args.wait:
        task = _wait(args, client, task["id"])
    _emit(args, task, f"task {task['id']} created: {len(task.get('runs', []))} run(s), {task.get('status')}"
          if not args.wait else f"task {task['id']}: {task.get('status')}")


def _wait(args, client: Client, task_id: int) -> dict:
    """Wait for the task, printing each organisation's run status as it changes (stderr)."""
    names = _organization_names(client)
    shown: dict[int, str] = {}

    def report(run: dict) -> None:
        if args.json or run.get("id") is None or shown.get(run["id"]) == run.get("status"):
            return
        shown[run["id"]] = run.get("status")
        organization = names.get(run.get("organization"), f"organisation {run.get('organization')}")
        print(f"  {organization}: {run.get('status')}", file=sys.stderr, flush=True)

    # Where each run stands now: events only tell what changes from here on.
    for run in client.list("runs/", task=task_id):
        report(run)

    def progress(event: dict) -> None:
        if event.get("type") == "run.updated" and isinstance(event.get("run"), dict):
            report(event["run"])

    return client.tasks.wait(task_id, timeout=args.timeout, progress=progress)


def cmd_tasks_wait(args, client: Client) -> None:
    task = _wait(args, client, args.id)
    _emit(args, task, f"task {task['id']}: {task['status']}")
    if task["status"] != "completed":
        raise SystemExit(1)


def cmd_tasks_results(args, client: Client) -> None:
    names = _organization_names(client)
    runs = client.runs(args.id)
    out = []
    for run in runs:
        out.append({"run": run["id"], "organization": run["organization"],
                    "organization_name": names.get(run["organization"]), "status": run["status"],
                    "result": run.get("result")})
    if args.plot:
        drawn = [r["result"] for r in out if r["result"] is not None]
        if not drawn:
            raise VantageError(f"task {args.id} has no result to plot yet")
        save_plot(drawn[0], args.plot)
    if args.json:
        _emit(args, out)
        return
    blocks = []
    for item in out:
        head = f"== {item['organization_name'] or item['organization']} (run {item['run']}): {item['status']}"
        if item["result"] is None:
            blocks.append(head + "\n(no result)")
            continue
        parts = [head]
        for title, header, rows, note in result_tables(item["result"]):
            parts.append((f"{title}\n" if title else "") + table(header, rows) + (f"\n{note}" if note else ""))
        blocks.append("\n\n".join(parts))
    if args.plot:
        blocks.append(f"plot written to {args.plot}")
    print("\n\n".join(blocks) if blocks else f"task {args.id} has no runs you may see")


def cmd_tasks_logs(args, client: Client) -> None:
    names = _organization_names(client)
    runs = [client.get(f"runs/{r['id']}/") for r in client.list("runs/", task=args.id)]
    _emit(args, [{"run": r["id"], "organization": r["organization"], "log": r.get("log", "")} for r in runs],
          "\n".join(f"== {names.get(r['organization'], r['organization'])} (run {r['id']}, {r['status']})\n"
                    f"{r.get('log') or '(empty)'}" for r in runs))


def cmd_tasks_kill(args, client: Client) -> None:
    answer = client.tasks.kill(args.id)
    _emit(args, answer, f"kill requested for task {args.id}")


# ---------------------------------------------------------------- parser


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON only")
    common.add_argument("--url", default=argparse.SUPPRESS, help="the server (default: the one logged in to)")
    parser = argparse.ArgumentParser(prog="vantage", description="Vantage tasks from the command line.",
                                     parents=[common])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    login = commands.add_parser("login", parents=[common], help="log in and keep the session")
    login.add_argument("--username", required=True)
    login.add_argument("--otp", help="the one-time code of your second factor")
    login.set_defaults(run=cmd_login, session=False)
    commands.add_parser("logout", parents=[common], help="forget the session").set_defaults(run=cmd_logout,
                                                                                             session=False)
    for name, run, text in (("whoami", cmd_whoami, "who is logged in"),
                            ("collaborations", cmd_collaborations, "your collaborations"),
                            ("algorithms", cmd_algorithms, "the catalogue, with methods and arguments")):
        commands.add_parser(name, parents=[common], help=text).set_defaults(run=run)
    nodes = commands.add_parser("nodes", parents=[common], help="nodes and whether they are online")
    nodes.add_argument("--collaboration", type=int)
    nodes.set_defaults(run=cmd_nodes)

    tasks = commands.add_parser("tasks", parents=[common], help="list, create, follow and read tasks")
    actions = tasks.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", parents=[common], help="your tasks (jobs; --all adds subtasks)")
    listing.add_argument("--collaboration", type=int)
    listing.add_argument("--status")
    listing.add_argument("--all", action="store_true")
    listing.set_defaults(run=cmd_tasks_list)
    create = actions.add_parser("create", parents=[common], help="create a task")
    create.add_argument("--collaboration", type=int, required=True)
    create.add_argument("--algorithm", help="catalogue algorithm, by name or id")
    create.add_argument("--image", help="an image instead of a catalogue algorithm")
    create.add_argument("--method", required=True)
    create.add_argument("--arg", action="append", metavar="NAME=VALUE", help="an argument (repeat it)")
    create.add_argument("--kwargs", help="arguments as a JSON object")
    create.add_argument("--organizations", help="organisation ids, comma-separated (default: all, or yours for a "
                                                "central method)")
    create.add_argument("--database", action="append", help="database label (repeat it)")
    create.add_argument("--name")
    create.add_argument("--description")
    create.add_argument("--wait", action="store_true", help="wait for it to finish")
    create.add_argument("--timeout", type=float)
    create.set_defaults(run=cmd_tasks_create)
    for name, run, text in (("show", cmd_tasks_show, "a task and its runs"),
                            ("wait", cmd_tasks_wait, "wait until it ends, with progress per organisation"),
                            ("results", cmd_tasks_results, "results as tables"),
                            ("logs", cmd_tasks_logs, "each run's log"),
                            ("kill", cmd_tasks_kill, "stop the task's job")):
        action = actions.add_parser(name, parents=[common], help=text)
        action.add_argument("id", type=int)
        if name == "wait":
            action.add_argument("--timeout", type=float)
        if name == "results":
            action.add_argument("--plot", metavar="OUT.svg", help="draw the result to a file (needs matplotlib)")
        action.set_defaults(run=run)
    return parser


def run(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.json = getattr(args, "json", False)
    args.url = getattr(args, "url", None) or os.environ.get("VANTAGE_URL")
    if not getattr(args, "session", True):
        args.run(args)
        return 0
    client, saved = _load_client(args.url)
    try:
        args.run(args, client)
    finally:
        # A refreshed access token is kept for the next command.
        if client.tokens != (saved.get("access"), saved.get("refresh")):
            _save_session(client, saved.get("username", ""))
    return 0


def main(argv: list[str] | None = None) -> None:
    try:
        code = run(argv)
    except VantageError as exc:
        print(f"vantage: {exc}", file=sys.stderr)
        code = 1
    except OSError as exc:
        print(f"vantage: {exc.strerror or exc}: {getattr(exc, 'filename', '') or ''}".rstrip(": "), file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
