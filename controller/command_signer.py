"""The controller's half of command integrity: sign every command before it is published.

A unit obeys a command only if it verifies under a controller key pinned on the unit (see
:mod:`agent.command_auth` for what the signature covers and what the unit checks).  The signer
fills the five signature fields of :class:`~agent.wire_schema.Command`:

* ``key_id``: the id of this key (:func:`agent.command_auth.key_id_of`), so a unit with several
  pinned keys (during a rotation) knows which one to use;
* ``nonce``: 16 random bytes (``secrets.token_hex``), so every signed command is unique and a
  replay is recognisable;
* ``t_issued_utc`` / ``t_expires_utc``: the controller's clock now and now + TTL.  A dispatch lives
  120 s by default (the handheld should answer within ``accept_timeout_s``; a later one is
  re-dispatched with a fresh command anyway); a cancel lives longer (default 1 h) so that a unit
  back from a long outage still learns its task was taken away;
* ``signature``: Ed25519 (RFC 8032) over :func:`agent.command_auth.canonical_command_bytes`, hex.

The private key is read once at start; the configured ``key_id`` is checked against the key, so
a mismatched pair (a rotation half done) is an error at start, not a fleet that silently refuses
every command.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path

from agent.command_auth import canonical_command_bytes, key_id_of, load_private_key
from agent.hal.interfaces import Clock, utc_iso
from agent.wire_schema import Command

__all__ = ["CommandSigner", "SignerError"]

DEFAULT_TTL_S = {"dispatch": 120.0, "cancel": 3600.0, "ping": 60.0}


class SignerError(ValueError):
    """The signing key cannot be used (missing, wrong type, or not the configured key id)."""


class CommandSigner:
    def __init__(self, private_key_path: str | Path, key_id: str | None, clock: Clock,
                 ttl_s: dict[str, float] | None = None) -> None:
        self._key = load_private_key(private_key_path)
        actual = key_id_of(self._key.public_key())
        if key_id is not None and key_id != actual:
            raise SignerError(f"{private_key_path}: key id is {actual}, config says {key_id}")
        self.key_id = actual
        self.clock = clock
        self.ttl_s = {**DEFAULT_TTL_S, **(ttl_s or {})}
        if any(v <= 0 for v in self.ttl_s.values()):
            raise SignerError(f"command TTLs must be > 0: {self.ttl_s}")
        self.signed = 0

    def sign(self, cmd: Command) -> Command:
        """A copy of ``cmd`` with fresh key id, nonce, issue/expiry times and signature."""
        now = self.clock.utc_now()
        unsigned = cmd.model_copy(update={
            "key_id": self.key_id,
            "nonce": secrets.token_hex(16),
            "t_issued_utc": utc_iso(now),
            "t_expires_utc": utc_iso(now + timedelta(seconds=self.ttl_s[cmd.command])),
            "signature": None,
        })
        # re-validate so the signed bytes are those of the model the unit will decode
        unsigned = Command.model_validate(unsigned.model_dump(mode="json", by_alias=True))
        sig = self._key.sign(canonical_command_bytes(unsigned)).hex()
        self.signed += 1
        return unsigned.model_copy(update={"signature": sig})
