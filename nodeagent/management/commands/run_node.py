"""`python manage.py run_node --config node.toml [--check]`: the node agent.

Only parses arguments, installs signal handlers and runs the loop object. It never
touches the server's database (no system checks, no model imports), so a hospital
runs it with no DATABASE_URL and no migrations.
"""

import logging
import os
import signal
import sys
import threading

from django.core.management.base import BaseCommand

from nodeagent import checks, config
from nodeagent.agent import FatalError, NodeAgent
from nodeagent.decision_log import DecisionLog, LogError

EXIT_CONFIG = 2


def stop_on_signals(stop: threading.Event, agent) -> None:
    """SIGTERM and SIGINT stop the agent.

    Python runs a signal handler on the main thread between any two bytecodes, also while
    that thread holds one of the agent's locks (the jobs lock, an Event's condition), which
    the handler could then never take. So the handler only writes the signal's number to
    a pipe, and a thread of its own sets the stop flag and wakes the agent's loop.
    """
    read_fd, write_fd = os.pipe()

    def relay():
        while True:
            signum = os.read(read_fd, 1)[0]
            logging.getLogger("nodeagent").info("signal %s: stopping (running algorithms keep running)", signum)
            stop.set()
            agent.wake()

    threading.Thread(target=relay, name="signals", daemon=True).start()

    def handler(signum, frame):
        os.write(write_fd, bytes([signum]))

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


class Command(BaseCommand):
    help = "Run the node agent next to this site's data (see docs/node.md)."
    requires_system_checks = []
    requires_migrations_checks = False

    def add_arguments(self, parser):
        parser.add_argument("--config", required=True, help="path of node.toml")
        parser.add_argument("--check", action="store_true",
                            help="check config, API key, Docker, registries and databases, then exit (0 = ready)")
        parser.add_argument("--verify-log", action="store_true",
                            help="verify the node's hash-chained, keyed decision log, then exit (0 = intact)")

    def handle(self, *args, **options):
        try:
            node_config = config.load(options["config"])
        except config.ConfigError as exc:
            self.stderr.write(str(exc))
            sys.exit(EXIT_CONFIG)

        if options["verify_log"]:
            decisions = DecisionLog(node_config.state_dir)
            try:
                result = decisions.verify()
            except (OSError, LogError) as exc:
                self.stderr.write(f"run_node: {decisions.path}: {exc}")
                sys.exit(1)
            if not result.ok:
                self.stderr.write(f"run_node: {decisions.path}: {result.entries} entries verify, then {result.problem}")
                sys.exit(1)
            self.stdout.write(f"{decisions.path}: {result.entries} entries, chain and keys verify")
            return

        if options["check"]:
            findings = checks.run_checks(node_config)
            self.stdout.write(f"vantage node check: {node_config.source}")
            self.stdout.write(checks.render(findings))
            sys.exit(1 if any(f.level == checks.FAIL for f in findings) else 0)

        stop = threading.Event()
        agent = NodeAgent(node_config, stop)
        stop_on_signals(stop, agent)
        try:
            agent.run()
        except FatalError as exc:
            self.stderr.write(f"run_node: {exc}")
            sys.exit(1)
