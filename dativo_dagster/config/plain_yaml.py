"""YAML limited to plain data: what a config file may hold, and nothing that can hurt the loader.

PyYAML's safe loader still accepts documents that exhaust memory or recurse without end: a
kilobyte of nested aliases (``&a [*a, *a, ...]`` a few levels deep) expands to billions of
nodes once anything walks it (validation, the parse cache, pydantic), and an alias inside its own
anchor makes a cycle. It also keeps the last of two equal keys without a word. This module parses
with the same C parser, then inspects the node graph before anything is built from it:

* aliases may add at most :data:`MAX_ALIAS_EXPANSION` nodes and :data:`MAX_ALIAS_EXPANSION_BYTES`
  of text beyond the document's own, and may not refer to an enclosing node (a cycle);
* an explicitly tagged scalar (``!!int abc``) must hold a value of its tag;
* nesting is at most :data:`MAX_DEPTH` levels, a file at most :data:`MAX_FILE_BYTES`;
* a mapping may not repeat a key, use a merge key (``<<``) or a non-scalar key;
* only plain tags: strings, integers, floats, booleans, null, sequences and mappings. A bare
  date or time (``2024-01-01``) stays the text it was written as; ``!!binary``, ``!!set``,
  ``!!python/...`` and any custom tag are refused.

Every refusal names the line and column.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

try:  # the C parser is ~10x faster; it matters for thousands of tenant files
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]

MAX_FILE_BYTES = 4 << 20
MAX_DEPTH = 64
MAX_ALIAS_EXPANSION = 10_000
MAX_ALIAS_EXPANSION_BYTES = 1 << 20
"""Aliases may add at most this much scalar text to a document (a 2.5 MB string repeated by a
thousand aliases would otherwise become gigabytes in every process that walks it)."""

_YAML = "tag:yaml.org,2002:"
_STR = _YAML + "str"
_PLAIN_SCALARS = {_YAML + name for name in ("str", "int", "float", "bool", "null")}
_TIMESTAMP = _YAML + "timestamp"
_SEQ = _YAML + "seq"
_MAP = _YAML + "map"
_MERGE = _YAML + "merge"


class YamlRefused(ValueError):
    """A document that is valid YAML but not plain, bounded data.

    Attributes:
        line: 1-based line of the offending node (0 when unknown).
        column: 1-based column.
        reason: What is wrong, in a few words.
    """

    def __init__(self, reason: str, node: Node | None = None) -> None:
        mark = node.start_mark if node is not None else None
        self.line = mark.line + 1 if mark is not None else 0
        self.column = mark.column + 1 if mark is not None else 0
        self.reason = reason
        where = f"line {self.line}, column {self.column}: " if self.line else ""
        super().__init__(f"{where}{reason}")


class _PlainLoader(_BaseLoader):
    """The C safe loader; construction happens only after :func:`_inspect` accepted the graph."""


def load_plain(text: str) -> Any:
    """Parse one YAML document of plain data.

    Raises:
        yaml.YAMLError: Not YAML at all (syntax).
        YamlRefused: YAML that is not plain, bounded data (see the module docstring).
    """
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        raise YamlRefused(f"file is larger than {MAX_FILE_BYTES >> 20} MB")
    loader = _PlainLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _inspect(node, loader)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _inspect(root: Node, loader: Any) -> None:
    """Walk the node graph once (shared nodes once), refusing what :func:`load_plain` refuses."""
    distinct = 0
    distinct_bytes = 0
    expanded: dict[int, tuple[int, int]] = {}  # node id -> (nodes, scalar bytes) it stands for, aliases expanded
    on_path: set[int] = set()
    # Iterative post-order walk: (node, depth, children done?)
    stack: list[tuple[Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            nodes, size = 1, len(node.value) if isinstance(node, ScalarNode) else 0
            for child in _children(node):
                child_nodes, child_size = expanded[id(child)]
                nodes += child_nodes
                size += child_size
            expanded[key] = (nodes, size)
            continue
        if key in on_path:
            raise YamlRefused("an alias refers to a node that contains it (a cycle)", node)
        if key in expanded:
            continue  # an alias of a node already measured: its size is known
        if depth > MAX_DEPTH:
            raise YamlRefused(f"nesting deeper than {MAX_DEPTH} levels", node)
        distinct += 1
        if isinstance(node, ScalarNode):
            distinct_bytes += len(node.value)
        _check_node(node, loader)
        on_path.add(key)
        stack.append((node, depth, True))
        for child in _children(node):
            if id(child) in on_path:
                raise YamlRefused("an alias refers to a node that contains it (a cycle)", child)
            stack.append((child, depth + 1, False))
    nodes, size = expanded[id(root)]
    if nodes - distinct > MAX_ALIAS_EXPANSION:
        raise YamlRefused(
            f"aliases expand the document by {nodes - distinct:,} nodes (at most {MAX_ALIAS_EXPANSION:,} are allowed)",
            root,
        )
    if size - distinct_bytes > MAX_ALIAS_EXPANSION_BYTES:
        raise YamlRefused(
            f"aliases expand the document by {size - distinct_bytes:,} bytes of text "
            f"(at most {MAX_ALIAS_EXPANSION_BYTES:,} are allowed)",
            root,
        )


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_node(node: Node, loader: Any) -> None:
    if isinstance(node, ScalarNode):
        if node.tag == _TIMESTAMP:
            node.tag = _STR  # a date stays the text it was written as
        elif node.tag not in _PLAIN_SCALARS:
            raise YamlRefused(f"tag {_short(node.tag)} is not plain data", node)
        elif node.tag != _STR:
            try:
                loader.construct_object(node)  # an explicit !!int abc fails here, at its own line
            except (ValueError, TypeError, KeyError, OverflowError, yaml.YAMLError):
                raise YamlRefused(f"{node.value[:40]!r} is not a valid {_short(node.tag)}", node) from None
    elif isinstance(node, SequenceNode):
        if node.tag != _SEQ:
            raise YamlRefused(f"tag {_short(node.tag)} is not plain data", node)
    elif isinstance(node, MappingNode):
        if node.tag != _MAP:
            raise YamlRefused(f"tag {_short(node.tag)} is not plain data", node)
        seen: dict[tuple[str, str], Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:
                raise YamlRefused("merge keys ('<<') are not supported; write the keys out", key_node)
            if not isinstance(key_node, ScalarNode):
                raise YamlRefused("mapping keys must be plain scalars", key_node)
            identity = (key_node.tag, key_node.value)
            first = seen.get(identity)
            if first is not None:
                raise YamlRefused(
                    f"duplicate key '{key_node.value}' (first at line {first.start_mark.line + 1})", key_node
                )
            seen[identity] = key_node
    else:  # pragma: no cover - PyYAML has no other node kinds
        raise YamlRefused(f"unexpected node {type(node).__name__}", node)


def _short(tag: str) -> str:
    return "!!" + tag[len(_YAML) :] if tag.startswith(_YAML) else tag


__all__ = ["MAX_ALIAS_EXPANSION", "MAX_DEPTH", "MAX_FILE_BYTES", "YamlRefused", "load_plain", "yaml"]
