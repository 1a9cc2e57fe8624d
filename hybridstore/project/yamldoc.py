"""YAML documents with positions: every value's ``line:column``, for messages that say
where a problem is.

PyYAML's loader keeps marks only on the node tree, so the tree is composed first and
turned into plain values here, recording the mark of each value (and of each mapping
key) under its path. Duplicate mapping keys, which ``safe_load`` silently resolves to
the last one, are refused with the second key's position.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hybridstore.errors import InvalidInputError

__all__ = ["Position", "YamlDocument", "dump_plain", "load_plain", "load_yaml"]

PathKey = tuple[str | int, ...]

# libyaml's loader and dumper when PyYAML was built with it: about ten times faster.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def load_plain(data: bytes) -> Any:
    """``yaml.safe_load`` on libyaml where available (files whose positions nobody needs:
    the lock, Helm's files). Raises ``yaml.YAMLError``."""
    return yaml.load(data, Loader=_Loader)


def dump_plain(obj: Any) -> str:
    """``yaml.safe_dump`` with sorted keys, block style and no line folding."""
    text: str = yaml.dump(
        obj,
        Dumper=_Dumper,
        sort_keys=True,
        default_flow_style=False,
        allow_unicode=True,
        width=10_000,
    )
    return text


@dataclass(frozen=True)
class Position:
    """A place in a file, 1-based, as editors and compilers print it."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass
class YamlDocument:
    """A parsed document: its plain value and where each part of it was written."""

    file: str
    data: Any
    values: dict[PathKey, Position] = field(default_factory=dict)
    keys: dict[PathKey, Position] = field(default_factory=dict)

    def at(self, path: PathKey, *, key: bool = False) -> Position:
        """Where ``path`` was written (its key with ``key``), else its nearest parent."""
        table = self.keys if key else self.values
        for n in range(len(path), -1, -1):
            found = table.get(path[:n]) or self.values.get(path[:n])
            if found is not None:
                return found
        return Position(self.file, 1, 1)


def load_yaml(path: Path, display: str) -> YamlDocument:
    """Parse the YAML file at ``path`` (one document); ``display`` names it in messages."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise InvalidInputError(
            f"{display}: no such file; create it (see README, 'Projects') or pass -f FILE"
        ) from None
    except OSError as e:
        raise InvalidInputError(f"{display}: cannot read: {e.strerror}") from None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        doc = YamlDocument(display, None)
        if node is not None:
            doc.data = _value(loader, node, (), doc)
        return doc
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = Position(display, mark.line + 1, mark.column + 1) if mark else display
        raise InvalidInputError(f"{where}: invalid YAML: {e.problem or e.context}") from None
    except yaml.reader.ReaderError as e:  # not UTF-8, or a control character
        before = text[: e.position]
        where = Position(display, before.count(b"\n") + 1, len(before) - before.rfind(b"\n"))
        raise InvalidInputError(
            f"{where}: invalid YAML: {e.reason} (character {e.character!r}); "
            "save the file as UTF-8 text"
        ) from None
    except yaml.YAMLError as e:
        raise InvalidInputError(f"{display}: invalid YAML: {str(e).splitlines()[0]}") from None
    finally:
        loader.dispose()


def _position(doc: YamlDocument, node: yaml.Node) -> Position:
    return Position(doc.file, node.start_mark.line + 1, node.start_mark.column + 1)


def _value(loader: Any, node: yaml.Node, path: PathKey, doc: YamlDocument) -> Any:
    doc.values[path] = _position(doc, node)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable) or isinstance(key, (list, dict)):
                raise InvalidInputError(f"{_position(doc, key_node)}: a key must be a string")
            if key in out:
                raise InvalidInputError(
                    f"{_position(doc, key_node)}: duplicate key {key!r}; keep one of them"
                )
            sub = (*path, str(key))
            doc.keys[sub] = _position(doc, key_node)
            out[key] = _value(loader, value_node, sub, doc)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_value(loader, item, (*path, i), doc) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)
