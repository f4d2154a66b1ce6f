"""Reading the untrusted YAML of a catalogue into a document and the line of every path in it.

The file arrives in pull requests: before anything is built from it, its size is capped (MAX_FILE_BYTES, by
tenancy.catalog.load); then its YAML event stream is walked once, without recursion, and anchors and aliases
(billion laughs), nesting deeper than a catalogue needs, and lists or mappings used as keys are refused before
the loader composes anything. A file of nothing but plain mappings, lists and scalars (every valid catalogue) is
built in that same walk; at the first event that is anything else, the walk stops and the file is checked and
loaded the long way, which refuses or reports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import yaml

from tenancy.catalog.values import echo
from tenancy.errors import CatalogError, Problem

# Untrusted-input limits (see the module docstring). A real catalogue is about 6 levels deep and
# 100 bytes per tenant, so these leave room for about 150,000 tenants written the usual way.
MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 20

_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: ~10x faster on large files


class LineLoader(_BaseLoader):  # type: ignore[misc,valid-type]
    """A safe loader that rejects duplicate keys (a silent override is a typo waiting to happen)."""


def _construct_mapping(loader: LineLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {echo(key)} (first at line {seen[key] + 1}); keep one", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def line_index(node: yaml.Node | None) -> dict[tuple, int]:
    """Map every path in the document (('tenants', 3, 'subdomain')) to its 1-based line.

    Iterative: the depth is already capped, but nothing here should depend on that to stay on the stack."""
    out: dict[tuple, int] = {}
    todo: list[tuple[tuple, yaml.Node]] = [((), node)] if node is not None else []
    while todo:
        path, current = todo.pop()
        out.setdefault(path, current.start_mark.line + 1)
        if isinstance(current, yaml.MappingNode):
            for k, v in current.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else id(k)  # complex keys are refused earlier
                out[path + (key,)] = k.start_mark.line + 1
                todo.append((path + (key,), v))
        elif isinstance(current, yaml.SequenceNode):
            for i, item in enumerate(current.value):
                todo.append((path + (i,), item))
    return out


def _check_shape(text: str, path: str) -> None:
    """Walk the YAML events once, building nothing, and refuse what could take the loader down:
    anchors and aliases (a few lines can expand to gigabytes), nesting deeper than MAX_DEPTH (the
    composer recurses per level), and lists or mappings used as mapping keys."""

    def refuse(event: Any, message: str) -> CatalogError:
        return CatalogError([Problem(path, event.start_mark.line + 1, None, "(syntax)", message)])

    loader = _BaseLoader(text)
    try:
        # One entry per open collection: [is a mapping, number of child nodes so far].
        open_: list[list] = []
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, yaml.AliasEvent) or (isinstance(event, yaml.NodeEvent) and event.anchor is not None):
                raise refuse(event, "YAML anchors and aliases (&name, *name) are not accepted in a catalogue "
                                    "(limit: none); write each value out in full")
            if isinstance(event, yaml.CollectionStartEvent):
                if open_ and open_[-1][0] and open_[-1][1] % 2 == 0:
                    raise refuse(event, "a list or mapping is used as a key; keys are plain names")
                if len(open_) + 1 > MAX_DEPTH:
                    raise refuse(event, f"nesting deeper than {MAX_DEPTH} levels (the limit; a catalogue needs about 6); "
                                        "is the file what you meant to pass?")
                open_.append([isinstance(event, yaml.MappingStartEvent), 0])
            elif isinstance(event, yaml.CollectionEndEvent):
                open_.pop()
                if open_:
                    open_[-1][1] += 1
            elif isinstance(event, yaml.ScalarEvent) and open_:
                open_[-1][1] += 1
    finally:
        loader.dispose()


# Scalars the one-pass reader builds itself (with the loader's own constructors); any other tag sends the
# file down the checked path, which builds it or reports it exactly as before.
_PLAIN_TAGS = frozenset({"tag:yaml.org,2002:null", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int",
                         "tag:yaml.org,2002:float"})
_STR_TAG = yaml.resolver.BaseResolver.DEFAULT_SCALAR_TAG


def _read_plain(text: str) -> tuple[Any, dict[tuple, int]] | None:
    """(document, line index) of a file made only of what a catalogue is made of, in one walk of its YAML
    events; None as soon as anything else appears.

    Equivalent to `_check_shape`, then composing and constructing with `LineLoader`, then `line_index`, for
    the files it accepts: a single document (or none) of untagged scalars, mappings and lists, no anchor or
    alias, no collection as a key, no nesting past MAX_DEPTH, no key twice in a mapping (neither as value nor
    as text), scalars that resolve to str, null, bool, int or float, and no syntax error anywhere in the
    stream. Everything else (every file with a problem at the YAML level included) returns None, and
    `read_yaml` takes the checked path, which refuses or reports it. Composing builds a node per value
    and `line_index` walks them again; this builds the values and their lines directly, which on a large
    catalogue is most of the cost of loading it. The walk holds its own stack: it never recurses, it stops at
    the first anchor or alias (nothing is expanded) and at the first level past MAX_DEPTH."""
    scalar_event, mapping_start, sequence_start = yaml.ScalarEvent, yaml.MappingStartEvent, yaml.SequenceStartEvent
    mapping_end, sequence_end = yaml.MappingEndEvent, yaml.SequenceEndEvent
    loader = LineLoader(text)
    try:
        if loader.yaml_path_resolvers:
            return None  # path-dependent tags: not a plain reading
        # The loader's implicit resolvers by first character, the wildcard ones appended (Resolver.resolve).
        wildcard = loader.yaml_implicit_resolvers.get(None, [])
        by_first = {first: resolvers + wildcard for first, resolvers in loader.yaml_implicit_resolvers.items()}
        constructors = loader.yaml_constructors
        get_event = loader.get_event
        if get_event().__class__ is not yaml.StreamStartEvent:
            return None
        event = get_event()
        if event.__class__ is yaml.StreamEndEvent:
            return {}, {}  # no document: what the checked path makes of an absent node
        if event.__class__ is not yaml.DocumentStartEvent:
            return None
        lines: dict[tuple, int] = {}
        root: Any = None
        # The innermost open collection: the container, its path, whether it is a mapping, the key texts it has,
        # whether a key comes next; `stack` holds the enclosing ones, `depth` counts them all.
        container: Any = None
        path: tuple = ()
        is_map = expect_key = False
        key_texts: set[str] = set()
        stack: list[tuple] = []
        depth = 0
        key: Any = None
        key_text = ""
        while True:
            event = get_event()
            cls = event.__class__
            if cls is scalar_event:
                if event.anchor is not None or event.tag is not None:
                    return None
                value = event.value
                if event.implicit[0]:
                    for tag, regexp in by_first.get(value[:1], wildcard):
                        if regexp.match(value):
                            if tag != _STR_TAG:
                                if tag not in _PLAIN_TAGS:
                                    return None
                                node = yaml.ScalarNode(tag, value, event.start_mark, event.end_mark, event.style)
                                value = constructors[tag](loader, node)
                            break
                new = None
            elif cls is mapping_start or cls is sequence_start:
                if event.anchor is not None or event.tag is not None or depth >= MAX_DEPTH:
                    return None
                value = new = {} if cls is mapping_start else []
            elif cls is mapping_end or cls is sequence_end:
                depth -= 1
                if not depth:
                    break
                container, path, is_map, key_texts = stack.pop()
                expect_key = is_map
                continue
            else:
                return None  # an alias, or an event out of place
            if not depth:  # the root
                root = value
                lines[()] = event.start_mark.line + 1
                if new is None:
                    break
                child = ()
            elif is_map:
                if expect_key:
                    key_text = event.value
                    if new is not None or value in container or key_text in key_texts:
                        return None  # a collection as key, or a key twice
                    key_texts.add(key_text)
                    key = value
                    lines[path + (key_text,)] = event.start_mark.line + 1
                    expect_key = False
                    continue
                container[key] = value
                expect_key = True
                if new is None:
                    continue
                child = path + (key_text,)
            else:
                child = path + (len(container),)
                container.append(value)
                lines[child] = event.start_mark.line + 1
                if new is None:
                    continue
            if depth:
                stack.append((container, path, is_map, key_texts))
            depth += 1
            container, path, is_map = new, child, cls is mapping_start
            if is_map:
                key_texts, expect_key = set(), True
        if get_event().__class__ is not yaml.DocumentEndEvent or get_event().__class__ is not yaml.StreamEndEvent:
            return None  # a second document: the checked path reports it
        return root, lines
    except Exception:  # noqa: BLE001 -- whatever it is, the checked path raises it as before
        return None
    finally:
        loader.dispose()


def _read_checked(text: str, path: str) -> tuple[Any, dict[tuple, int]]:
    """(document, line index) the long way, for any file: the shape check, the loader, the line index."""
    _check_shape(text, path)
    loader = LineLoader(text)
    try:
        node = loader.get_single_node()
        raw = loader.construct_document(node) if node is not None else {}
    finally:
        loader.dispose()
    return raw, line_index(node)


def line_for(lines: Mapping[tuple, int], loc: tuple) -> int | None:
    loc = tuple(loc)
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get(())


def read_yaml(text: str, path: str) -> tuple[Any, dict[tuple, int]]:
    """(document, line index) of catalogue text: in one walk when the file is plain (every valid catalogue),
    else the checked path, which raises CatalogError for a refused shape and yaml.YAMLError for bad YAML."""
    plain = _read_plain(text)
    return plain if plain is not None else _read_checked(text, path)


def entry_lines(path: str | Path, key: str) -> dict[str, int]:
    """tenant id -> the 1-based line of that tenant's `key` (dotted for a nested one: `dedicated.project.id`) in the
    catalogue file ({} when it cannot be read): for messages about a catalogue already loaded. A tenant whose
    entry lacks the key is left out, or named at the deepest part of the key it has."""
    try:
        node = yaml.compose(Path(path).read_text(encoding="utf-8"), Loader=_BaseLoader)
    except (OSError, yaml.YAMLError):
        return {}
    out: dict[str, int] = {}
    if not isinstance(node, yaml.MappingNode):
        return out
    for k, value in node.value:
        if k.value != "tenants" or not isinstance(value, yaml.SequenceNode):
            continue
        for item in value.value:
            if not isinstance(item, yaml.MappingNode):
                continue
            fields = {f.value: v for f, v in item.value}
            tid = getattr(fields.get("id"), "value", None)
            first, *rest = key.split(".")
            if not isinstance(tid, str) or first not in fields:
                continue
            node = fields[first]
            for part in rest:
                inner = {f.value: v for f, v in node.value} if isinstance(node, yaml.MappingNode) else {}
                if part not in inner:
                    break
                node = inner[part]
            out.setdefault(tid, node.start_mark.line + 1)
    return out
