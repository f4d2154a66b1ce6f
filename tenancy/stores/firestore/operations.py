"""The store's operations on one location: summary, what is unmovable, copy, verify, and the deletion against a
verified summary (resumable through its progress marker), clearing and discarding.
"""

from __future__ import annotations

from datetime import datetime
from typing import Iterator

from tenancy.stores import Mismatch, Progress, StoreError, Summary, combine
from tenancy.stores.firestore.access import api_errors, client_for, retry, shown
from tenancy.stores.firestore.documents import (Doc, document_checksums, part_names, refuse_unmovable, summarise,
                                                undeclared_collections, unreachable_collections, walk)
from tenancy.stores.firestore.location import (CHECKSUM_MODULUS, Collections, FirestoreLocation, KIND,
                                               MARKER_COLLECTION, MAX_BATCH, check_batch, is_scratch, prepare)
from tenancy.stores.firestore import writes
from tenancy.stores.firestore.writes import check_against, delete_refs, refuse_extras


# --- public operations ---------------------------------------------------------------------------------------


def summary(loc: FirestoreLocation, tenant: str, collections: Collections) -> Summary:
    """Counts and checksums of the tenant's documents per collection path, the same in either layout."""
    tree = prepare(loc, tenant, collections)
    with api_errors(loc, "reading documents"):
        return summarise(((d.part, d.checksum) for d in walk(loc, tree)), tree)


def unmovable(loc: FirestoreLocation, tenant: str, collections: Collections) -> list[str]:
    """What a move, export or deletion of the tenant at `loc` would leave behind, one line per collection; empty
    when nothing. These are collections the declared tree does not name, at the tenant's root or beneath a missing
    document. copy, export and delete refuse while this lists anything; an operation's preflight calls it to
    refuse before its first step."""
    tree = prepare(loc, tenant, collections)
    with api_errors(loc, "listing collections"):
        return unreachable_collections(loc, tree)


def copy(src: FirestoreLocation, dst: FirestoreLocation, tenant: str, collections: Collections,
         progress: Progress | None = None, changed_since: datetime | None = None, *,
         batch_size: int = MAX_BATCH) -> Summary:
    """Copy every document of the tenant from `src` to `dst`; returns the target's summary.

    Documents already equal at the target are not written again. With `changed_since` (timezone-aware) only
    documents whose update time is newer are candidates: the short second pass inside a write freeze. Documents
    found only at the target raise Mismatch after everything else is copied; they are never deleted here. While
    `unmovable()` lists anything at `src`, nothing is written and StoreError says what."""
    tree = prepare(src, tenant, collections)
    prepare(dst, tenant, collections)
    check_batch(batch_size, 1)
    if src == dst:
        raise StoreError(f"{src}: source and target of the copy are the same location")
    if changed_since is not None and changed_since.tzinfo is None:
        raise StoreError("changed_since must be timezone-aware (Firestore update times are UTC); "
                         "pass e.g. datetime.now(timezone.utc)")
    say = progress or (lambda m: None)
    with api_errors(src, "listing collections"):
        refuse_unmovable(src, tenant, "copy", unreachable_collections(src, tree))
    target = document_checksums(dst, tree)
    seen: set[str] = set()
    stats = {"older": 0}

    def wanted() -> Iterator[Doc]:
        for doc in walk(src, tree):
            seen.add(doc.rel)
            if changed_since is not None and doc.update_time is not None and doc.update_time <= changed_since:
                stats["older"] += 1
            elif target.get(doc.rel, (None, None))[1] != doc.checksum:
                yield doc

    with api_errors(src, "reading documents"):
        written = writes.write_docs(dst, wanted(), target, batch_size)
    older = f", {stats['older']} not newer than {changed_since.isoformat()}" if changed_since else ""
    say(f"  copied {written} documents of '{tenant}' from {src} to {dst} "
        f"({len(seen) - written - stats['older']} already there{older})")
    refuse_extras(dst, tenant, src, sorted(set(target) - seen))
    return summarise(target.values(), tree)


def verify(src: FirestoreLocation, dst: FirestoreLocation, tenant: str,
           collections: Collections) -> tuple[Summary, Summary]:
    """Both locations' summaries; Mismatch naming the differing parts and documents when they differ."""
    tree = prepare(src, tenant, collections)
    prepare(dst, tenant, collections)
    a, b = document_checksums(src, tree), document_checksums(dst, tree)
    sa, sb = summarise(a.values(), tree), summarise(b.values(), tree)
    if sa != sb:
        docs = sorted(r for r in set(a) | set(b) if a.get(r) != b.get(r))
        raise Mismatch(f"tenant '{tenant}': {src} and {dst} differ: {'; '.join(sa.differences(sb))} "
                       f"(documents: {shown(docs)})")
    return sa, sb


def delete(loc: FirestoreLocation, tenant: str, collections: Collections, expect: Summary, *,
           progress: Progress | None = None, batch_size: int = MAX_BATCH) -> int:
    """Delete the tenant's documents at `loc`, children first, only while they are exactly `expect`.

    Returns how many documents this call deleted (0 when a previous run already finished). Refused, before any
    deletion, while collections outside the declared tree hold documents (`unmovable()`): they would stay behind."""
    tree = prepare(loc, tenant, collections)
    check_batch(batch_size, 2)
    if expect.kind != KIND:
        raise StoreError(f"{loc}: cannot delete against a {expect.kind!r} summary; pass the Firestore summary")
    say = progress or (lambda m: None)
    client = client_for(loc)
    marker_ref = client.document(loc.path(f"{MARKER_COLLECTION}/deletion"))
    with api_errors(loc, "reading the deletion marker"):
        snap = marker_ref.get(retry=retry())
    marker = snap.to_dict() if snap.exists else None
    if marker is not None and marker.get("expect") != expect.checksum:
        raise Mismatch(f"{loc}: an unfinished deletion of tenant '{tenant}' was started against another summary "
                       f"({str(marker.get('expect'))[:12]}, not {expect.checksum[:12]}); finish or inspect it first")
    with api_errors(loc, "reading documents"):
        problems = undeclared_collections(loc, "", tree)
        docs = sorted(walk(loc, tree, problems), key=lambda d: (-d.depth, d.rel))
    refuse_unmovable(loc, tenant, "delete", problems)
    if marker is None and not docs:
        say(f"  nothing to delete for '{tenant}' at {loc}")
        return 0
    deleted = {p: (int(v["count"]), int(v["checksum"], 16)) for p, v in (marker or {}).get("deleted", {}).items()}
    check_against(loc, tenant, tree, expect, docs, deleted)
    done = 0
    for start in range(0, len(docs), batch_size - 1):
        batch = client.batch()
        for doc in docs[start:start + batch_size - 1]:
            # on Firestore a document changed since it was read fails the whole commit (FAILED_PRECONDITION)
            unchanged = client.write_option(last_update_time=doc.update_time)
            batch.delete(client.document(loc.path(doc.rel)), option=unchanged)
            n, s = deleted.get(doc.part, (0, 0))
            deleted[doc.part] = (n + 1, (s + int(doc.checksum, 16)) % CHECKSUM_MODULUS)
        batch.set(marker_ref, {"expect": expect.checksum,
                               "deleted": {p: {"count": n, "checksum": f"{s:064x}"} for p, (n, s) in deleted.items()}})
        writes.commit(loc, batch)
        done += min(batch_size - 1, len(docs) - start)
    with api_errors(loc, "reading documents"):
        left = sorted(d.rel for d in walk(loc, tree))
    if left:
        raise Mismatch(f"{loc}: {len(left)} documents of tenant '{tenant}' were written during the deletion and "
                       f"were kept: {shown(left)}")
    batch = client.batch()
    batch.delete(marker_ref)
    writes.commit(loc, batch)
    say(f"  deleted {done} documents of '{tenant}' at {loc}")
    return done


def clear(loc: FirestoreLocation, tenant: str, collections: Collections, *, progress: Progress | None = None) -> int:
    """Delete everything of the tenant at `loc`, as it is now, resuming an interrupted clear: what remains plus
    what the deletion marker says was deleted is what the deletion started with. Only for a copy no one uses yet
    (an aborted restore's target); a tenant's data of record is deleted against a verified summary (`delete`)."""
    tree = prepare(loc, tenant, collections)
    client = client_for(loc)
    with api_errors(loc, "reading the deletion marker"):
        snap = client.document(loc.path(f"{MARKER_COLLECTION}/deletion")).get(retry=retry())
    acc = {p: [0, 0] for p in part_names(tree)}
    for part, checksum in document_checksums(loc, tree).values():
        acc[part][0] += 1
        acc[part][1] = (acc[part][1] + int(checksum, 16)) % CHECKSUM_MODULUS
    for part, gone in ((snap.to_dict() or {}).get("deleted", {}) if snap.exists else {}).items():
        acc.setdefault(part, [0, 0])
        acc[part][0] += int(gone["count"])
        acc[part][1] = (acc[part][1] + int(gone["checksum"], 16)) % CHECKSUM_MODULUS
    parts = {p: {"count": n, "checksum": f"{s:064x}"} for p, (n, s) in acc.items()}
    count, checksum = combine(parts)
    return delete(loc, tenant, collections, Summary(KIND, count, checksum, parts), progress=progress)


def discard(loc: FirestoreLocation, tenant: str, collections: Collections, *, batch_size: int = MAX_BATCH) -> int:
    """Remove a scratch copy whole (`scratch_location`), without a verified summary: it is nobody's data of
    record. Refused for any other location. Returns the documents removed."""
    tree = prepare(loc, tenant, collections)
    if not is_scratch(loc, tenant):
        raise StoreError(f"{loc}: refusing to discard documents that are not a scratch copy")
    client = client_for(loc)
    with api_errors(loc, "reading documents"):
        docs = sorted(walk(loc, tree, fields=False), key=lambda d: (-d.depth, d.rel))
    refs = [client.document(loc.path(d.rel)) for d in docs] + [client.document(loc.path(f"{MARKER_COLLECTION}/deletion"))]
    delete_refs(loc, client, refs, batch_size)
    return len(docs)
