"""A toolkit algorithm that opts in to round workers (tests/nodeagent/test_rounds_live.py).

`where` says which process answered (one id per Python process: a round worker serves
every round of its job at one node from one process, a container per run has a new one
each time); `nap` makes a round long enough to kill, time out or restart the agent under;
`die` ends the process mid-round as a crash would; `ask` is the central method that asks
them, round after round.
"""

import os
import time
import uuid

from vantage_algorithms import central, partial

PROCESS = uuid.uuid4().hex


@partial
def where(data, policy, *, nap: float = 0.0):
    if nap:
        print(f"rounds: napping {nap} s", flush=True)
        time.sleep(nap)
    return {"rows": len(data), "process": PROCESS}


@partial
def die(data, policy, *, code: int = 7):
    print("rounds: about to die", flush=True)
    os._exit(code)


@central
def ask(client, policy, *, method: str = "where", rounds: int = 1, nap: float = 0.0):
    kwargs = {"nap": nap} if method == "where" else {}
    return {"rounds": [client.run(method, kwargs) for _ in range(rounds)], "central": PROCESS}
