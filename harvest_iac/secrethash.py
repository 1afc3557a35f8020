"""Hashes of secret values: how harvest sees a value change without keeping the values. Pure:
the key is an argument (the CLI reads `HARVEST_STATE_KEY`).

The state record and saved plans hold one hash per secret, which names its method, so a
change of method keeps working:

* `hmac-sha256-key`: HMAC-SHA256 under a key derived from `HARVEST_STATE_KEY` (a CI secret,
  never stored). Without the key a guess cannot be checked at all. The record keeps a key id
  (an HMAC of a constant under the key), to tell "another key" from "another value".
* `scrypt`: when no key is set. Memory-hard (N=2**14, r=8, p=1: 16 MiB and about 50 ms per
  guess), with a random salt per hash.
* `hmac-sha256` (read only): format 1 of the state record, keyed with a salt stored beside
  it, so a weak value could be guessed offline. Still compared; replaced by the current
  method on the next apply that writes the record.

Each hash is computed once per run: results are kept in memory (never on disk), and the
scrypt hashes a plan needs are computed concurrently (scrypt releases the GIL).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import os
import secrets as _secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import Any

KEYED = "hmac-sha256-key"
SCRYPT = "scrypt"
LEGACY = "hmac-sha256"

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
#: scrypt needs 128 * N * r bytes; a record asking for more than this is corrupt.
SCRYPT_MAX_MEMORY = 256 * 1024 * 1024
_KEY_SALT = b"harvest state key v1"
_KEY_ID_INPUT = b"harvest state key id"


@dataclass(frozen=True)
class ValuesHash:
    """One secret's values, hashed. `salt` is hex (for `hmac-sha256`, the record's salt as
    written); `n`, `r`, `p` are scrypt's costs; `key_id` names the key of a keyed hash."""

    method: str
    digest: str
    salt: str = ""
    key_id: str = ""
    n: int = 0
    r: int = 0
    p: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v}

    @classmethod
    def from_dict(cls, data: object, where: str) -> ValuesHash:
        """Read back, checked: ValueError naming `where` and the problem."""
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a mapping")
        method = data.get("method")
        fields = _FIELDS.get(method) if isinstance(method, str) else None
        if fields is None:
            raise ValueError(f"{where}.method: unknown hash method {data.get('method')!r}")
        for name, kind in fields.items():
            if not isinstance(data.get(name), kind) or isinstance(data.get(name), bool):
                expected = "a string" if kind is str else "a whole number"
                raise ValueError(f"{where}.{name}: missing or not {expected}")
        made = cls(**{k: data[k] for k in ("method", "digest", *fields) if k in data})
        problem = made._problem()
        if problem:
            raise ValueError(f"{where}: {problem}")
        return made

    def _problem(self) -> str | None:
        if self.method == SCRYPT:
            if self.n < 2 or self.n & (self.n - 1) or not 1 <= self.r <= 32 or not 1 <= self.p <= 16:
                return f"scrypt costs n={self.n}, r={self.r}, p={self.p} are not valid"
            if 128 * self.n * self.r * self.p > SCRYPT_MAX_MEMORY:
                return f"scrypt costs n={self.n}, r={self.r}, p={self.p} need too much memory"
        try:
            bytes.fromhex(self.digest)
            if self.method != LEGACY:
                bytes.fromhex(self.salt)
        except ValueError:
            return "digest or salt is not hex"
        return None


_FIELDS: dict[str, dict[str, type]] = {
    KEYED: {"digest": str, "salt": str, "key_id": str},
    SCRYPT: {"digest": str, "salt": str, "n": int, "r": int, "p": int},
    LEGACY: {"digest": str, "salt": str},
}


class Verdict(enum.Enum):
    SAME = "same"
    CHANGED = "changed"
    UNVERIFIABLE = "unverifiable"


@dataclass(frozen=True)
class Check:
    """The values compared with a recorded hash; `why` says why they cannot be compared."""

    verdict: Verdict
    why: str = ""


def derive_key(passphrase: str) -> bytes:
    """The HMAC key for `hmac-sha256-key` hashes, from `HARVEST_STATE_KEY` (memory-hard, so a
    weak passphrase is not cheap to guess either)."""
    return hashlib.scrypt(passphrase.encode(), salt=_KEY_SALT, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                          dklen=32)


def _blob(values: dict[str, str]) -> bytes:
    return json.dumps(values, sort_keys=True, separators=(",", ":")).encode()


class SecretHasher:
    """Hashes and compares secret values with one method: keyed when given a key (from
    `derive_key`), else scrypt. Remembers what it computed (in memory, for this run)."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key
        self.key_id = "" if key is None else hmac.new(key, _KEY_ID_INPUT, "sha256").hexdigest()[:16]
        self.method = SCRYPT if key is None else KEYED
        self._digests: dict[tuple[Any, ...], str] = {}
        self._fresh: dict[tuple[str, bytes], ValuesHash] = {}

    def check(self, values: dict[str, str], recorded: ValuesHash) -> Check:
        """Are `values` the ones `recorded` was made from?"""
        if recorded.method == KEYED and self._key is None:
            return Check(Verdict.UNVERIFIABLE, "its hash was made with HARVEST_STATE_KEY, which is "
                                               "not set")
        if recorded.method == KEYED and recorded.key_id != self.key_id:
            return Check(Verdict.UNVERIFIABLE, "its hash was made with another HARVEST_STATE_KEY")
        same = hmac.compare_digest(self._digest(values, recorded), recorded.digest)
        return Check(Verdict.SAME if same else Verdict.CHANGED)

    def hash(self, name: str, values: dict[str, str], like: ValuesHash | None = None) -> ValuesHash:
        """A hash of secret `name`'s `values` with this hasher's method. The salt of `like`
        (the hash recorded for this secret) is kept when it has the same method, so a value
        change costs one scrypt (the one its comparison made), not two; else a new salt, the
        same one for the rest of the run."""
        if like is not None and like.method == self.method and like.key_id == self.key_id:
            return self._made(values, like.salt)
        fresh = (name, hashlib.sha256(_blob(values)).digest())
        if fresh not in self._fresh:
            self._fresh[fresh] = self._made(values, _secrets.token_hex(16))
        return self._fresh[fresh]

    def is_current(self, recorded: ValuesHash) -> bool:
        """Made the way this hasher would make it now (else: re-hash on the next write)."""
        return recorded == self._reshaped(recorded)

    def _reshaped(self, recorded: ValuesHash) -> ValuesHash:
        """`recorded` with this hasher's method and costs (the digest is not recomputed)."""
        return ValuesHash(self.method, recorded.digest, recorded.salt, self.key_id,
                          *((SCRYPT_N, SCRYPT_R, SCRYPT_P) if self.method == SCRYPT else (0, 0, 0)))

    def prime(self, secrets: list[tuple[str, dict[str, str], ValuesHash | None]]) -> None:
        """Compute, concurrently, the hashes that comparing each secret's `(name, values,
        recorded)` and hashing its values afterwards will need; later calls find them in memory."""
        def one(item: tuple[str, dict[str, str], ValuesHash | None]) -> None:
            name, values, recorded = item
            if recorded is None or self.check(values, recorded).verdict is not Verdict.SAME:
                self.hash(name, values, like=recorded)

        if secrets:
            with ThreadPoolExecutor(max_workers=min(len(secrets), os.cpu_count() or 1)) as pool:
                list(pool.map(one, secrets))

    def _made(self, values: dict[str, str], salt: str) -> ValuesHash:
        shape = self._reshaped(ValuesHash(self.method, "", salt))
        return replace(shape, digest=self._digest(values, shape))

    def _digest(self, values: dict[str, str], how: ValuesHash) -> str:
        blob = _blob(values)
        memo = (how.method, how.salt, how.key_id, how.n, how.r, how.p, hashlib.sha256(blob).digest())
        if memo not in self._digests:
            self._digests[memo] = self._compute(blob, how)
        return self._digests[memo]

    def _compute(self, blob: bytes, how: ValuesHash) -> str:
        if how.method == LEGACY:
            return hmac.new(how.salt.encode(), blob, "sha256").hexdigest()
        if how.method == KEYED:
            assert self._key is not None  # check() refuses keyed hashes without the key
            return hmac.new(self._key, bytes.fromhex(how.salt) + blob, "sha256").hexdigest()
        return hashlib.scrypt(blob, salt=bytes.fromhex(how.salt), n=how.n, r=how.r, p=how.p,
                              maxmem=SCRYPT_MAX_MEMORY + 1024 * 1024, dklen=32).hex()
