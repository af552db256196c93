"""Helper for bench/api.py that runs INSIDE the vantage6 4.15 virtualenv.

bench/api.py never imports this module; it runs it with the baseline
virtualenv's interpreter (``<venv>/bin/python bench/_vantage6.py ...``) so
that vantage6 and its pinned dependencies stay out of our own environment.

Subcommands:

  backlog  Insert N pending runs for one organisation directly into the
           vantage6 database (tasks + runs through vantage6's own SQLAlchemy
           models, one transaction). Creating 1,000 tasks through the v6 REST
           API would take about a minute at v6's ~20 task creations/s, so
           the backlog is written straight to the DB; the benchmarked
           operations themselves all go through HTTP.
  serve    Fallback server when uWSGI is not available: vantage6's Flask
           app under gevent's WSGI server (the production image uses uWSGI
           with gevent; see bench/README.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys


def _connect(config: str):
    # Importing vantage6.server monkey-patches with gevent; fine for a
    # short-lived helper process.
    from vantage6.cli.context.server import ServerContext
    from vantage6.server.model.base import Database

    ctx = ServerContext.from_external_config_file(config, False)
    Database().connect(uri=ctx.get_database_uri(), allow_drop_all=False)
    return ctx


def cmd_backlog(args: argparse.Namespace) -> int:
    _connect(args.config)
    from vantage6.server import db
    from vantage6.server.model.base import DatabaseSessionManager
    from vantage6.common.task_status import TaskStatus

    session = DatabaseSessionManager.get_session()
    org = session.query(db.Organization).filter_by(name=args.organization).one()
    collab = session.query(db.Collaboration).filter_by(name=args.collaboration).one()
    user = session.query(db.User).filter_by(username=args.user).one()
    job_id = db.Task.next_job_id()
    # The REST API stores the base64 text exactly as the client sent it.
    payload = args.input_b64
    now = dt.datetime.now(dt.timezone.utc)
    for i in range(args.count):
        task = db.Task(
            name=f"backlog-{i}",
            description="bench backlog",
            image=args.image,
            collaboration=collab,
            init_org=org,
            init_user=user,
            job_id=job_id + i,
            created_at=now,
        )
        session.add(task)
        session.add(
            db.TaskDatabase(task=task, database="default", parameters="{}")
        )
        session.add(
            db.Run(
                task=task,
                organization=org,
                input=payload,
                status=TaskStatus.PENDING,
                blob_storage_used=False,
            )
        )
    session.commit()
    pending = (
        session.query(db.Run)
        .filter(db.Run.organization_id == org.id)
        .filter(db.Run.finished_at.is_(None))
        .count()
    )
    print(json.dumps({"pending_for_org": pending}))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from vantage6.server import run_server
    from gevent.pywsgi import WSGIServer

    server_app = run_server(args.config, system_folders=False)
    # log=None: no per-request access log line (uWSGI runs with
    # --disable-logging in vantage6's image as well).
    WSGIServer((args.host, args.port), server_app.app, log=None).serve_forever()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="_vantage6.py")
    sub = p.add_subparsers(dest="cmd", required=True)

    b = sub.add_parser("backlog")
    b.add_argument("--config", required=True)
    b.add_argument("--organization", required=True)
    b.add_argument("--collaboration", required=True)
    b.add_argument("--user", required=True)
    b.add_argument("--image", required=True)
    b.add_argument("--input-b64", required=True)
    b.add_argument("--count", type=int, required=True)

    s = sub.add_parser("serve")
    s.add_argument("--config", required=True)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, required=True)

    args = p.parse_args(argv)
    return {"backlog": cmd_backlog, "serve": cmd_serve}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
