"""A move while the tenant writes: copy passes, the change list the client library records, the delta applied
inside the write freeze, and the repair of what changed after a switch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Iterator

from tenancy.stores import Mismatch, Progress, StoreError, Summary
from tenancy.stores.firestore.access import api_errors, client_for, retry, shown
from tenancy.stores.firestore.documents import (Doc, doc_checksum, document_checksums, part_names, part_of,
                                                refuse_unmovable, summarise, unreachable_collections, walk)
from tenancy.stores.firestore.location import (CHANGES_COLLECTION, CHANGES_DOC, Collections, FirestoreLocation,
                                               LIST_PAGE, MARKER_COLLECTION, MAX_BATCH, prepare, valid_id)
from tenancy.stores.firestore.values import canon_fields, uncanon_fields
from tenancy.stores.firestore import writes
from tenancy.stores.firestore.writes import delete_refs


# --- a move in two passes and a delta ------------------------------------------------------------------------
#
# A move copies while the tenant writes (`sync_pass`, twice), then, inside the write freeze, only the documents
# written since: those the second pass wrote, and those the application named to the client library while the
# move ran (`record_changes`, kept at `{root}/_tenancy/changes/written/{id}` in the source until the move is
# over). A listing of every document costs a call per parent document (the declared subcollections under each
# itinerary); the change list is one small listing, whatever the tenant's size.


def _change_ref(client, loc: FirestoreLocation, rel: str):
    return client.document(loc.path(f"{MARKER_COLLECTION}/{CHANGES_DOC}/{CHANGES_COLLECTION}/"
                                     f"{hashlib.sha256(rel.encode()).hexdigest()[:32]}"))


def record_changes(loc: FirestoreLocation, rels: list[str]) -> None:
    """Note, before writing them, documents (paths relative to the tenant's root) that an application writes
    while an operation moves the tenant: the move's last pass copies exactly these."""
    client = client_for(loc)
    batch = client.batch()
    for rel in rels:
        _check_rel(rel)
        batch.set(_change_ref(client, loc, rel), {"rel": rel})
    writes.commit(loc, batch)


def changes(loc: FirestoreLocation) -> list[str]:
    """The documents recorded by `record_changes` at `loc` (one listing, however many documents the tenant has)."""
    client = client_for(loc)
    with api_errors(loc, "reading the change list"):
        return sorted({d.to_dict().get("rel") for d in client.collection(
            loc.path(f"{MARKER_COLLECTION}/{CHANGES_DOC}/{CHANGES_COLLECTION}")).stream(retry=retry())} - {None})


def clear_changes(loc: FirestoreLocation) -> int:
    """Remove the change list (once the move is over, or aborted)."""
    client = client_for(loc)
    with api_errors(loc, "removing the change list"):
        refs = list(client.collection(loc.path(f"{MARKER_COLLECTION}/{CHANGES_DOC}/{CHANGES_COLLECTION}")
                                      ).list_documents(retry=retry()))
    delete_refs(loc, client, refs)
    return len(refs)


def _check_rel(rel: str) -> None:
    segments = rel.split("/") if isinstance(rel, str) else []
    if not segments or len(segments) % 2 or any(not valid_id(x) for x in segments):
        raise StoreError(f"{rel!r} is not a document path relative to the tenant's root (such as 'users/u1')")


@dataclass
class Pass:
    """What one pass saw of the source and did at the target: every source document's (part, checksum), the
    documents written and those removed at the target."""

    source: dict[str, tuple[str, str]]
    written: list[str]
    removed: list[str]
    tree: Collections

    def summary(self) -> Summary:
        return summarise(self.source.values(), self.tree)


def sync_pass(src: FirestoreLocation, dst: FirestoreLocation, tenant: str, collections: Collections,
              progress: Progress | None = None, *, batch_size: int = MAX_BATCH) -> Pass:
    """Every document of the tenant from `src` to `dst` that is missing or different there, and every document
    found only at `dst` removed (`dst` is a move's own copy, which nothing else writes). While the tenant
    writes, so nothing is verified here: the documents written since are the delta's."""
    tree = prepare(src, tenant, collections)
    prepare(dst, tenant, collections)
    if src == dst:
        raise StoreError(f"{src}: source and target of the copy are the same location")
    with api_errors(src, "listing collections"):
        refuse_unmovable(src, tenant, "copy", unreachable_collections(src, tree))
    target = document_checksums(dst, tree)
    source: dict[str, tuple[str, str]] = {}
    written: list[str] = []

    def wanted() -> Iterator[Doc]:
        for doc in walk(src, tree):
            source[doc.rel] = (doc.part, doc.checksum)
            if target.get(doc.rel, (None, None))[1] != doc.checksum:
                written.append(doc.rel)
                yield doc

    with api_errors(src, "reading documents"):
        writes.write_docs(dst, wanted(), target, batch_size)
    removed = sorted(set(target) - set(source), key=lambda r: (-r.count("/"), r))
    _remove(dst, removed)
    (progress or (lambda m: None))(f"  {len(written)} documents of '{tenant}' written to {dst}, {len(removed)} removed "
                                   f"there ({len(source)} at the source)")
    return Pass(source, written, removed, tree)


def _remove(loc: FirestoreLocation, rels: list[str]) -> None:
    client = client_for(loc)
    delete_refs(loc, client, [client.document(loc.path(rel)) for rel in rels])


def _get(loc: FirestoreLocation, rels: list[str]) -> dict[str, Doc]:
    """The documents at these paths that exist, read in batches (BatchGetDocuments)."""
    from google.cloud.firestore_v1 import _helpers

    client = client_for(loc)
    out: dict[str, Doc] = {}
    with api_errors(loc, "reading documents"):
        for start in range(0, len(rels), LIST_PAGE):
            refs = [client.document(loc.path(r)) for r in rels[start:start + LIST_PAGE]]
            for snap in client.get_all(refs, retry=retry()):
                if not snap.exists:
                    continue
                rel = snap.reference.path[len(loc.root) + 1:] if loc.root else snap.reference.path
                data = canon_fields(snap.to_dict() or {}, loc.root)
                out[rel] = Doc(rel, part_of(rel), rel.count("/") // 2, doc_checksum(rel, data), data,
                                snap.update_time)
    return out


def apply_delta(src: FirestoreLocation, dst: FirestoreLocation, tenant: str, collections: Collections,
                rels: list[str], before: Pass, progress: Progress | None = None) -> Pass:
    """Inside the write freeze: the documents at `rels` made at `dst` what they are at `src` (written, or removed
    where the source has none), then read back and compared. Returns `before` brought up to date: its `source`
    is then every source document, each verified equal at the target (by `before`'s pass or here)."""
    tree = prepare(src, tenant, collections)
    prepare(dst, tenant, collections)
    declared = set(part_names(tree))
    rels = sorted({r for r in rels if part_of(r) in declared}, key=lambda r: (r.count("/"), r))
    have = _get(src, rels)
    target = {r: (d.part, d.checksum) for r, d in _get(dst, rels).items()}
    writes.write_docs(dst, (have[r] for r in rels if r in have and target.get(r, (None, None))[1] != have[r].checksum),
                      target, MAX_BATCH)
    gone = sorted((r for r in rels if r not in have and r in target), key=lambda r: (-r.count("/"), r))
    _remove(dst, gone)
    back = _get(dst, rels)
    bad = [r for r in rels if (r in have) != (r in back) or (r in have and have[r].checksum != back[r].checksum)]
    if bad:
        raise Mismatch(f"tenant '{tenant}': {len(bad)} documents differ at {dst} after the last pass: {shown(bad)}")
    source = dict(before.source)
    for r in rels:
        if r in have:
            source[r] = (have[r].part, have[r].checksum)
        else:
            source.pop(r, None)
    (progress or (lambda m: None))(f"  {len(rels)} documents of '{tenant}' changed since the last pass: "
                                   f"{len(have)} written and read back, {len(gone)} removed")
    return Pass(source, [r for r in rels if r in have], gone, tree)


def repair(src: FirestoreLocation, dst: FirestoreLocation, tenant: str, collections: Collections,
           switched_at: datetime, progress: Progress | None = None) -> tuple[list[str], list[str]]:
    """After a switch, when the read-only source does not hold what the move verified (a write that reached the
    source after the second pass without being recorded): each document that differs at `dst` and was not
    written there since the switch is written again from the source. Returns
    (repaired, left): documents missing at the target, or written since the switch, are left and named."""
    tree = prepare(src, tenant, collections)
    with api_errors(src, "reading documents"):
        source = {d.rel: d for d in walk(src, tree)}
        target = {d.rel: d for d in walk(dst, tree)}
    client = client_for(dst)
    repaired, left = [], []
    for rel in sorted(source, key=lambda r: (r.count("/"), r)):
        s, t = source[rel], target.get(rel)
        if t is not None and t.checksum == s.checksum:
            continue
        if t is None or t.update_time is None or t.update_time > switched_at:
            left.append(rel)
            continue
        batch = client.batch()
        batch.set(client.document(dst.path(rel)), uncanon_fields(s.fields, client, dst, rel))
        writes.commit(dst, batch)
        repaired.append(rel)
    if repaired or left:
        (progress or (lambda m: None))(f"  {dst}: {len(repaired)} documents written again from the read-only source"
                                       + (f"; left as they are: {shown(left)}" if left else ""))
    return repaired, left
