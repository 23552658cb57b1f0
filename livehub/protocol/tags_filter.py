"""Tags filters: the ``tf`` of a subscribe request (a tree of ``FilterNode``s).

A leaf compares one tag (``key``) with ``cmp``: ``eq``, ``neq``, ``in``/``nin`` (``vals``),
``ex``/``nex`` (the tag is there or not), ``sw``/``ew``/``ct`` (starts with, ends with,
contains), ``gt``/``gte``/``lt``/``lte`` (as decimal numbers; not a number: no match).
Inner nodes have ``op`` ``and``, ``or`` or ``not`` (exactly one child) over ``nodes``.
A filter deeper than :data:`MAX_DEPTH` or larger than :data:`MAX_NODES` is refused: a
client's filter is kept for its whole subscription and run on every publication.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

MAX_DEPTH = 8
MAX_NODES = 64
_LEAF_CMPS = frozenset("eq neq in nin ex nex sw ew ct gt gte lt lte".split())


class InvalidFilter(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class FilterNode:
    op: str = ""
    key: str = ""
    cmp: str = ""
    val: str = ""
    vals: tuple[str, ...] = ()
    nodes: tuple[FilterNode, ...] = ()

    def match(self, tags: dict[str, str]) -> bool:
        if self.op == "and":
            return all(n.match(tags) for n in self.nodes)
        if self.op == "or":
            return any(n.match(tags) for n in self.nodes)
        if self.op == "not":
            return not self.nodes[0].match(tags)
        value = tags.get(self.key)
        cmp = self.cmp
        if cmp == "eq":
            return value == self.val
        if cmp == "neq":
            return value != self.val
        if cmp == "in":
            return value in self.vals if value is not None else "" in self.vals
        if cmp == "nin":
            return (value if value is not None else "") not in self.vals
        if cmp == "ex":
            return value is not None
        if cmp == "nex":
            return value is None
        if value is None:
            return False
        if cmp == "sw":
            return value.startswith(self.val)
        if cmp == "ew":
            return value.endswith(self.val)
        if cmp == "ct":
            return self.val in value
        try:
            a, b = Decimal(value), Decimal(self.val)
        except InvalidOperation:
            return False
        return {"gt": a > b, "gte": a >= b, "lt": a < b, "lte": a <= b}[cmp]


def parse(obj: Any, depth: int = 0, count: list[int] | None = None) -> FilterNode:
    """A FilterNode from its JSON object (the Protobuf decoder builds the same dict)."""
    count = count if count is not None else [0]
    count[0] += 1
    if depth > MAX_DEPTH or count[0] > MAX_NODES:
        raise InvalidFilter("tags filter too large")
    if not isinstance(obj, dict):
        raise InvalidFilter("a filter node is an object")
    op, key, cmp, val = (obj.get(k) or "" for k in ("op", "key", "cmp", "val"))
    vals, nodes = obj.get("vals") or [], obj.get("nodes") or []
    if not all(isinstance(v, str) for v in (op, key, cmp, val)) or not isinstance(vals, list):
        raise InvalidFilter("bad filter node")
    if not isinstance(nodes, list) or not all(isinstance(v, str) for v in vals):
        raise InvalidFilter("bad filter node")
    if op == "":
        if cmp not in _LEAF_CMPS or not key or nodes:
            raise InvalidFilter(f"bad leaf {cmp!r}")
        if cmp in ("in", "nin") and (not vals or val):
            raise InvalidFilter(f"{cmp} takes vals")
        if cmp not in ("in", "nin", "ex", "nex") and (not val or vals):
            raise InvalidFilter(f"{cmp} takes val")
        return FilterNode("", key, cmp, val, tuple(vals))
    if op not in ("and", "or", "not") or not nodes or (op == "not" and len(nodes) != 1):
        raise InvalidFilter(f"bad op {op!r}")
    return FilterNode(op, nodes=tuple(parse(n, depth + 1, count) for n in nodes))
