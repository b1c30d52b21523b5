"""Data contracts: what a task type's input must look like, and what its consolidated output promises.

One folder per task type under ``data_contracts/``: ``input.yaml`` (checked by ingest, row by row, and by
Great Expectations on the accepted items) and ``output.yaml`` (the consolidated results QA hands to
delivery). The YAML is read into strict models, so a typo in a contract is an error naming the key.

A contract's ``version`` is the first 12 hex digits of the SHA-256 of its YAML bytes: lineage records which
exact rules a run was checked against.

Regular expressions are searched (not fully matched), so they carry their own ``^``/``$`` anchors. They
must compile both in Python's ``re`` (Great Expectations on pandas) and in RE2 (``pyarrow.compute``, the
row-level checker); the loader refuses a pattern either engine rejects, so both apply the same rule.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import yaml
from pydantic import Field, field_validator, model_validator

from flows.core.models import Strict, TaskType

CONTRACTS_DIR = Path(__file__).resolve().parents[2] / "data_contracts"

ContractKind = Literal["input", "output"]
ColumnType = Literal["string", "integer", "number", "boolean"]


class Rule(Strict):
    """The declared checks on one column. Null values pass every check but ``required``."""

    description: str = ""
    type: ColumnType = "string"
    required: bool = Field(default=False, description="Not null and, for strings, not blank.")
    unique: bool = Field(default=False, description="No two rows share a value.")
    min_length: int | None = Field(default=None, ge=0, description="Characters (code points), not bytes.")
    max_length: int | None = Field(default=None, ge=1, description="Characters (code points), not bytes.")
    regex: str | None = Field(default=None, description="Searched, not fully matched: anchor it.")
    regex_hint: str | None = Field(default=None, description="What the pattern means, for failure reasons.")
    allowed_values: list[str] | None = None
    allowed_from_work_order: Literal["label_schema.classes"] | None = Field(
        default=None, description="The allowed values come from the work order (output contracts)."
    )
    min_value: float | None = None
    max_value: float | None = None

    @field_validator("regex")
    @classmethod
    def _compiles_in_both_engines(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"regex {v!r} does not compile in Python: {e}") from None
        try:
            pc.match_substring_regex(pa.array([""], pa.string()), v)  # compiled on first use
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise ValueError(f"regex {v!r} does not compile in RE2 (pyarrow): {e}") from None
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        textual = self.min_length is not None or self.max_length is not None or self.regex is not None
        if textual and self.type != "string":
            raise ValueError("min_length, max_length and regex apply to string columns only")
        numeric = self.min_value is not None or self.max_value is not None
        if numeric and self.type not in ("integer", "number"):
            raise ValueError("min_value and max_value apply to integer and number columns only")
        if self.min_length is not None and self.max_length is not None and self.min_length > self.max_length:
            raise ValueError("min_length > max_length")
        if self.min_value is not None and self.max_value is not None and self.min_value > self.max_value:
            raise ValueError("min_value > max_value")
        if self.allowed_values is not None and self.allowed_from_work_order is not None:
            raise ValueError("give allowed_values or allowed_from_work_order, not both")
        return self


class AnswerSpec(Strict):
    """The shape of the consolidated ``answer`` JSON (output contracts)."""

    json_schema: dict[str, Any] = Field(description="JSON Schema (draft 2020-12) of one answer.")
    boxes_within_image: bool = Field(
        default=False, description="Every box of answer.boxes lies in the image: x + width <= 100, y + height <= 100."
    )


class Contract(Strict):
    """A task type's input or output contract, as declared in ``data_contracts/<task_type>/<kind>.yaml``."""

    kind: ContractKind
    task_type: TaskType
    description: str = ""
    columns: dict[str, Rule] = Field(description="Canonical column -> its rule, checked in this order.")
    listing_fields: Rule | None = Field(
        default=None, description="Applied to every mapped listing field (checked as column 'fields.<name>')."
    )
    answer: AnswerSpec | None = None
    version: str = Field(default="", description="Set by the loader: sha256 of the YAML, 12 hex digits.")

    @model_validator(mode="after")
    def _kind_fits(self) -> Contract:
        if self.kind == "input" and self.answer is not None:
            raise ValueError("an input contract has no answer spec")
        if self.kind == "output" and self.listing_fields is not None:
            raise ValueError("listing_fields belongs to input contracts")
        return self


def contract_path(task_type: TaskType | str, kind: ContractKind = "input", root: Path | None = None) -> Path:
    return (root or CONTRACTS_DIR) / TaskType(task_type).value / f"{kind}.yaml"


def contract_version(yaml_bytes: bytes) -> str:
    return hashlib.sha256(yaml_bytes).hexdigest()[:12]


def parse_contract(yaml_bytes: bytes) -> Contract:
    """A contract from its YAML bytes, with its version set."""
    data = yaml.safe_load(yaml_bytes)
    if not isinstance(data, dict):
        raise ValueError("a contract is a YAML mapping")
    if "version" in data:
        raise ValueError("a contract's version is computed from its bytes: do not declare it")
    return Contract.model_validate({**data, "version": contract_version(yaml_bytes)})


def load_contract(task_type: TaskType | str, kind: ContractKind = "input", root: Path | None = None) -> Contract:
    """The contract of ``task_type`` from ``data_contracts/`` (or ``root``).

    Raises:
        FileNotFoundError: no such contract file.
        ValueError: the file does not describe this task type and kind, or breaks the contract schema.
    """
    path = contract_path(task_type, kind, root)
    contract = parse_contract(path.read_bytes())
    if contract.task_type != TaskType(task_type) or contract.kind != kind:
        raise ValueError(
            f"{path} declares task_type={contract.task_type.value} kind={contract.kind}, "
            f"expected {TaskType(task_type).value} {kind}"
        )
    return contract
