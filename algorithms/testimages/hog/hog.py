"""Hog: a hostile algorithm for the node agent's host-cost tests: each method tries to make the
node pay for it, and outputs what it saw.

  proxy_flood   bodies with a negative length, a huge declared length, no length, and
                more connections than the proxy serves, all at the node proxy
  fill_scratch  write TEMPORARY_FOLDER full, then try to run a program from it
  huge_output   write `mib` MiB to the output file
  other_image   create a subtask naming another image, and one in another collaboration
"""

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request

MIB = 1024 * 1024


def env(name, default=None):
    value = os.environ.get(name)
    if value is None:
        return default
    return base64.b32decode(value.replace("!", "=")).decode("utf-8")


def _address():
    return env("HOST").split("://", 1)[-1], int(env("PORT"))


def _send(head, body_mib=0):
    """Send a request head and up to body_mib MiB of body; the status the proxy answered."""
    sock = socket.create_connection(_address(), timeout=30)
    sent = 0
    try:
        sock.sendall(head)
        chunk = b"x" * MIB
        for _ in range(body_mib):
            sock.sendall(chunk)
            sent += 1
    except OSError:
        pass  # the proxy closed the connection: the rest of the body is never read
    try:
        answer = sock.recv(200).decode(errors="replace")
    except OSError as exc:
        answer = f"no answer: {exc}"
    sock.close()
    return {"status": answer.split(" ")[1] if answer.startswith("HTTP/") else answer, "mib_sent": sent}


def proxy_flood(mib=400):
    path = f"{env('API_PATH')}/task"
    results = {
        "negative": _send(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".encode(), mib),
        "huge": _send(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {mib * MIB}\r\n\r\n".encode(), mib),
        "missing": _send(f"POST {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), 4),
    }
    idle = []
    # 16: the relay in the forwarder takes two threads a connection, under its pids limit.
    for _ in range(16):
        sock = socket.create_connection(_address(), timeout=30)
        sock.sendall(b"GET /blobstream/status HTTP/1.1\r\n")  # never finished: holds a handler
        idle.append(sock)
    busy = 0
    for sock in idle:
        sock.settimeout(0.5)
        try:
            busy += b" 503 " in sock.recv(200)
        except OSError:
            pass
    for sock in idle:
        sock.close()
    results["refused_connections"] = busy
    return results


def fill_scratch():
    folder = env("TEMPORARY_FOLDER")
    written, error = 0, None
    chunk = b"\0" * MIB
    try:
        while written < 4096:  # files of 4 MiB, under any per-file bound: only the folder's size stops it
            with open(os.path.join(folder, f"fill-{written // 4}"), "wb") as fh:
                for _ in range(4):
                    fh.write(chunk)
                    fh.flush()
                    written += 1
    except OSError as exc:
        error = exc.strerror
    for name in os.listdir(folder):
        os.remove(os.path.join(folder, name))
    program = os.path.join(folder, "true")
    shutil.copy("/bin/true", program)
    os.chmod(program, 0o755)
    try:
        subprocess.run([program], check=True)
        ran = "ran"
    except OSError as exc:
        ran = exc.strerror
    return {"written_mib": written, "error": error, "exec": ran}


def huge_output(mib=64):
    with open(env("OUTPUT_FILE"), "wb") as fh:
        fh.write(b"[")
        for _ in range(mib):
            fh.write(b"0," * (MIB // 2))
        fh.write(b"0]")
    return None


def _create(body):
    with open(env("TOKEN_FILE")) as fh:
        token = fh.read().strip()
    host, port = _address()
    request = urllib.request.Request(f"http://{host}:{port}{env('API_PATH')}/task", method="POST",
                                     data=json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return {"status": response.status}
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, "body": exc.read().decode(errors="replace")[:500]}


def other_image(organization):
    entry = {"id": organization, "input": base64.b64encode(json.dumps({"method": "partial"}).encode()).decode()}
    return {
        "image": _create({"name": "sub", "image": "127.0.0.1:5000/someone/else:1", "organizations": [entry]}),
        "collaboration": _create({"name": "sub", "collaboration_id": 999999, "organizations": [entry]}),
    }


METHODS = {"proxy_flood": proxy_flood, "fill_scratch": fill_scratch, "huge_output": huge_output,
           "other_image": other_image}


def main():
    with open(env("INPUT_FILE")) as fh:
        request = json.load(fh)
    output = METHODS[request["method"]](*request.get("args", []), **request.get("kwargs", {}))
    if output is not None:
        print(json.dumps(output), flush=True)
        with open(env("OUTPUT_FILE"), "w") as fh:
            json.dump(output, fh)


if __name__ == "__main__":
    sys.exit(main())
