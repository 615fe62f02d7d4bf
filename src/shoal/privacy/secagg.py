"""Secure aggregation's arithmetic and cryptography, shared by the sites and the server.

In the spirit of Bonawitz et al. 2017 (and SecAgg+, Bell et al. 2020): each pair of sites
agrees a key (X25519 + HKDF) the server cannot compute; each site adds, for every other site, a
mask expanded from that key (ChaCha20 keystream), with opposite signs on the two sides, plus a
mask of its own (self-mask) from a random seed. Values are fixed-point integers modulo 2**64, so
the pairwise masks cancel *exactly* in the sum. Each site also splits its mask key and its seed
into Shamir shares (threshold t), one for every other site, encrypted so only that site reads it
(AES-GCM under a second agreed key) and relayed by the server. After the uploads, the surviving
sites reveal, for every site that uploaded, a share of its self-mask seed, and for every site that
dropped before uploading, a share of its mask key, never both for one site: the server removes
exactly the masks it must and learns only the sum.

Nothing here logs a key, a seed, a share or a mask (docs/privacy.md).
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Mapping
from typing import Any

import numpy as np

#: Fixed-point scale: a value v travels as round(v * 2**FRAC_BITS) modulo 2**64. The sum of the
#: weighted updates must stay within ±2**(63 - FRAC_BITS) (about ±5.5e11) for every entry.
FRAC_BITS = 24
#: A prime above every secret (32 bytes): the field of the Shamir shares (2**521 - 1).
PRIME = 2**521 - 1
#: The extra tensor that carries each site's weight (masked like the rest): the server learns
#: only the total.
WEIGHT_TENSOR = "__secagg_weight__"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode(), validate=True)


# --- fixed point --------------------------------------------------------------------------
def encode(values: Any) -> np.ndarray:
    """Float values as fixed-point uint64 (two's complement of the rounded int64)."""
    scaled = np.rint(np.asarray(values, dtype=np.float64) * (1 << FRAC_BITS))
    if np.any(np.abs(scaled) >= 2.0**63):
        raise ValueError("a value is too large for secure aggregation's fixed-point range")
    return scaled.astype(np.int64).view(np.uint64)


def decode(total: np.ndarray) -> np.ndarray:
    """A sum of encoded values (modulo 2**64) back to float64."""
    return total.astype(np.uint64).view(np.int64).astype(np.float64) / (1 << FRAC_BITS)


# --- masks --------------------------------------------------------------------------------
def expand(seed: bytes, context: bytes, count: int) -> np.ndarray:
    """``count`` uint64 values from ``seed`` (32 bytes): a ChaCha20 keystream, a different stream
    for each ``context`` (round and tensor)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
    from cryptography.hazmat.primitives.hashes import SHA256, Hash

    digest = Hash(SHA256())
    digest.update(context)
    nonce = digest.finalize()[:16]
    stream = Cipher(algorithms.ChaCha20(seed, nonce), mode=None).encryptor()
    return np.frombuffer(stream.update(bytes(8 * count)), dtype=np.uint64).copy()


def agree(private: bytes, peer_public: bytes, purpose: bytes) -> bytes:
    """The 32-byte key two sites share: X25519 between one's private and the other's public key,
    through HKDF-SHA256 with ``purpose`` (so the mask and the encryption keys differ)."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from cryptography.hazmat.primitives.hashes import SHA256
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    shared = X25519PrivateKey.from_private_bytes(private).exchange(
        X25519PublicKey.from_public_bytes(peer_public)
    )
    return HKDF(algorithm=SHA256(), length=32, salt=None, info=b"shoal-secagg " + purpose).derive(shared)


def keypair() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair (private, public), raw bytes."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )

    key = X25519PrivateKey.generate()
    private = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return private, key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def pair_mask(
    mine: str, other: str, mask_private: bytes, other_mask_public: bytes, context: bytes, count: int
) -> np.ndarray:
    """What site ``mine`` adds for its pair with ``other``: +stream if it sorts first, -stream
    otherwise, so the two cancel in the sum."""
    stream = expand(agree(mask_private, other_mask_public, b"mask"), context, count)
    return stream if mine < other else (np.uint64(0) - stream)


def mask_context(round_number: int, name: str) -> bytes:
    return f"round {round_number} tensor {name}".encode()


# --- Shamir shares ------------------------------------------------------------------------
def split(secret: bytes, holders: list[int], threshold: int) -> dict[int, int]:
    """Shamir shares of ``secret`` for the points ``holders`` (distinct, >= 1): any ``threshold``
    of them give it back, fewer tell nothing."""
    coefficients = [int.from_bytes(secret, "big"), *(secrets.randbelow(PRIME) for _ in range(threshold - 1))]
    return {x: sum(c * pow(x, k, PRIME) for k, c in enumerate(coefficients)) % PRIME for x in holders}


def join(shares: Mapping[int, int], length: int = 32) -> bytes:
    """The secret from ``threshold`` (or more) shares: Lagrange interpolation at 0."""
    total = 0
    points = list(shares)
    for x in points:
        num, den = 1, 1
        for other in points:
            if other != x:
                num = num * (-other) % PRIME
                den = den * (x - other) % PRIME
        total = (total + shares[x] * num * pow(den, -1, PRIME)) % PRIME
    if total >= 1 << (8 * length):  # too few or wrong shares: a random field element
        raise ValueError("these shares do not rebuild a secret")
    return total.to_bytes(length, "big")


def seal(key: bytes, plaintext: bytes, associated: bytes) -> str:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(12)
    return b64(nonce + AESGCM(key).encrypt(nonce, plaintext, associated))


def unseal(key: bytes, sealed: str, associated: bytes) -> bytes:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    data = unb64(sealed)
    return AESGCM(key).decrypt(data[:12], data[12:], associated)


def neighbours(order: list[str], degree: int | None, seed: str) -> dict[str, list[str]]:
    """Each site's partners: every other site (``degree`` None or at least n - 1: SecAgg), or,
    SecAgg+'s sparse graph (Bell et al. 2020), its ``degree`` nearest on a ring of the sites in
    an order shuffled from ``seed`` (``degree`` rounded up to even; the graph is symmetric, so
    both sides of a pair agree). A site masks with, and shares its secrets with, its partners
    only: the work and the shares per site grow with the degree, not with the job's size.
    The server draws the seed each round; every site rebuilds the same graph from it."""
    import random

    n = len(order)
    if degree is None or degree >= n - 1:
        return {site: [o for o in order if o != site] for site in order}
    ring = list(order)
    random.Random(seed).shuffle(ring)
    half = (degree + 1) // 2
    out: dict[str, set[str]] = {site: set() for site in order}
    for i, site in enumerate(ring):
        for j in range(1, half + 1):
            out[site].update((ring[(i + j) % n], ring[(i - j) % n]))
    return {site: sorted(partners) for site, partners in out.items()}


def signing_keypair() -> tuple[bytes, bytes]:
    """A fresh Ed25519 key pair (private, public), raw bytes: a site signs the survivor set it
    was told with it (the consistency round)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return private, key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def sign(private: bytes, message: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(private).sign(message)


def verify(public: bytes, signature: bytes, message: bytes) -> bool:
    """Whether ``signature`` is ``public``'s on ``message`` (False for anything malformed)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def survivor_view(round_number: int, uploaded: list[str], dropped: list[str]) -> bytes:
    """What a site signs in the consistency round: the round and the survivor set it was told."""
    told = f"{','.join(sorted(uploaded))}|{','.join(sorted(dropped))}"
    return f"shoal-secagg consistency {round_number}|{told}".encode()
