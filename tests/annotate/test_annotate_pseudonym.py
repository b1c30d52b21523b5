"""Pseudonymous annotator ids: stable, distinct across sites and keys, never the raw id."""

from __future__ import annotations

import hashlib
import hmac
import re

import numpy as np
import pyarrow as pa
import pytest
from pydantic import SecretStr

from flows.annotate.pseudonym import Pseudonymiser, pseudonymise, pseudonymise_many

pytestmark = pytest.mark.unit

KEY = SecretStr("test-pseudonym-key")


def test_format_and_known_value() -> None:
    expected = "w-" + hmac.new(b"test-pseudonym-key", b"nairobi:7", hashlib.sha256).hexdigest()[:12]
    assert pseudonymise("nairobi", 7, KEY) == expected
    assert re.fullmatch(r"w-[0-9a-f]{12}", expected)


def test_stable_across_calls_and_instances() -> None:
    assert pseudonymise("nairobi", 7, KEY) == pseudonymise("nairobi", 7, SecretStr("test-pseudonym-key"))
    assert Pseudonymiser(KEY)("nairobi", 7) == pseudonymise("nairobi", 7, KEY)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (("nairobi", 7), ("kampala", 7)),  # same Label Studio user id at two sites: two people
        (("nairobi", 7), ("nairobi", 8)),
        (("nairobi", 17), ("nairobi1", 7)),  # the separator keeps "nairobi"+"17" apart from "nairobi1"+"7"
    ],
)
def test_distinct(a: tuple[str, int], b: tuple[str, int]) -> None:
    assert pseudonymise(*a, KEY) != pseudonymise(*b, KEY)


def test_depends_on_the_key_and_hides_the_id() -> None:
    one = pseudonymise("nairobi", 123456, KEY)
    assert one != pseudonymise("nairobi", 123456, SecretStr("another-key"))
    assert "123456" not in one and "nairobi" not in one


@pytest.mark.parametrize(("site", "user"), [("", 7), ("nairobi", None), ("nairobi", "seven"), ("nairobi", True)])
def test_bad_input(site: str, user: object) -> None:
    with pytest.raises(ValueError):
        pseudonymise(site, user, KEY)  # type: ignore[arg-type]


def test_vectorised_matches_scalar() -> None:
    users = [7, 8, 7, 9, 7]
    sites = ["nairobi", "nairobi", "kampala", "kampala", "nairobi"]
    out = pseudonymise_many(sites, pa.array(users), KEY).to_pylist()
    assert out == [pseudonymise(s, u, KEY) for s, u in zip(sites, users, strict=True)]
    one_site = pseudonymise_many("nairobi", np.array(users), KEY).to_pylist()
    assert one_site == [pseudonymise("nairobi", u, KEY) for u in users]
    chunked = pseudonymise_many(pa.chunked_array([sites[:2], sites[2:]]), pa.chunked_array([users[:3], users[3:]]), KEY)
    assert chunked.to_pylist() == out


def test_vectorised_errors_and_empty() -> None:
    assert pseudonymise_many("nairobi", [], KEY).to_pylist() == []
    with pytest.raises(ValueError, match="must not be null"):
        pseudonymise_many("nairobi", pa.array([1, None]), KEY)
    with pytest.raises(ValueError, match="integers"):
        pseudonymise_many("nairobi", pa.array(["a"]), KEY)
    with pytest.raises(ValueError, match="integers"):
        pseudonymise_many("nairobi", ["a"], KEY)
    with pytest.raises(ValueError, match="2 site ids for 3 user ids"):
        pseudonymise_many(["a", "b"], [1, 2, 3], KEY)
