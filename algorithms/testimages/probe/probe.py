"""Probe algorithm: reads the vantage6 container contract and runs one method.

Methods (the input's "method"; arguments in "kwargs"):
  partial     count rows and sum `column` of the first requested CSV database
  env         the decoded contract environment
  crash       print to stderr and exit with `code` (default 3)
  sleep       print, sleep `seconds`, then output {"slept": seconds}
  bad_output  write text that is not JSON
  escape      try to leave the sandbox; output what each attempt gave
  central     through the node proxy, as vantage6's algorithm client does: list the
              collaboration's organisations, create a `partial` subtask for the first
              `count` of them, poll its status, read its results and add them up
"""

import base64
import csv
import json
import os
import socket
import sys
import time
import urllib.request


def env(name, default=None):
    value = os.environ.get(name)
    if value is None:
        return default
    return base64.b32decode(value.replace("!", "=")).decode("utf-8")


def database(label):
    return env(f"{label.upper()}_DATABASE_URI"), env(f"{label.upper()}_DATABASE_TYPE")


def requested_labels():
    return [label for label in env("USER_REQUESTED_DATABASE_LABELS", "").split(",") if label]


def partial(column="value"):
    uri, _type = database(requested_labels()[0])
    rows, total = 0, 0.0
    with open(uri, newline="") as fh:
        for row in csv.DictReader(fh):
            rows += 1
            total += float(row[column])
    return {"rows": rows, "sum": total}


def contract_env():
    names = ["INPUT_FILE", "OUTPUT_FILE", "TOKEN_FILE", "TEMPORARY_FOLDER", "HOST", "PORT", "API_PATH",
             "USER_REQUESTED_DATABASE_LABELS", "DB_LABELS"]
    for label in requested_labels():
        names += [f"{label.upper()}_DATABASE_URI", f"{label.upper()}_DATABASE_TYPE"]
    names += [name for name in os.environ if name.startswith("ALGO_")]
    with open(env("TOKEN_FILE")) as fh:
        token = fh.read()
    return {"env": {name: env(name) for name in names}, "token": token, "uid": os.getuid()}


def crash(code=3):
    print("probe: about to fail", file=sys.stderr, flush=True)
    sys.exit(code)


def sleep(seconds=5):
    print(f"probe: sleeping {seconds} s", flush=True)
    for i in range(int(seconds * 10)):
        time.sleep(0.1)
        if i % 10 == 9:
            print(f"probe: {(i + 1) // 10} s", flush=True)
    return {"slept": seconds}


def attempt(action):
    """'ok: ...' when the action worked, else the error it raised."""
    try:
        return f"ok: {action()}"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def write(path):
    def action():
        with open(path, "a") as fh:
            fh.write("probe was here\n")
        return path
    return action


def read(path):
    def action():
        with open(path, "rb") as fh:
            return len(fh.read())
    return action


def read_text(path):
    def action():
        with open(path) as fh:
            return fh.read()
    return action


def connect(host, port):
    def action():
        with socket.create_connection((host, port), timeout=3):
            return f"connected to {host}:{port}"
    return action


def escape(server_port=None, other_files=()):
    label = requested_labels()[0] if requested_labels() else None
    data_uri = database(label)[0] if label else None
    with open("/proc/self/status") as fh:
        status = dict(line.split(":", 1) for line in fh if ":" in line)
    result = {
        "interfaces": sorted(os.listdir("/sys/class/net")),
        "connect_server": attempt(connect("127.0.0.1", server_port)) if server_port else None,
        "proxy_users": attempt(lambda: proxy_call("GET", "/api/users/")),
        "write_data": attempt(write(data_uri)) if data_uri else None,
        "write_root": attempt(write("/probe-was-here")),
        "write_usr": attempt(write("/usr/lib/probe-was-here")),
        "write_input": attempt(write(env("INPUT_FILE"))),
        "write_tmp": attempt(write("/tmp/probe")),
        "write_temporary_folder": attempt(write(os.path.join(env("TEMPORARY_FOLDER"), "probe"))),
        "read_other": {path: attempt(read(path)) for path in other_files},
        "mnt_run": sorted(os.listdir("/mnt/run")),
        "create_in_run": attempt(write("/mnt/run/extra")),
        # What the container can learn of its host: its mount table, boot and kernel.
        "mountinfo": attempt(lambda: open("/proc/self/mountinfo").read()),
        "host_files": {path: attempt(read_text(path)) for path in (
            "/proc/cmdline", "/proc/version", "/proc/sys/kernel/random/boot_id")},
        "uid": os.getuid(),
        "cap_eff": status.get("CapEff", "").strip(),
        "no_new_privs": status.get("NoNewPrivs", "").strip(),
    }
    print(json.dumps(result), flush=True)
    return result


def proxy_call(method, path, body=None):
    """One call to the node proxy, the way vantage6's client makes it."""
    with open(env("TOKEN_FILE")) as fh:
        token = fh.read().strip()
    url = f"{env('HOST')}:{env('PORT')}{env('API_PATH')}{path}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def token_claims():
    with open(env("TOKEN_FILE")) as fh:
        payload = fh.read().strip().split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def central(column="value", count=2):
    claims = token_claims()
    organizations = proxy_call("GET", f"/organization?collaboration_id={claims['collaboration_id']}")["data"]
    chosen = sorted(org["id"] for org in organizations)[:count]
    partial_input = base64.b64encode(json.dumps(
        {"method": "partial", "args": [], "kwargs": {"column": column}}).encode()).decode()
    task = proxy_call("POST", "/task", {
        "name": "probe subtask", "image": claims["image"], "collaboration_id": claims["collaboration_id"],
        "description": "partial sums", "organizations": [{"id": org, "input": partial_input} for org in chosen],
        "databases": [{"label": "default"}]})
    print(f"probe: subtask {task['id']} for organisations {chosen}", flush=True)
    while (status := proxy_call("GET", f"/task/{task['id']}/status")["status"]) not in (
            "completed", "failed", "killed by user"):
        time.sleep(0.2)
    if status != "completed":
        raise RuntimeError(f"subtask {task['id']} ended {status}")
    results, page = [], 1
    while True:
        answer = proxy_call("GET", f"/result?task_id={task['id']}&page={page}")
        results += [json.loads(base64.b64decode(entry["result"])) for entry in answer["data"]]
        if not answer["links"].get("next"):
            break
        page += 1
    return {"organizations": chosen, "subtask": task["id"], "rows": sum(r["rows"] for r in results),
            "sum": sum(r["sum"] for r in results)}


METHODS = {"partial": partial, "env": contract_env, "crash": crash, "sleep": sleep, "escape": escape,
           "central": central}


def main():
    with open(env("INPUT_FILE")) as fh:
        request = json.load(fh)
    method = request.get("method")
    if method == "bad_output":
        with open(env("OUTPUT_FILE"), "w") as fh:
            fh.write("this is {not json")
        return
    output = METHODS[method](*request.get("args", []), **request.get("kwargs", {}))
    with open(env("OUTPUT_FILE"), "w") as fh:
        json.dump(output, fh)


if __name__ == "__main__":
    main()
