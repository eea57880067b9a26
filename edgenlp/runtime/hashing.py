"""The SHA-256 a bundle's manifest lists, computed without pulling OpenSSL into a small process."""

from __future__ import annotations

from pathlib import Path

CHUNK = 1 << 18


def new_sha256():
    """CPython's own SHA-256 where it has one: hashlib's OpenSSL one maps libcrypto into the process,
    4 MiB of resident memory an app that only checks a bundle at start does not need (at 0.1 s per
    23 MB instead of 0.02 s)."""
    try:
        from _sha256 import sha256  # CPython 3.9-3.11
    except ImportError:
        try:
            from _sha2 import sha256  # CPython 3.12+
        except ImportError:
            from hashlib import sha256
    return sha256()


def sha256_file(path: Path) -> str:
    digest = new_sha256()
    buffer = bytearray(CHUNK)  # one buffer, refilled: no fresh allocation per chunk for the heap to keep
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    digest = new_sha256()
    view = memoryview(data)
    for start in range(0, len(view), CHUNK):
        digest.update(view[start : start + CHUNK])
    return digest.hexdigest()
