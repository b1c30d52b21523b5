"""Per-field consensus for listing verification and structured data entry.

Values are normalised by field kind before they are counted, so ``+254 712-345 678`` and ``+254712345678``
are one vote, not two. A field an annotator left empty (or missing from their answer) is a vote for "no
value" (None).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pandas as pd

from flows.core.models import FieldKind, FieldSpec
from flows.qa.consolidate.transcription import normalise_text

Value = str | bool | None

_TRUE = frozenset({"yes", "y", "true", "t", "1", "valid", "correct", "ok", "on"})
_FALSE = frozenset({"no", "n", "false", "f", "0", "invalid", "incorrect", "wrong", "off"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_HAS_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://")


def _is_blank(value: Any) -> bool:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return True
    return isinstance(value, str) and not value.strip()


def normalise_phone(value: Any) -> str:
    """Digits only, keeping a leading ``+``: ``+254 (712) 345-678`` -> ``+254712345678``."""
    text = str(value).strip()
    digits = re.sub(r"\D", "", text)
    return f"+{digits}" if text.startswith("+") and digits else digits


def normalise_email(value: Any) -> str:
    text = str(value).strip().lower()
    return text.removeprefix("mailto:")


def normalise_url(value: Any) -> str:
    """Lowercase scheme and host, ``http://`` when no scheme, no default port, no trailing slash."""
    text = str(value).strip()
    if not _HAS_SCHEME.match(text):
        text = "http://" + text.removeprefix("//")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    netloc = parts.netloc.lower()
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if host is not None:
        auth = netloc.rpartition("@")[0] if "@" in netloc else ""
        host_part = f"[{host}]" if ":" in host else host
        keep_port = port is not None and _DEFAULT_PORTS.get(scheme) != port
        netloc = (f"{auth}@" if auth else "") + host_part + (f":{port}" if keep_port else "")
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), parts.query, parts.fragment))


def normalise_boolean(value: Any) -> bool:
    """yes/no, true/false, 1/0, valid/invalid, correct/incorrect, ok, on/off -> bool.

    Raises:
        ValueError: the value is none of these.
    """
    if isinstance(value, bool | np.bool_):
        return bool(value)
    text = str(value).strip().casefold()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{value!r} is not a yes/no value")


NORMALISERS: dict[FieldKind, Callable[[Any], Value]] = {
    FieldKind.TEXT: normalise_text,
    FieldKind.PHONE: normalise_phone,
    FieldKind.EMAIL: normalise_email,
    FieldKind.URL: normalise_url,
    FieldKind.BOOLEAN: normalise_boolean,
}


def normalise_field(kind: FieldKind, value: Any) -> Value:
    """The comparable form of one value of a field of ``kind``; None for an empty value."""
    if _is_blank(value):
        return None
    normalised = NORMALISERS[kind](value)
    return None if normalised == "" else normalised


def _answer_fields(value: Any) -> Mapping[str, Any]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"fields must be a mapping of field name to value, got {value!r}")
    return value


def consolidate_fields(answers: pd.DataFrame, specs: Sequence[FieldSpec]) -> pd.DataFrame:
    """Majority of normalised values, field by field.

    Ties go to a value over "no value", then to the value whose JSON form sorts first, so the result does
    not depend on the order of the rows.

    Args:
        answers: Columns item_id, annotator, fields (a mapping of field name to value); one answer per item
            and annotator.
        specs: The work order's fields; a field name outside them is an error.

    Returns:
        Indexed by item_id (order of first appearance): fields (field -> consensus normalised value),
        field_confidence (field -> winning share of the item's annotators), confidence (the lowest
        field confidence over required fields, or over all fields when none is required), n_annotators.

    Raises:
        ValueError: an unknown field, or a boolean field with a value that is not yes/no.
    """
    missing = [c for c in ("item_id", "annotator", "fields") if c not in answers.columns]
    if missing:
        raise ValueError(f"answers lack the column(s) {missing}")
    if not specs:
        raise ValueError("consolidate_fields needs at least one field spec")
    if answers.duplicated(["item_id", "annotator"]).any():
        dup = answers.duplicated(["item_id", "annotator"]).to_numpy().argmax()
        raise ValueError(
            f"annotator {answers['annotator'].iloc[dup]!r} answered item {answers['item_id'].iloc[dup]!r} "
            "more than once; keep one answer per item and annotator"
        )
    names = [s.name for s in specs]
    kinds = {s.name: s.kind for s in specs}
    item_codes, item_ids = pd.factorize(answers["item_id"])
    n_items, n_fields = len(item_ids), len(specs)

    keys: list[str] = []
    # Annotators who agree type the same raw values, so each distinct raw value is normalised once.
    memo: dict[tuple[str, type, Any], str] = {}
    for it, value in zip(item_codes, answers["fields"].to_numpy(dtype=object), strict=True):
        given = _answer_fields(value)
        unknown = set(given) - set(kinds)
        if unknown:
            raise ValueError(f"item {item_ids[it]!r} has field(s) {sorted(unknown)} not in the specs {names}")
        for name in names:
            raw = given.get(name)
            memo_key = (name, type(raw), raw) if isinstance(raw, Hashable) else None
            key = memo.get(memo_key) if memo_key is not None else None
            if key is None:
                try:
                    normalised = normalise_field(kinds[name], raw)
                except ValueError as exc:
                    raise ValueError(f"field {name!r} of item {item_ids[it]!r}: {exc}") from exc
                # JSON keeps True, "true" and None apart as group keys.
                key = json.dumps(normalised, ensure_ascii=False)
                if memo_key is not None:
                    memo[memo_key] = key
            keys.append(key)

    votes = pd.DataFrame(
        {
            "item": np.repeat(item_codes, n_fields),
            "field": np.tile(np.arange(n_fields), len(item_codes)),
            "key": keys,
        }
    )
    counts = votes.groupby(["item", "field", "key"], sort=False).size().rename("votes").reset_index()
    counts["blank"] = counts["key"] == "null"
    counts = counts.sort_values(["item", "field", "votes", "blank", "key"], ascending=[True, True, False, True, True])
    winners = counts.drop_duplicates(["item", "field"])

    n_annotators = np.bincount(item_codes, minlength=n_items)
    share = np.zeros((n_items, n_fields))
    value_key = np.empty((n_items, n_fields), dtype=object)
    rows, cols = winners["item"].to_numpy(), winners["field"].to_numpy()
    share[rows, cols] = winners["votes"].to_numpy() / n_annotators[rows]
    value_key[rows, cols] = winners["key"].to_numpy(dtype=object)

    required = np.array([s.required for s in specs])
    gate = required if required.any() else np.ones(n_fields, dtype=bool)
    decoded = {k: json.loads(k) for k in pd.unique(value_key.ravel())}
    fields_out = [{name: decoded[value_key[i, f]] for f, name in enumerate(names)} for i in range(n_items)]
    conf_out = [{name: float(share[i, f]) for f, name in enumerate(names)} for i in range(n_items)]
    return pd.DataFrame(
        {
            "fields": fields_out,
            "field_confidence": conf_out,
            "confidence": share[:, gate].min(axis=1) if n_items else np.empty(0),
            "n_annotators": n_annotators.astype(np.int64),
        },
        index=pd.Index(item_ids, name="item_id"),
    )
