"""YAML text -> plain Python documents, with the line/column of every key and value.

PyYAML's composer (the C one when available) gives nodes with marks; this module turns them into
plain data itself instead of using PyYAML's constructor for containers, so that it can:
- reject duplicate keys (PyYAML and SkyPilot silently keep the last one) and keep the first;
- remember where each key and value is, by key path (``("resources", "any_of", 1, "cpus")``);
- bound the work: a streaming pre-scan refuses more than `MAX_DOCUMENTS` documents or
  `MAX_EVENTS` YAML events before any node tree is built; then at most `MAX_DEPTH` levels of
  nesting and `MAX_VALUES` values after expanding aliases (so a "billion laughs" file fails fast
  instead of eating memory). A 5-task job group has a few hundred events.

Scalars are resolved as PyYAML's safe loader does (YAML 1.1: ``yes`` is true, ``1_000`` is 1000).
Mapping keys are always strings: a key that YAML would read as another type (``8080:``,
``yes:``) is kept as its source text. Merge keys (``<<: *anchor``) work as in PyYAML.
"""

from __future__ import annotations

from typing import Any

import msgspec
import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

try:
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # PyYAML built without libyaml
    _Loader = yaml.SafeLoader

MAX_DEPTH = 100
MAX_VALUES = 200_000
MAX_EVENTS = 200_000
MAX_DOCUMENTS = 1000

Path = tuple[str | int, ...]
Pos = tuple[int, int]  # 1-based (line, column)

_MAP = "tag:yaml.org,2002:map"
_SET = "tag:yaml.org,2002:set"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"


class Issue(msgspec.Struct):
    """A problem found while reading YAML, before the document's role is known."""

    path: Path
    pos: Pos | None
    message: str


class Document(msgspec.Struct):
    """One YAML document: its data and where each part of it is.

    `index` counts documents from 0 in file order; `keys`/`values` map a key path to the
    position of that key / of its value (list items have only a value position).
    """

    index: int
    data: Any
    start: Pos
    keys: dict[Path, Pos] = msgspec.field(default_factory=dict)
    values: dict[Path, Pos] = msgspec.field(default_factory=dict)
    issues: list[Issue] = msgspec.field(default_factory=list)

    def pos(self, path: Path, *, key: bool = False) -> Pos:
        """Position of `path` (its key when `key`, else its value), or of its nearest ancestor
        that has one, or of the document."""
        p = tuple(path)
        while p:
            got = (self.keys.get(p) if key else None) or self.values.get(p) or self.keys.get(p)
            if got:
                return got
            p = p[:-1]
        return self.start


class TooBig(Exception):
    """The text is too large to be a spec (see the limits above). `pos` as in YAMLSyntaxError."""

    def __init__(self, message: str, pos: Pos | None = None):
        super().__init__(message)
        self.message = message
        self.pos = pos


class YAMLSyntaxError(Exception):
    """The text is not valid YAML. `pos` is where the parser gave up (None when unknown)."""

    def __init__(self, message: str, pos: Pos | None):
        super().__init__(message)
        self.message = message
        self.pos = pos


def _pos(node: Node | yaml.Event) -> Pos:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _Walker:
    def __init__(self, doc: Document):
        self.doc = doc
        self.count = 0
        self.constructor = yaml.constructor.SafeConstructor()

    def value(self, node: Node, path: Path, depth: int) -> Any:
        self.count += 1
        if self.count > MAX_VALUES:
            raise TooBig(f"has more than {MAX_VALUES} values (after expanding aliases)")
        if depth > MAX_DEPTH:
            raise TooBig(f"nests more than {MAX_DEPTH} levels deep")
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        if isinstance(node, SequenceNode):
            if node.tag != _SEQ:
                self.doc.issues.append(Issue(path, _pos(node), f"unsupported YAML tag {node.tag}"))
            out = []
            for i, child in enumerate(node.value):
                self.doc.values[(*path, i)] = _pos(child)
                out.append(self.value(child, (*path, i), depth + 1))
            return out
        if isinstance(node, MappingNode):
            if node.tag not in (_MAP, _SET):
                self.doc.issues.append(Issue(path, _pos(node), f"unsupported YAML tag {node.tag}"))
            return self.mapping(node, path, depth)
        raise TooBig(f"has an unknown YAML node {type(node).__name__}")  # pragma: no cover

    def scalar(self, node: ScalarNode, path: Path) -> Any:
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.YAMLError as e:
            problem = getattr(e, "problem", None) or str(e)
            self.doc.issues.append(Issue(path, _pos(node), f"cannot read this value: {problem}"))
            return node.value

    def key(self, node: Node, path: Path) -> str | None:
        if not isinstance(node, ScalarNode):
            kind = "list" if isinstance(node, SequenceNode) else "mapping"
            self.doc.issues.append(Issue(path, _pos(node), f"a key must be a plain value, not a {kind}"))
            return None
        value = self.scalar(node, path)
        return value if isinstance(value, str) else node.value

    def pairs(self, node: MappingNode, path: Path, depth: int) -> list[tuple[Node, Node]]:
        """The mapping's pairs with merge keys (``<<``) expanded; explicit keys come first."""
        explicit, merged = [], []
        for k, v in node.value:
            if isinstance(k, ScalarNode) and k.tag == _MERGE:
                sources = v.value if isinstance(v, SequenceNode) else [v]
                for src in sources:
                    if not isinstance(src, MappingNode) or depth > MAX_DEPTH:
                        self.doc.issues.append(
                            Issue(path, _pos(src), "a merge key (<<) needs a mapping or a list of mappings"))
                        continue
                    merged.extend(self.pairs(src, path, depth + 1))
            else:
                explicit.append((k, v))
        return explicit + merged

    def mapping(self, node: MappingNode, path: Path, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        explicit = {id(k) for k, _ in node.value}
        seen: dict[str, Pos] = {}
        for k, v in self.pairs(node, path, depth):
            name = self.key(k, path)
            if name is None:
                continue
            if name in out or name in seen:
                if id(k) in explicit and name in seen:
                    line = seen[name][0]
                    self.doc.issues.append(Issue(
                        (*path, name), _pos(k),
                        f"duplicate key '{name}' (first given at line {line}); "
                        "remove one of them (SkyPilot would silently keep the last)"))
                continue  # merged values never override explicit ones; the first one wins
            sub = (*path, name)
            if id(k) in explicit:
                seen[name] = _pos(k)
            self.doc.keys[sub] = _pos(k)
            self.doc.values[sub] = _pos(v)
            out[name] = self.value(v, sub, depth + 1)
        return out


def _syntax_error(e: Exception) -> YAMLSyntaxError:
    if isinstance(e, yaml.MarkedYAMLError) and e.problem_mark is not None:
        message = e.problem or "invalid YAML"
        if e.context:
            ctx_line = f" at line {e.context_mark.line + 1}" if e.context_mark is not None else ""
            message = f"{message} ({e.context}{ctx_line})"
        return YAMLSyntaxError(message, (e.problem_mark.line + 1, e.problem_mark.column + 1))
    if isinstance(e, yaml.reader.ReaderError):
        return YAMLSyntaxError(f"unacceptable character #x{e.character:04x} in YAML text", None)
    text = " ".join(str(e).split())
    return YAMLSyntaxError(text or "invalid YAML", None)


def _prescan(text: str) -> None:
    """Count documents and events without building nodes (constant memory)."""
    events = docs = 0
    for event in yaml.parse(text, Loader=_Loader):
        events += 1
        if isinstance(event, yaml.DocumentStartEvent):
            docs += 1
            if docs > MAX_DOCUMENTS:
                raise TooBig(f"has more than {MAX_DOCUMENTS} documents", _pos(event))
        if events > MAX_EVENTS:
            raise TooBig(f"has more than {MAX_EVENTS} YAML nodes; a spec is much smaller",
                         _pos(event))


def documents(text: str) -> list[Document]:
    """Every document of `text` (an empty document is one whose `data` is None).

    Raises YAMLSyntaxError when the text is not YAML, TooBig when it is too large to be a
    spec (see the module doc); other problems are in `Document.issues`.
    """
    try:
        _prescan(text)
        nodes = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.YAMLError as e:
        raise _syntax_error(e) from None
    except RecursionError:
        raise YAMLSyntaxError(f"nests more than {MAX_DEPTH} levels deep", None) from None
    out = []
    for index, node in enumerate(nodes):
        doc = Document(index, None, _pos(node))
        try:
            doc.data = _Walker(doc).value(node, (), 0)
        except TooBig as e:
            raise TooBig(f"document #{index + 1} {e.message}", doc.start) from None
        out.append(doc)
    return out
