"""Reading a tenant's documents: the declared tree walked with ListDocuments (missing parents included), what it
cannot reach, and per-document checksums summed into a layout-independent `Summary`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterator

from tenancy.stores import StoreError, Summary, combine
from tenancy.stores.firestore.access import api_errors, client_for, retry, shown
from tenancy.stores.firestore.location import (CHECKSUM_MODULUS, Collections, FirestoreLocation, KIND, LIST_PAGE,
                                               MARKER_COLLECTION)
from tenancy.stores.firestore.values import canon_fields


# --- reading -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Doc:
    rel: str                    # path relative to the location's root
    part: str                   # collection path with "*" for document ids
    depth: int                  # 0 for top-level collections
    checksum: str
    fields: dict[str, Any]      # canonical JSON
    update_time: datetime | None


def walk(loc: FirestoreLocation, tree: Collections, problems: list[str] | None = None, *,
          fields: bool = True) -> Iterator[Doc]:
    """Every document under the declared tree, each parent before its subcollections' documents.

    Declared subcollections are read under missing parents as under existing ones. With `problems`, the
    undeclared collections beneath each missing document are appended to it. Without `fields` (a pass that only
    needs the paths) documents come without fields and with an empty checksum."""
    client = client_for(loc)
    documents = f"projects/{loc.project}/databases/{loc.database}/documents"
    yield from _walk_under(loc, client, f"{documents}/{loc.root}" if loc.root else documents, tree, "", "", 0,
                           problems, fields)


def _walk_under(loc, client, parent: str, tree: Collections, rel_prefix: str, part_prefix: str, depth: int,
                problems: list[str] | None, fields: bool) -> Iterator[Doc]:
    from google.cloud.firestore_v1 import _helpers

    for name in sorted(tree):
        part, parents = part_prefix + name, []
        for item in _list(client, parent, name, fields):
            doc_id = item.name.rsplit("/", 1)[1]
            rel = f"{rel_prefix}{name}/{doc_id}"
            if item._pb.HasField("create_time"):
                data = canon_fields(_helpers.decode_dict(item.fields, client), loc.root) if fields else {}
                yield Doc(rel, part, depth, doc_checksum(rel, data) if fields else "", data, item.update_time)
            elif problems is not None:
                problems.extend(undeclared_collections(loc, rel, tree[name]))
            if tree[name]:
                parents.append(doc_id)
        # subcollections once the parent collection is listed: no listing held open across levels
        for doc_id in parents:
            yield from _walk_under(loc, client, f"{parent}/{name}/{doc_id}", tree[name],
                                   f"{rel_prefix}{name}/{doc_id}/", f"{part}/*/", depth + 1, problems, fields)


def _list(client, parent: str, collection_id: str, fields: bool):
    """ListDocuments with show_missing: existing documents (create_time set) and missing ones (a name only)."""
    request = {"parent": parent, "collection_id": collection_id, "page_size": LIST_PAGE, "show_missing": True}
    if not fields:
        request["mask"] = {"field_paths": []}
    return client._firestore_api.list_documents(request=request, metadata=client._rpc_metadata, retry=retry())


def undeclared_collections(loc: FirestoreLocation, rel: str, declared: Collections) -> list[str]:
    """Collections holding documents under `rel` ("" for the root) that `declared` does not name, as problem
    lines; the deletion marker's collection at the root is the store's own."""
    client = client_for(loc)
    at = client.document(loc.path(rel)) if rel else client.document(loc.root) if loc.root else client
    found = sorted(c.id for c in at.collections(retry=retry()))
    if rel:
        return [f"{rel}/{c} (not declared, under the missing document {rel})" for c in found if c not in declared]
    return [f"{c} (not declared, at the tenant's root)" for c in found if c not in declared and c != MARKER_COLLECTION]


def unreachable_collections(loc: FirestoreLocation, tree: Collections) -> list[str]:
    problems = undeclared_collections(loc, "", tree)
    for _ in walk(loc, tree, problems, fields=False):
        pass
    return problems


def refuse_unmovable(loc: FirestoreLocation, tenant: str, doing: str, problems: list[str]) -> None:
    if problems:
        raise StoreError(f"{loc}: refusing to {doing} tenant '{tenant}': {len(problems)} collections hold documents "
                         f"outside the declared collections, which would be left behind: {shown(problems)}; declare "
                         "them (stores.yaml, firestore) or move those documents into declared collections, then run "
                         "again; nothing was changed")


def document_checksums(loc: FirestoreLocation, tree: Collections) -> dict[str, tuple[str, str]]:
    """relative path -> (part, checksum) of every document at the location."""
    with api_errors(loc, "reading documents"):
        return {d.rel: (d.part, d.checksum) for d in walk(loc, tree)}


def summarise(items, tree: Collections) -> Summary:
    """Summary from (part, document checksum) pairs; every declared part appears, empty ones with count 0."""
    acc = {p: [0, 0] for p in part_names(tree)}
    for part, checksum in items:
        acc[part][0] += 1
        acc[part][1] = (acc[part][1] + int(checksum, 16)) % CHECKSUM_MODULUS
    parts = {p: {"count": n, "checksum": f"{s:064x}"} for p, (n, s) in acc.items()}
    count, checksum = combine(parts)
    return Summary(KIND, count, checksum, parts)


def part_names(tree: Collections, prefix: str = "") -> list[str]:
    out = []
    for name in sorted(tree):
        out.append(prefix + name)
        out.extend(part_names(tree[name], f"{prefix}{name}/*/"))
    return out


def part_of(rel: str) -> str:
    segments = rel.split("/")
    return "/*/".join(segments[0::2])


def doc_checksum(rel: str, fields: dict[str, Any]) -> str:
    return hashlib.sha256(f"{rel}\0{dumps(fields)}".encode()).hexdigest()


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
