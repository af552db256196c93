#!/usr/bin/env python3
"""Instructions per result upload, counted by valgrind: an A/B measure that machine noise does not move.

    python3 bench/upload_instructions.py            # prints instructions per finish request
    python3 bench/upload_instructions.py --small 20 --large 60   # quicker, a little less exact
    python3 bench/upload_instructions.py --cpu 1500   # CPU time per upload instead (no valgrind; noisy)

Wall-clock and CPU-time figures of one operation move by ±25 % from run to run on these
shared machines, more than most single changes to the server's Python gain or cost.
Instruction counts do not: the same commit gives the same count to about 0.1 %, whatever
else the machine runs. This script creates a fresh SQLite database (migrated outside
valgrind), then, under `valgrind --tool=callgrind`, seeds one node with claimed and
started runs (as many in both counts) and sends `--small` and then `--large` result uploads (4 KiB, base64 in
JSON, as bench/api.py sends them) through Django's WSGI handler in-process: middleware,
authentication, validation, the service, the response. Uvicorn and the thread hop are
not in it. Per upload = (count at --large - count at --small) / (--large - --small):
start-up, seeding and warm-up cancel out.

Run it in two checkouts (a `git worktree` of the old commit) to compare them. Needs
valgrind (Debian: valgrind) and the project's .venv. Takes a few minutes.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = REPO / ".venv" / "bin" / "python"
RESULT_BYTES = 4096
WARM_UP = 20

# Runs inside valgrind, in the project's .venv: seed, warm up, then `count` uploads.
CHILD = r"""
import base64, io, json, sys, time
import django
django.setup()
from django.core.wsgi import get_wsgi_application
from accounts.services import user_create
from collaborations.authentication import node_access_token
from collaborations.services import collaboration_create, node_create, organization_create
from tasks.services import run_claim, run_start, task_create

count, warm_up, seeded, result_bytes = (int(arg) for arg in sys.argv[1:5])
org = organization_create(actor=None, name="bench-org")
collaboration = collaboration_create(actor=None, name="bench-collab", organizations=[org])
node, _key = node_create(actor=None, collaboration=collaboration, organization=org, name="bench-node")
user = user_create(actor=None, username="bench", password="Bench-Passw0rd-2024!", organization=org,
                   is_superuser=True)
runs = []
for _ in range(seeded):  # the same in both counts, so the seeding cancels out
    task = task_create(actor=user, collaboration=collaboration, name="t", image="bench/image:1", method="m",
                       organization_inputs={org.pk: b"{}"})
    run = task.runs.get()
    run_claim(run_id=run.pk, node=node)
    run_start(run_id=run.pk, node=node)
    runs.append(run.pk)
token = str(node_access_token(node))
application = get_wsgi_application()
body = json.dumps({"status": "completed", "exit_code": 0, "log": "bench",
                   "result": base64.b64encode(b"x" * result_bytes).decode()}).encode()

def finish(run_id):
    environ = {
        "REQUEST_METHOD": "POST", "SCRIPT_NAME": "", "PATH_INFO": f"/api/runs/{run_id}/finish/",
        "QUERY_STRING": "", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.version": (1, 0), "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr, "wsgi.multithread": True,
        "wsgi.multiprocess": True, "wsgi.run_once": False, "SERVER_NAME": "testserver", "SERVER_PORT": "80",
        "REMOTE_ADDR": "127.0.0.1", "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)),
        "HTTP_HOST": "testserver", "HTTP_AUTHORIZATION": f"Bearer {token}", "HTTP_ACCEPT": "application/json",
    }
    status = []
    response = application(environ, lambda s, headers, exc_info=None: status.append(s))
    b"".join(response)
    response.close()
    if not status[0].startswith("200"):
        sys.exit(f"finish answered {status[0]}")

for run_id in runs[:warm_up]:
    finish(run_id)
started = time.process_time()
for run_id in runs[warm_up:warm_up + count]:
    finish(run_id)
print(f"cpu-seconds {time.process_time() - started!r}")
"""


class Failed(Exception):
    pass


def environment(data_dir: Path) -> dict:
    env = dict(os.environ)
    env.update({
        "VANTAGE_DATA_DIR": str(data_dir), "DJANGO_SETTINGS_MODULE": "vantage.settings", "DEBUG": "false",
        "SECRET_KEY": "upload-instructions-bench-" + "k" * 32, "ALLOWED_HOSTS": "testserver",
        "PYTHONPATH": str(REPO), "PYTHONHASHSEED": "0",
    })
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    return env


def child(template: Path, count: int, seeded: int, *, under: list[str]) -> subprocess.CompletedProcess:
    """One child process, on a copy of the migrated database, sending `count` uploads after the warm-up."""
    with tempfile.TemporaryDirectory(prefix="vantage-upload-ir-") as tmp:
        data_dir = Path(tmp)
        shutil.copy(template / "db.sqlite3", data_dir / "db.sqlite3")
        proc = subprocess.run(
            [*under, str(PYTHON), "-c", CHILD, str(count), str(WARM_UP), str(seeded), str(RESULT_BYTES)],
            env=environment(data_dir), cwd=REPO, capture_output=True, text=True, timeout=3600,
        )
    if proc.returncode != 0:
        raise Failed(f"the child failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    return proc


def instructions(template: Path, count: int, seeded: int) -> int:
    """Instructions of one child process that sends `count` uploads after the warm-up."""
    proc = child(template, count, seeded, under=["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"])
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if not found:
        raise Failed("valgrind printed no instruction count")
    return int(found.group(1))


def cpu_seconds(template: Path, count: int) -> float:
    """CPU time of `count` uploads after the warm-up, in one child process without valgrind."""
    found = re.search(r"^cpu-seconds (\S+)$", child(template, count, WARM_UP + count, under=[]).stdout, re.M)
    if not found:
        raise Failed("the child printed no CPU time")
    return float(found.group(1))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=40, help="uploads in the first count (default 40)")
    parser.add_argument("--large", type=int, default=140, help="uploads in the second count (default 140)")
    parser.add_argument("--cpu", type=int, metavar="N",
                        help="instead of counting instructions, time N uploads' CPU without valgrind: Django's "
                             "share of an upload, to set beside the server's CPU per upload in bench/api.py")
    args = parser.parse_args(argv)
    if not 0 <= args.small < args.large:
        parser.error("--large must be more than --small (and --small at least 0)")
    if args.cpu is not None and args.cpu < 1:
        parser.error("--cpu must be at least 1")
    if args.cpu is None and shutil.which("valgrind") is None:
        print("upload_instructions: FAILED: valgrind is not installed (Debian: apt-get install valgrind)",
              file=sys.stderr)
        return 2
    if not PYTHON.exists():
        print(f"upload_instructions: FAILED: no {PYTHON} (run ./vantage.sh test once to create it)", file=sys.stderr)
        return 2
    try:
        with tempfile.TemporaryDirectory(prefix="vantage-upload-db-") as tmp:
            template = Path(tmp)
            migrate = subprocess.run([str(PYTHON), "manage.py", "migrate", "-v0"], env=environment(template),
                                     cwd=REPO, capture_output=True, text=True, timeout=600)
            if migrate.returncode != 0:
                raise Failed(f"migrate failed: {migrate.stderr.strip().splitlines()[-1:]}")
            if args.cpu is not None:
                seconds = cpu_seconds(template, args.cpu)
            else:
                seeded = WARM_UP + args.large
                small, large = instructions(template, args.small, seeded), instructions(template, args.large, seeded)
    except (Failed, subprocess.TimeoutExpired) as exc:
        print(f"upload_instructions: FAILED: {exc}", file=sys.stderr)
        return 2
    if args.cpu is not None:
        print(f"{seconds / args.cpu * 1e3:.3f} ms of CPU per result upload in-process "
              f"({args.cpu} uploads after {WARM_UP} to warm up; {RESULT_BYTES}-byte results)")
        return 0
    per_upload = (large - small) / (args.large - args.small)
    print(f"{per_upload / 1e6:.3f} M instructions per result upload "
          f"({args.small} and {args.large} uploads after {WARM_UP} to warm up; {RESULT_BYTES}-byte results)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
