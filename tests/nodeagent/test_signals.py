"""SIGTERM stops the agent even when it lands while the agent's main thread holds the
lock that waking the agent takes (run_node.stop_on_signals)."""

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# In a process of its own: a handler that took the lock itself would hang it for good.
SCRIPT = """
import os, signal, threading, time
import django
django.setup()
from nodeagent.management.commands.run_node import stop_on_signals

class Agent:
    def __init__(self):
        self.lock = threading.Lock()  # as NodeAgent's jobs lock: not re-entrant
        self.woken = threading.Event()

    def wake(self):
        with self.lock:
            self.woken.set()

stop, agent = threading.Event(), Agent()
stop_on_signals(stop, agent)
with agent.lock:
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(10000):  # Python runs the handler between these bytecodes, the lock held
        pass
    time.sleep(0.2)
    held_throughout = not agent.woken.is_set()
print(held_throughout, stop.wait(5), agent.woken.wait(5))
"""


def test_sigterm_while_the_main_thread_holds_the_agents_lock_still_stops_it():
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                          env={"DJANGO_SETTINGS_MODULE": "vantage.settings", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True", "True"], done.stderr
