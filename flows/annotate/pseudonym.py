"""Pseudonymous annotator ids: what the annotation log, QA and delivery see instead of a person.

``w-<12 hex>`` is the first 48 bits of HMAC-SHA256(key, ``"<site_id>:<ls_user_id>"``). It is stable (the same
worker at the same site always gets the same id, so QA can follow a worker across batches and rounds),
distinct across sites (user 7 of one site's Label Studio is not user 7 of another's), and without the key it
reveals neither the Label Studio user id nor anything else about the person. Emails never enter: Label Studio's
numeric user id is the only input. 48 bits make a collision between two workers of one work order vanishingly
unlikely (about 1 in 10^8 for 2,000 workers).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow as pa
from pydantic import SecretStr

PREFIX = "w-"
HEX_DIGITS = 12


def _digest(key: bytes, site_id: str, ls_user_id: int) -> str:
    mac = hmac.new(key, f"{site_id}:{int(ls_user_id)}".encode(), hashlib.sha256)
    return PREFIX + mac.hexdigest()[:HEX_DIGITS]


def _user_id(value: object) -> int:
    # bool is an int subclass; a True user id is a bug upstream, not user 1.
    if isinstance(value, bool) or value is None:
        raise ValueError(f"Label Studio user id must be an integer, got {value!r}")
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise ValueError(f"Label Studio user id must be an integer, got {value!r}") from None


def pseudonymise(site_id: str, ls_user_id: int, key: SecretStr) -> str:
    """The pseudonymous id of Label Studio user ``ls_user_id`` at partner site ``site_id``.

    Raises:
        ValueError: the site id is empty or the user id is not an integer.
    """
    if not site_id:
        raise ValueError("site_id must not be empty")
    return _digest(key.get_secret_value().encode(), site_id, _user_id(ls_user_id))


class Pseudonymiser:
    """Memoised :func:`pseudonymise` for one key: a work order has thousands of rows but few workers."""

    def __init__(self, key: SecretStr) -> None:
        self._key = key.get_secret_value().encode()
        self._memo: dict[tuple[str, int], str] = {}

    def __call__(self, site_id: str, ls_user_id: int) -> str:
        memo_key = (site_id, ls_user_id)
        found = self._memo.get(memo_key)
        if found is None:
            if not site_id:
                raise ValueError("site_id must not be empty")
            found = self._memo[memo_key] = _digest(self._key, site_id, _user_id(ls_user_id))
        return found


def pseudonymise_many(
    site_ids: str | Sequence[str] | pa.Array | pa.ChunkedArray | np.ndarray,
    ls_user_ids: Iterable[int] | pa.Array | pa.ChunkedArray | np.ndarray,
    key: SecretStr,
) -> pa.Array:
    """:func:`pseudonymise` over arrays: one HMAC per distinct (site, user) pair, then a gather.

    Args:
        site_ids: One site id for every row, or one per row.
        ls_user_ids: Label Studio user ids, one per row (no nulls).
        key: The HMAC key (``Settings.pseudonym_key``).

    Returns:
        A string array of ``w-<12 hex>`` ids, one per row.

    Raises:
        ValueError: lengths differ, or a user id is null or not an integer.
    """
    if isinstance(ls_user_ids, pa.Array | pa.ChunkedArray):
        users = ls_user_ids
    else:
        try:
            users = pa.array(list(ls_user_ids), pa.int64())
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            raise ValueError("Label Studio user ids must be integers") from None
    if users.null_count:
        raise ValueError("Label Studio user ids must not be null")
    if not pa.types.is_integer(users.type):
        raise ValueError(f"Label Studio user ids must be integers, got type {users.type}")
    user_np = np.asarray(users.to_numpy(), dtype=np.int64)
    n = len(user_np)
    if isinstance(site_ids, str):
        site_codes = np.zeros(n, dtype=np.int64)
        site_names: list[str] = [site_ids]
    else:
        sites = site_ids if isinstance(site_ids, pa.Array | pa.ChunkedArray) else pa.array(list(site_ids), pa.string())
        if len(sites) != n:
            raise ValueError(f"{len(sites)} site ids for {n} user ids")
        if sites.null_count:
            raise ValueError("site ids must not be null")
        encoded = pa.chunked_array([sites]) if isinstance(sites, pa.Array) else sites
        encoded = encoded.dictionary_encode().combine_chunks()
        site_codes = np.asarray(encoded.indices.to_numpy(), dtype=np.int64)
        site_names = encoded.dictionary.to_pylist()
    if n == 0:
        return pa.array([], pa.string())
    pairs = np.stack([site_codes, user_np], axis=1)
    unique, inverse = np.unique(pairs, axis=0, return_inverse=True)
    pseudonymiser = Pseudonymiser(key)
    names = pa.array([pseudonymiser(site_names[s], int(u)) for s, u in unique], pa.string())
    return names.take(pa.array(inverse.reshape(-1)))
