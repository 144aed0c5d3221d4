"""Signatures of entries whose loading could run code: pickles, and trees naming model classes.

The key is ``PHYSPIPE_SECRET`` when set, else a per-user secret file
(``$XDG_CONFIG_HOME/pytest-physpipe/secret``, 64 hex digits) created atomically with owner-only
permissions: it appears whole or not at all, so a failed first write (quota, full disk) never
leaves an empty key behind. What this module guarantees:

- An empty or short key is never used (``PHYSPIPE_SECRET`` needs :data:`MIN_SECRET_BYTES`
  bytes); nor is a secret file that others can read or write, or that another user owns. Then
  :class:`~pytest_physpipe.errors.SecretError` says what to fix, and callers fail closed:
  nothing is signed (the value is not cached) and nothing signed is loaded (it is recomputed).
- A signature carries the signer's id (an HMAC of a fixed label, which reveals nothing of the
  key), so an entry signed with another secret is told apart from one tampered with.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_physpipe.errors import (
    ForeignSignatureError,
    SecretError,
    SignatureError,
    UnverifiableEntryError,
)
from pytest_physpipe.store.atomic import write_bytes_atomic

__all__ = ["MIN_SECRET_BYTES", "Signer", "load_secret", "secret_path"]

#: The shortest ``PHYSPIPE_SECRET`` accepted (a generated secret file has 64 hex digits).
MIN_SECRET_BYTES = 16
_FILE_SECRET_BYTES = 64
_SIGNER_LABEL = b"pytest-physpipe signer id"
_HOW_TO = "python -c 'import secrets; print(secrets.token_hex(32))'"


def secret_path() -> Path:
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "pytest-physpipe" / "secret"


def _read_secret(path: Path) -> bytes | None:
    """The file's secret (``b""`` when empty or short), ``None`` if there is no file."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SecretError(
            f"cannot read the physpipe secret file {path} ({exc.strerror or exc}). Fix it (it "
            f"must be a regular file only you can read: chmod 600), or set PHYSPIPE_SECRET. "
            "Until then pickle and pydantic entries are neither written nor loaded."
        ) from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        data = handle.read().strip()
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise SecretError(
            f"the physpipe secret file {path} can be read or changed by others (mode "
            f"{stat.S_IMODE(info.st_mode):o}, owner uid {info.st_uid}), so anyone could sign "
            f"entries with it. Make it yours and private (chmod 600 {path}), or delete it to "
            "get a new one (entries signed with the old one are then recomputed)."
        )
    return data if len(data) >= _FILE_SECRET_BYTES else b""


def load_secret() -> bytes:
    """The signing key; :class:`SecretError` if there is no usable one (see the module doc)."""
    env = os.environ.get("PHYSPIPE_SECRET")
    if env is not None:
        key = env.encode()
        if len(key) < MIN_SECRET_BYTES:
            what = "empty" if not key else f"only {len(key)} bytes long"
            raise SecretError(
                f"PHYSPIPE_SECRET is {what}; a signing key needs at least {MIN_SECRET_BYTES} "
                f"bytes. Set it to a long random string (for example the output of {_HOW_TO}), "
                "or unset it to use your per-user secret file. Until then pickle and pydantic "
                "entries are neither written nor loaded: their stages are recomputed."
            )
        return key
    path = secret_path()
    found = _read_secret(path)
    if found:
        return found
    # Missing, or empty/short (left by a failed first write of an older version): make one.
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_bytes_atomic(
            path,
            secrets.token_hex(_FILE_SECRET_BYTES // 2).encode(),
            mode=0o600,
            exclusive=found is None,
            fsync=True,
        )
    except FileExistsError:
        pass  # another process created it first: use theirs
    except OSError as exc:
        raise SecretError(
            f"cannot create the physpipe secret file {path} ({exc.strerror or exc}). Free some "
            "space or fix the permissions of its folder, or set PHYSPIPE_SECRET. Until then "
            "pickle and pydantic entries are neither written nor loaded."
        ) from None
    made = _read_secret(path)
    if not made:
        raise SecretError(f"the physpipe secret file {path} is empty; delete it and run again.")
    return made


class Signer:
    """Signs and checks bytes with this user's key, loaded on first use."""

    def __init__(self) -> None:
        self._key: bytes | None = None

    @property
    def key(self) -> bytes:
        if self._key is None:
            self._key = load_secret()
        return self._key

    def signer_id(self) -> str:
        return hmac.new(self.key, _SIGNER_LABEL, hashlib.sha256).hexdigest()[:16]

    def sign(self, data: bytes) -> dict[str, str]:
        """Codec metadata that :meth:`check` accepts for ``data``."""
        return {
            "hmac": hmac.new(self.key, data, hashlib.sha256).hexdigest(),
            "signer": self.signer_id(),
        }

    def check(self, data: bytes, meta: Mapping[str, Any], *, what: str) -> None:
        """Raise unless ``meta`` holds a valid signature of ``data`` by this user's key."""
        expected = meta.get("hmac")
        if not isinstance(expected, str):
            raise UnverifiableEntryError(
                f"its {what} is not signed (written by an older version?); it is refused, "
                "not loaded"
            )
        try:
            key = self.key
        except SecretError as exc:
            raise UnverifiableEntryError(f"its signature cannot be checked: {exc}") from None
        actual = hmac.new(key, data, hashlib.sha256).hexdigest()
        if hmac.compare_digest(expected, actual):
            return
        signer = meta.get("signer")
        if isinstance(signer, str) and signer != self.signer_id():
            raise ForeignSignatureError(
                f"it is signed with another secret (another user's, or another "
                f"PHYSPIPE_SECRET); its {what} is refused, not loaded"
            )
        raise SignatureError(
            f"its {what} signature does not verify (tampered with, or signed with another "
            "secret); it is refused, not loaded"
        )
