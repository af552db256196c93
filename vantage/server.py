"""The server process: the ASGI application under uvicorn (httptools, uvloop).

    python -m vantage.server [-b HOST] [-p PORT | -u SOCKET] [options] vantage.asgi:application

One event loop serves HTTP and websockets on one port. An HTTP request's body is read
whole on the loop first (vantage.body: timeouts, size limit, a cap on bodies arriving at
once), then the request runs in Django on a pool of worker threads (vantage.wsgi_bridge),
so a slow client never holds a thread. Responses go out with back-pressure: uvicorn
holds back a chunk while the connection's send buffer is full, so a 1 GiB download moves
through a bounded buffer (tests/live/test_result_streaming.py).

It refuses to listen beyond loopback with the development SECRET_KEY, or with DEBUG on
unless --debug-off-loopback forces it (refusal()).

Until 2026-11 this was daphne, patched to stream bodies. On the same trivial request
uvicorn with httptools spent 76 us of CPU where daphne (Twisted) spent 202, and with the
thread bridge 215 against 427 (bench/README.md): a tenth to a fifth of a small API
request. Daphne's options that deployments use are kept (-b, -p, -u, --proxy-headers,
--access-log, -v), and the line the tests and scripts wait for is printed as daphne did:
"Listening on TCP address HOST:PORT", with the real port when asked for port 0.
"""

import argparse
import importlib
import ipaddress
import os
import socket
import sys

import uvicorn
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

LOG_LEVELS = {0: "warning", 1: "info", 2: "debug"}
BACKLOG = 2048  # uvicorn's default
DEFAULT_PORT = 8000
# Open websockets are told the server is going away (close code 1012) on SIGTERM; a
# request still running after this long is cut off rather than holding up the stop.
GRACEFUL_SHUTDOWN_SECONDS = 10


class UsageError(Exception):
    pass


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m vantage.server", description=__doc__.split("\n\n")[0])
    parser.add_argument("application", help="the ASGI application, as module:attribute")
    parser.add_argument("-b", "--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("-p", "--port", type=int, help="TCP port; 0 picks a free one (default 8000)")
    parser.add_argument("-u", "--unix-socket", help="listen on this Unix socket instead of TCP")
    parser.add_argument("--proxy-headers", action="store_true",
                        help="take the client address and scheme from X-Forwarded-For/-Proto "
                             "(only from --forwarded-allow-ips)")
    parser.add_argument("--forwarded-allow-ips", default="127.0.0.1",
                        help="comma-separated proxies trusted with --proxy-headers (default 127.0.0.1)")
    parser.add_argument("--root-path", default="", help="URL prefix the application is mounted under")
    parser.add_argument("--access-log", metavar="FILE",
                        help="write one line per request to FILE ('-' for standard output)")
    parser.add_argument("--keep-alive", type=int, default=5, help="idle keep-alive timeout, s (default 5)")
    parser.add_argument("--debug-off-loopback", action="store_true",
                        help="serve with DEBUG on although listening beyond loopback (refused otherwise)")
    parser.add_argument("-v", "--verbosity", type=int, choices=sorted(LOG_LEVELS), default=1,
                        help="0 warnings only, 1 start-up and errors (default), 2 debug")
    args = parser.parse_args(argv)
    if args.unix_socket and args.port is not None:
        parser.error("give either --port or --unix-socket, not both")
    if args.port is None:
        args.port = DEFAULT_PORT
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port}: not a port number (0-65535)")
    return args


def load_application(target: str):
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise UsageError(f"application {target!r}: expected module:attribute, e.g. vantage.asgi:application")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise UsageError(f"application {target!r}: {module_name} has no attribute {attribute!r}") from None


def on_loopback(args) -> bool:
    """Whether only this machine can connect: a Unix socket, or a bind address that is loopback only."""
    if args.unix_socket:
        return True
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(args.bind or None, None, proto=socket.IPPROTO_TCP)}
    except OSError:
        return False  # binding will fail and say why
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def refusal(args, settings) -> str | None:
    """Why this configuration must not listen where it was asked to, or None.

    The development SECRET_KEY is in the repository: anyone could sign a token with it,
    so it may serve only this machine. DEBUG shows settings and code in its error pages.
    """
    if on_loopback(args):
        return None
    from vantage.settings import DEVELOPMENT_SECRET_KEY

    where = args.bind or "every interface"
    if settings.SECRET_KEY == DEVELOPMENT_SECRET_KEY:
        return (f"refusing to listen on {where} with the development key: set SECRET_KEY "
                "(or SECRET_KEY_FILE) to a long random value")
    if settings.DEBUG and not args.debug_off_loopback:
        return (f"refusing to listen on {where} with DEBUG on: set DEBUG=false "
                "(or pass --debug-off-loopback to force it)")
    return None


def listening_socket(args) -> tuple[socket.socket, str]:
    """The listening socket and its address for the log line.

    Made here, before the event loop starts, so that port 0 resolves to the real port,
    and listening already, so that whoever reads the line may connect at once (the
    connection waits in the backlog until the loop accepts it).
    """
    if args.unix_socket:
        if os.path.exists(args.unix_socket):
            os.unlink(args.unix_socket)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(args.unix_socket)
        sock.listen(BACKLOG)
        return sock, f"Listening on UNIX socket {args.unix_socket}"
    family = socket.AF_INET6 if ":" in args.bind else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.bind, args.port))
    sock.listen(BACKLOG)
    host, port = sock.getsockname()[:2]
    return sock, f"Listening on TCP address {host}:{port}"


def access_log_config(path: str | None, level: str) -> dict:
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "server": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
            "access": {"()": "uvicorn.logging.AccessFormatter", "use_colors": False,
                       "fmt": '%(asctime)s %(client_addr)s "%(request_line)s" %(status_code)s'},
        },
        "handlers": {"server": {"class": "logging.StreamHandler", "formatter": "server", "stream": "ext://sys.stderr"}},
        "loggers": {
            "uvicorn": {"handlers": ["server"], "level": level.upper(), "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "INFO", "propagate": False},
        },
    }
    if path:
        config["handlers"]["access"] = (
            {"class": "logging.StreamHandler", "formatter": "access", "stream": "ext://sys.stdout"} if path == "-"
            else {"class": "logging.FileHandler", "formatter": "access", "filename": path}
        )
        config["loggers"]["uvicorn.access"]["handlers"] = ["access"]
    return config


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    level = LOG_LEVELS[args.verbosity]
    try:
        application = load_application(args.application)
        if settings.configured and (refused := refusal(args, settings)):
            raise UsageError(refused)
        sock, listening = listening_socket(args)
    except (UsageError, OSError, ImproperlyConfigured) as error:
        print(f"vantage.server: {error}", file=sys.stderr)
        return 2
    config = uvicorn.Config(
        application,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        ws_per_message_deflate=False,  # small JSON events: compressing costs more CPU than it saves
        lifespan="off",
        log_config=access_log_config(args.access_log, level),
        log_level=level,
        access_log=bool(args.access_log),
        proxy_headers=args.proxy_headers,
        forwarded_allow_ips=args.forwarded_allow_ips,
        root_path=args.root_path,
        server_header=False,
        timeout_keep_alive=args.keep_alive,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        backlog=BACKLOG,
    )
    server = uvicorn.Server(config)
    print(listening, file=sys.stderr, flush=True)
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
