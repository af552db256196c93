"""Vantage algorithm toolkit: write federated methods, test them locally, run them on nodes.

    from vantage_algorithms import partial, central, Policy, DisclosureError, outputs

See algorithms/README.md.
"""

from vantage_algorithms import outputs
from vantage_algorithms.client import Client, Pending
from vantage_algorithms.errors import AlgorithmError, DisclosureError, SubtaskFailed
from vantage_algorithms.methods import central, partial
from vantage_algorithms.policy import Policy, PolicyError

__all__ = ["AlgorithmError", "Client", "DisclosureError", "Pending", "Policy", "PolicyError", "SubtaskFailed",
           "central", "outputs", "partial"]
