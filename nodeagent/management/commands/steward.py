"""`python manage.py steward --config node.toml`: the data steward's review page.

Serves on 127.0.0.1 only (port `[steward] port`, default 7602). `--hash-password` reads
a password (from the terminal, or one line of standard input) and prints the hash to
put in node.toml as `[steward] password_hash`. Like run_node, it never touches the
server's database.
"""

import getpass
import signal
import sys
import threading

from django.core.management.base import BaseCommand

from nodeagent import config, steward

EXIT_CONFIG = 2
MIN_PASSWORD = 12


class Command(BaseCommand):
    help = "Serve the data steward's page for this node's held results (see docs/node.md)."
    requires_system_checks = []
    requires_migrations_checks = False

    def add_arguments(self, parser):
        parser.add_argument("--config", help="path of node.toml")
        parser.add_argument("--port", type=int, help="override [steward] port")
        parser.add_argument("--hash-password", action="store_true",
                            help="read a password and print its hash for [steward] password_hash")

    def handle(self, *args, **options):
        if options["hash_password"]:
            password = getpass.getpass("steward password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
            if len(password) < MIN_PASSWORD:
                self.stderr.write(f"steward: the password must have at least {MIN_PASSWORD} characters")
                sys.exit(EXIT_CONFIG)
            self.stdout.write(steward.hash_password(password))
            return
        if not options["config"]:
            self.stderr.write("steward: --config node.toml is required")
            sys.exit(EXIT_CONFIG)
        try:
            node_config = config.load(options["config"])
        except config.ConfigError as exc:
            self.stderr.write(str(exc))
            sys.exit(EXIT_CONFIG)
        if not node_config.steward.password_hash:
            self.stderr.write(f"{node_config.source}: steward.password_hash: is required to serve the page "
                              "(make one with: manage.py steward --hash-password)")
            sys.exit(EXIT_CONFIG)
        try:
            server = steward.serve(node_config, port=options["port"])
        except OSError as exc:
            self.stderr.write(f"steward: cannot listen on 127.0.0.1:{options['port'] or node_config.steward.port}: "
                              f"{exc.strerror}")
            sys.exit(1)

        def request_stop(signum, frame):
            threading.Thread(target=server.shutdown, daemon=True).start()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        self.stdout.write(f"steward page on http://127.0.0.1:{server.server_address[1]}/", ending="\n")
        self.stdout.flush()
        try:
            server.serve_forever()
        finally:
            server.server_close()
