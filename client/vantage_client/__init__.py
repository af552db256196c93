"""Vantage researcher client: tasks, live progress, results, end-to-end encryption."""

from .client import Client
from .errors import VantageError

__all__ = ["Client", "VantageError"]
__version__ = "0.1.0"
