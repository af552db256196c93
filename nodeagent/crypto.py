"""End-to-end encryption on the node, for runs of encrypted collaborations.

The envelope format itself lives in one place, client/vantage_client/crypto.py, imported
here as the package vantage_client (requirements.txt installs the client: see docs/node.md).
This module adds what the node does with it:

- open a run's input with the node's private key before the container sees it;
- seal the run's output for the organisation that started the task before upload;
- in the node proxy, seal the inputs of subtasks a central container creates (for
  each target organisation's public key) and open their results for the container.

The container never handles ciphertext or keys: it reads and writes plain JSON as in
an unencrypted collaboration, so unmodified vantage6 images work in both.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import requests

from vantage_client import crypto as envelope

EnvelopeError = envelope.EnvelopeError
KeyFormatError = envelope.KeyFormatError
TIMEOUT = (5, 30)


class SealingError(Exception):
    """Why a run cannot be encrypted or decrypted: one line for the run's log."""


def is_encrypted(run: dict) -> bool:
    return bool(run.get("collaboration_encrypted"))


def _require_key(private_key, run: dict):
    if private_key is None:
        raise SealingError(f"collaboration {run.get('collaboration')} is encrypted but this node has no private "
                           "key ([encryption] private_key_file in node.toml)")
    return private_key


def open_input(run: dict, data: bytes, private_key) -> bytes:
    """The run's input as its container must read it: opened in an encrypted collaboration."""
    if not is_encrypted(run):
        return data
    try:
        return envelope.decrypt(data, _require_key(private_key, run))
    except EnvelopeError as exc:
        raise SealingError(f"the run's input does not decrypt with this node's private key: {exc}") from None


def fetch_public_key(server_url: str, container_token: str, organization_id: int) -> str:
    """An organisation's published public key, read with the run's container token
    (which may read the organisations of its collaboration; a node token may not)."""
    try:
        response = requests.get(f"{server_url.rstrip('/')}/api/organizations/{organization_id}/",
                                headers={"Authorization": f"Bearer {container_token}"}, timeout=TIMEOUT)
    except requests.RequestException as exc:
        raise SealingError(f"the public key of organisation {organization_id} could not be read: "
                           f"{type(exc).__name__}") from None
    if response.status_code != 200:
        raise SealingError(f"the public key of organisation {organization_id} could not be read: "
                           f"HTTP {response.status_code}")
    pem = response.json().get("public_key") or ""
    if not pem:
        raise SealingError(f"organisation {organization_id} has no public key to seal the result for")
    try:
        envelope.load_public_key(pem)
    except KeyFormatError as exc:
        raise SealingError(f"organisation {organization_id}'s public key cannot be used: {exc}") from None
    return pem


def seal_output(output: Path, sealed: Path, public_key_pem: str) -> None:
    """Write the sealed output next to the plain one, whole or not at all: a restart
    between the two steps finds the plain output still there and seals it again."""
    partial = sealed.with_name(f".{sealed.name}.partial")
    try:
        envelope.encrypt_file(output, partial, envelope.load_public_key(public_key_pem))
    except (OSError, KeyFormatError) as exc:
        partial.unlink(missing_ok=True)
        raise SealingError(f"the output could not be encrypted: {exc}") from None
    os.replace(partial, sealed)


class RunSealing:
    """The proxy's side: subtask inputs sealed per organisation, their results opened.

    Public keys are cached for the run's lifetime: a central function sends many
    rounds of subtasks to the same organisations.
    """

    def __init__(self, private_key):
        self.private_key = private_key
        self._keys: dict[int, object] = {}
        self._lock = threading.Lock()

    def seal_input(self, org_id: int, data: bytes, fetch_organization) -> bytes:
        """`fetch_organization(id)` → the organisation as the API shows it."""
        with self._lock:
            key = self._keys.get(org_id)
        if key is None:
            pem = (fetch_organization(org_id) or {}).get("public_key") or ""
            if not pem:
                raise SealingError(f"organisation {org_id} has no public key: the collaboration is encrypted")
            try:
                key = envelope.load_public_key(pem)
            except KeyFormatError as exc:
                raise SealingError(f"organisation {org_id}'s public key cannot be used: {exc}") from None
            with self._lock:
                self._keys[org_id] = key
        return envelope.encrypt(data, key)

    def open_result(self, data: bytes) -> bytes:
        if self.private_key is None:
            raise SealingError("this node has no private key to open the subtask's results")
        try:
            return envelope.decrypt(data, self.private_key)
        except EnvelopeError as exc:
            raise SealingError(f"a subtask result does not decrypt with this node's private key: {exc}") from None
