"""DSpace password hashes, so people restored from an AIP log in with their old password.

DSpace 3 and later store ``H(salt + password)`` re-hashed 1023 more times with the
same algorithm (a Java MessageDigest name such as ``SHA-512``), as lower-case hex,
with a 16-byte random salt kept as hex. Older DSpace stored an unsalted MD5 of the
password, and AIPs mark such a hash by leaving out the ``digest`` attribute.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets

HASH_ROUNDS = 1024
DEFAULT_ALGORITHM = "SHA-512"
# Java MessageDigest names and the hashlib names of the same algorithms.
JAVA_TO_HASHLIB = {"SHA-512": "sha512", "SHA-384": "sha384", "SHA-256": "sha256", "SHA-1": "sha1", "SHA": "sha1", "MD5": "md5"}


class UnsupportedDigestError(ValueError):
    """A password hash names a digest algorithm this installation cannot compute."""


def _hashlib_name(algorithm: str) -> str:
    try:
        return JAVA_TO_HASHLIB[algorithm.upper()]
    except KeyError:
        raise UnsupportedDigestError(
            f"Password digest algorithm {algorithm!r} is not supported; supported: {', '.join(JAVA_TO_HASHLIB)}."
        ) from None


def dspace_digest(password: str, *, algorithm: str, salt_hex: str) -> str:
    """Return DSpace's hex digest of ``password`` for this algorithm and hex salt."""
    name = _hashlib_name(algorithm)
    digest = hashlib.new(name, bytes.fromhex(salt_hex) + password.encode("utf-8")).digest()
    for _ in range(HASH_ROUNDS - 1):
        digest = hashlib.new(name, digest).digest()
    return digest.hex()


def dspace_hash_new(password: str, *, algorithm: str = DEFAULT_ALGORITHM) -> tuple[str, str, str]:
    """Return (hex digest, algorithm, hex salt) for a new password, as DSpace would store it."""
    salt_hex = secrets.token_bytes(16).hex()
    return dspace_digest(password, algorithm=algorithm, salt_hex=salt_hex), algorithm, salt_hex


def dspace_password_matches(password: str, *, stored_hash: str, algorithm: str, salt_hex: str) -> bool:
    """Tell whether ``password`` matches a stored DSpace hash (salted, or legacy unsalted MD5)."""
    if not stored_hash:
        return False
    if algorithm:
        computed = dspace_digest(password, algorithm=algorithm, salt_hex=salt_hex or "")
    else:
        computed = hashlib.md5(password.encode("utf-8")).hexdigest()
    return hmac.compare_digest(computed, stored_hash.lower())
