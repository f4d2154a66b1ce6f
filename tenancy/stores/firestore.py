"""One tenant's Firestore documents: summarised, copied between layouts, exported, deleted against a summary.

Layouts (a `FirestoreLocation(project, database, root)` names one):

    pooled  the shared database, under the root `tenants/{tenant_id}`:
                tenants/{id}/users/{doc}
                tenants/{id}/itineraries/{doc}/notes/{doc}
                tenants/{id}/settings/{doc}
    own     the tenant's own database (namespace and dedicated tiers), root "": the same collections at the
            database root: users/{doc}, itineraries/{doc}/notes/{doc}, settings/{doc}

Collections are declared, not discovered: a tree such as `DEFAULT_COLLECTIONS` (callers pass the platform
config's tree). Firestore lets a document live under a parent document that does not exist -- a "missing"
document, such as `itineraries/gone` once it was deleted while `itineraries/gone/notes/n1` stayed, or was never
written -- and a query returns only documents that exist. So each declared collection is read with ListDocuments
and show_missing, which returns in one paged call the documents with their fields and, as bare names, the missing
ones; declared subcollections are read under both, and documents under missing parents are summarised, copied,
exported and deleted exactly like the others (the parent stays missing on the other side too). The request is
made through the client's API object: `CollectionReference.list_documents()` sends it with an empty field mask
and returns bare references, losing both the fields and which documents exist. A collection-group query (one per
collection id, bounded to the root by `__name__`) would also reach notes under missing itineraries, but in the
pool a tenant's isolation would then rest on a name range instead of the parent path every other read uses, and
it also returns same-named collections where none is declared.

What the declared tree cannot reach is refused, not skipped: `unmovable()` lists the collections that are not
declared at the tenant's root and under each missing document (one ListCollectionIds call each), and copy,
export and delete refuse before changing anything while it lists any, since they would leave those documents
behind. Not checked: undeclared subcollections of documents that exist (that would be a call per document; the
application writes only declared collections). The store itself never leaves a missing document: copies write
parents before children, deletes remove children first.

Summaries are layout-independent: a part per collection path relative to the root, "*" for document ids
(`itineraries/*/notes`); per document sha256(relative path NUL canonical JSON of its fields); a part's checksum
is the sum of its documents' checksums modulo 2**256, so it is order-independent and a resumed deletion can
account exactly for what an earlier, killed run removed.

Canonical JSON (also the export format) keeps every Firestore type apart from plain JSON with one-key tags:
{"$timestamp": RFC 3339 UTC, microseconds}, {"$bytes": base64}, {"$geo": [lat, lng]},
{"$ref": path relative to the root}, {"$vector": [..]}, {"$double": "nan"|"inf"|"-inf"}; a map key that
starts with "$" gets one more "$". A reference outside the tenant's root is written "/absolute/path"; such a
reference cannot move into a layout whose root would contain it, and copying it there is refused.

Writes are `set`s in atomic commits of at most 500, parents first; a copy skips documents whose checksum is
already equal at the target (re-runs are idempotent, a killed copy resumes). Nothing is ever deleted at a copy
target: documents found only there are reported. A deletion keeps a progress marker document
(`{root}/_tenancy/deletion`, outside the declared collections) updated in the same commit as each batch, so
a re-run after a kill proves that what remains plus what was deleted is still exactly the verified summary.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping
from urllib.parse import quote

from tenancy.stores import (Mismatch, Progress, StoreError, Summary, combine, private_export_dir, private_file,
                            write_manifest)

KIND = "firestore"
DEFAULT_COLLECTIONS: dict[str, dict] = {"users": {}, "itineraries": {"notes": {}}, "settings": {}}
POOL_COLLECTION = "tenants"
MARKER_COLLECTION = "_tenancy"
CHANGES_DOC, CHANGES_COLLECTION = "changes", "written"   # {root}/_tenancy/changes/written/{id}
MAX_BATCH = 500                 # Firestore's limit of writes in one commit
LIST_PAGE = 1000                # documents per ListDocuments page
RETRY_SECONDS = 60.0            # how long transient errors (unavailable, deadline) are retried per call
MANIFEST = "manifest.json"
SHOWN = 10                      # documents named in one error line

_MOD = 2 ** 256
_TAGS = frozenset({"$bytes", "$double", "$geo", "$ref", "$timestamp", "$vector"})
_RESERVED_ID = re.compile(r"^__.*__$")
_DATABASE_ID = re.compile(r"^(\(default\)|[a-z][a-z0-9-]{2,61}[a-z0-9])$")
_TIMESTAMP = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{6})Z$")

Collections = Mapping[str, "Collections"]


@dataclass(frozen=True)
class FirestoreLocation:
    """One place holding one tenant's documents: `root` is `tenants/{id}` in the pool, "" in an own database."""

    project: str
    database: str
    root: str

    def __post_init__(self) -> None:
        if not isinstance(self.project, str) or not self.project or re.search(r"[/\s]", self.project):
            raise StoreError(f"Firestore location needs a project id (got {self.project!r})")
        if not isinstance(self.database, str) or not _DATABASE_ID.match(self.database):
            raise StoreError(f"firestore {self.project}: database id {self.database!r} is not '(default)' or 4-63 "
                             "lowercase letters, digits and hyphens starting with a letter")
        if not isinstance(self.root, str):
            raise StoreError(f"firestore {self.project}/{self.database}: root must be a string, got {self.root!r}")
        segments = self.root.split("/") if self.root else []
        if len(segments) % 2 or any(not _valid_id(s) for s in segments):
            raise StoreError(f"firestore {self.project}/{self.database}: root {self.root!r} is not a document path "
                             f"such as 'tenants/acme' (or '' for a tenant's own database)")

    def __str__(self) -> str:
        return f"firestore {self.project}/{self.database}" + (f" under {self.root}" if self.root else "")

    def path(self, relative: str) -> str:
        return f"{self.root}/{relative}" if self.root else relative


def location_for(project: str, database: str, tenant_id: str, pooled: bool) -> FirestoreLocation:
    _check_id(tenant_id, "tenant id")
    return FirestoreLocation(project, database, f"{POOL_COLLECTION}/{tenant_id}" if pooled else "")


def scratch_location(loc: FirestoreLocation, tenant_id: str, label: str) -> FirestoreLocation:
    """A scratch place for a copy of the tenant's documents in the same database, outside every tenant's tree:
    `_tenancy/<label>/tenants/<tenant_id>` (an offboarding restores its archive there to prove it, then discards
    it). Summaries there equal the tenant's own when they hold the same documents."""
    _check_id(tenant_id, "tenant id")
    _check_id(label, "scratch label")
    return FirestoreLocation(loc.project, loc.database, f"{MARKER_COLLECTION}/{label}/{POOL_COLLECTION}/{tenant_id}")


def _is_scratch(loc: FirestoreLocation, tenant_id: str) -> bool:
    segments = loc.root.split("/")
    return len(segments) == 4 and segments[0] == MARKER_COLLECTION and segments[2:] == [POOL_COLLECTION, tenant_id]


# --- public operations ---------------------------------------------------------------------------------------


def summary(loc: FirestoreLocation, tenant: str, collections: Collections) -> Summary:
    """Counts and checksums of the tenant's documents per collection path, the same in either layout."""
    tree = _prepare(loc, tenant, collections)
    with _api(loc, "reading documents"):
        return _summarise(((d.part, d.checksum) for d in _walk(loc, tree)), tree)


def unmovable(loc: FirestoreLocation, tenant: str, collections: Collections) -> list[str]:
    """What a move, export or deletion of the tenant at `loc` would leave behind, one line per collection; empty
    when nothing. These are collections the declared tree does not name, at the tenant's root or beneath a missing
    document. copy, export and delete refuse while this lists anything; an operation's preflight calls it to
    refuse before its first step."""
    tree = _prepare(loc, tenant, collections)
    with _api(loc, "listing collections"):
        return _unmovable(loc, tree)


def copy(src: FirestoreLocation, dst: FirestoreLocation, tenant: str, collections: Collections,
         progress: Progress | None = None, changed_since: datetime | None = None, *,
         batch_size: int = MAX_BATCH) -> Summary:
    """Copy every document of the tenant from `src` to `dst`; returns the target's summary.

    Documents already equal at the target are not written again. With `changed_since` (timezone-aware) only
    documents whose update time is newer are candidates: the short second pass inside a write freeze. Documents
    found only at the target raise Mismatch after everything else is copied; they are never deleted here. While
    `unmovable()` lists anything at `src`, nothing is written and StoreError says what."""
    tree = _prepare(src, tenant, collections)
    _prepare(dst, tenant, collections)
    _check_batch(batch_size, 1)
    if src == dst:
        raise StoreError(f"{src}: source and target of the copy are the same location")
    if changed_since is not None and changed_since.tzinfo is None:
        raise StoreError("changed_since must be timezone-aware (Firestore update times are UTC); "
                         "pass e.g. datetime.now(timezone.utc)")
    say = progress or (lambda m: None)
    with _api(src, "listing collections"):
        _refuse_unmovable(src, tenant, "copy", _unmovable(src, tree))
    target = _checksums(dst, tree)
    seen: set[str] = set()
    stats = {"older": 0}

    def wanted() -> Iterator[_Doc]:
        for doc in _walk(src, tree):
            seen.add(doc.rel)
            if changed_since is not None and doc.update_time is not None and doc.update_time <= changed_since:
                stats["older"] += 1
            elif target.get(doc.rel, (None, None))[1] != doc.checksum:
                yield doc

    with _api(src, "reading documents"):
        written = _write(dst, wanted(), target, batch_size)
    older = f", {stats['older']} not newer than {changed_since.isoformat()}" if changed_since else ""
    say(f"  copied {written} documents of '{tenant}' from {src} to {dst} "
        f"({len(seen) - written - stats['older']} already there{older})")
    _refuse_extras(dst, tenant, src, sorted(set(target) - seen))
    return _summarise(target.values(), tree)


def verify(src: FirestoreLocation, dst: FirestoreLocation, tenant: str,
           collections: Collections) -> tuple[Summary, Summary]:
    """Both locations' summaries; Mismatch naming the differing parts and documents when they differ."""
    tree = _prepare(src, tenant, collections)
    _prepare(dst, tenant, collections)
    a, b = _checksums(src, tree), _checksums(dst, tree)
    sa, sb = _summarise(a.values(), tree), _summarise(b.values(), tree)
    if sa != sb:
        docs = sorted(r for r in set(a) | set(b) if a.get(r) != b.get(r))
        raise Mismatch(f"tenant '{tenant}': {src} and {dst} differ: {'; '.join(sa.differences(sb))} "
                       f"(documents: {_names(docs)})")
    return sa, sb


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
    client = _client(loc)
    batch = client.batch()
    for rel in rels:
        _check_rel(rel)
        batch.set(_change_ref(client, loc, rel), {"rel": rel})
    _commit(loc, batch)


def changes(loc: FirestoreLocation) -> list[str]:
    """The documents recorded by `record_changes` at `loc` (one listing, however many documents the tenant has)."""
    client = _client(loc)
    with _api(loc, "reading the change list"):
        return sorted({d.to_dict().get("rel") for d in client.collection(
            loc.path(f"{MARKER_COLLECTION}/{CHANGES_DOC}/{CHANGES_COLLECTION}")).stream(retry=_retry())} - {None})


def clear_changes(loc: FirestoreLocation) -> int:
    """Remove the change list (once the move is over, or aborted)."""
    client = _client(loc)
    with _api(loc, "removing the change list"):
        refs = list(client.collection(loc.path(f"{MARKER_COLLECTION}/{CHANGES_DOC}/{CHANGES_COLLECTION}")
                                      ).list_documents(retry=_retry()))
    _delete_refs(loc, client, refs)
    return len(refs)


def _check_rel(rel: str) -> None:
    segments = rel.split("/") if isinstance(rel, str) else []
    if not segments or len(segments) % 2 or any(not _valid_id(x) for x in segments):
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
        return _summarise(self.source.values(), self.tree)


def sync_pass(src: FirestoreLocation, dst: FirestoreLocation, tenant: str, collections: Collections,
              progress: Progress | None = None, *, batch_size: int = MAX_BATCH) -> Pass:
    """Every document of the tenant from `src` to `dst` that is missing or different there, and every document
    found only at `dst` removed (`dst` is a move's own copy, which nothing else writes). While the tenant
    writes, so nothing is verified here: the documents written since are the delta's."""
    tree = _prepare(src, tenant, collections)
    _prepare(dst, tenant, collections)
    if src == dst:
        raise StoreError(f"{src}: source and target of the copy are the same location")
    with _api(src, "listing collections"):
        _refuse_unmovable(src, tenant, "copy", _unmovable(src, tree))
    target = _checksums(dst, tree)
    source: dict[str, tuple[str, str]] = {}
    written: list[str] = []

    def wanted() -> Iterator[_Doc]:
        for doc in _walk(src, tree):
            source[doc.rel] = (doc.part, doc.checksum)
            if target.get(doc.rel, (None, None))[1] != doc.checksum:
                written.append(doc.rel)
                yield doc

    with _api(src, "reading documents"):
        _write(dst, wanted(), target, batch_size)
    removed = sorted(set(target) - set(source), key=lambda r: (-r.count("/"), r))
    _remove(dst, removed)
    (progress or (lambda m: None))(f"  {len(written)} documents of '{tenant}' written to {dst}, {len(removed)} removed "
                                   f"there ({len(source)} at the source)")
    return Pass(source, written, removed, tree)


def _remove(loc: FirestoreLocation, rels: list[str]) -> None:
    client = _client(loc)
    _delete_refs(loc, client, [client.document(loc.path(rel)) for rel in rels])


def _delete_refs(loc: FirestoreLocation, client, refs: list, batch_size: int = MAX_BATCH) -> None:
    """Unconditional deletes, `batch_size` to a commit."""
    for start in range(0, len(refs), batch_size):
        batch = client.batch()
        for ref in refs[start:start + batch_size]:
            batch.delete(ref)
        _commit(loc, batch)


def _get(loc: FirestoreLocation, rels: list[str]) -> dict[str, _Doc]:
    """The documents at these paths that exist, read in batches (BatchGetDocuments)."""
    from google.cloud.firestore_v1 import _helpers

    client = _client(loc)
    out: dict[str, _Doc] = {}
    with _api(loc, "reading documents"):
        for start in range(0, len(rels), LIST_PAGE):
            refs = [client.document(loc.path(r)) for r in rels[start:start + LIST_PAGE]]
            for snap in client.get_all(refs, retry=_retry()):
                if not snap.exists:
                    continue
                rel = snap.reference.path[len(loc.root) + 1:] if loc.root else snap.reference.path
                data = _canon_fields(snap.to_dict() or {}, loc.root)
                out[rel] = _Doc(rel, _part_of(rel), rel.count("/") // 2, _doc_checksum(rel, data), data,
                                snap.update_time)
    return out


def apply_delta(src: FirestoreLocation, dst: FirestoreLocation, tenant: str, collections: Collections,
                rels: list[str], before: Pass, progress: Progress | None = None) -> Pass:
    """Inside the write freeze: the documents at `rels` made at `dst` what they are at `src` (written, or removed
    where the source has none), then read back and compared. Returns `before` brought up to date: its `source`
    is then every source document, each verified equal at the target (by `before`'s pass or here)."""
    tree = _prepare(src, tenant, collections)
    _prepare(dst, tenant, collections)
    declared = set(_part_names(tree))
    rels = sorted({r for r in rels if _part_of(r) in declared}, key=lambda r: (r.count("/"), r))
    have = _get(src, rels)
    target = {r: (d.part, d.checksum) for r, d in _get(dst, rels).items()}
    _write(dst, (have[r] for r in rels if r in have and target.get(r, (None, None))[1] != have[r].checksum), target,
           MAX_BATCH)
    gone = sorted((r for r in rels if r not in have and r in target), key=lambda r: (-r.count("/"), r))
    _remove(dst, gone)
    back = _get(dst, rels)
    bad = [r for r in rels if (r in have) != (r in back) or (r in have and have[r].checksum != back[r].checksum)]
    if bad:
        raise Mismatch(f"tenant '{tenant}': {len(bad)} documents differ at {dst} after the last pass: {_names(bad)}")
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
    tree = _prepare(src, tenant, collections)
    with _api(src, "reading documents"):
        source = {d.rel: d for d in _walk(src, tree)}
        target = {d.rel: d for d in _walk(dst, tree)}
    client = _client(dst)
    repaired, left = [], []
    for rel in sorted(source, key=lambda r: (r.count("/"), r)):
        s, t = source[rel], target.get(rel)
        if t is not None and t.checksum == s.checksum:
            continue
        if t is None or t.update_time is None or t.update_time > switched_at:
            left.append(rel)
            continue
        batch = client.batch()
        batch.set(client.document(dst.path(rel)), _uncanon_fields(s.fields, client, dst, rel))
        _commit(dst, batch)
        repaired.append(rel)
    if repaired or left:
        (progress or (lambda m: None))(f"  {dst}: {len(repaired)} documents written again from the read-only source"
                                       + (f"; left as they are: {_names(left)}" if left else ""))
    return repaired, left


def export(loc: FirestoreLocation, tenant: str, collections: Collections, directory: str | Path) -> dict[str, Any]:
    """JSON lines, one 0600 file per collection path, in a new private directory (plus manifest.json there).

    Returns the manifest entry {"kind", "count", "checksum", "parts", "files": {name: sha256}}. Refused, before the
    directory is made, while `unmovable()` lists anything: the export would not be the whole tenant."""
    tree = _prepare(loc, tenant, collections)
    with _api(loc, "listing collections"):
        _refuse_unmovable(loc, tenant, "export", _unmovable(loc, tree))
    out = private_export_dir(directory)
    names = {part: _file_name(part) for part in _part_names(tree)}
    hashes = {part: hashlib.sha256() for part in names}
    handles = {part: private_file(out / name) for part, name in names.items()}
    acc: list[tuple[str, str]] = []
    try:
        with _api(loc, "reading documents"):
            for doc in _walk(loc, tree):
                line = (_dumps({"path": doc.rel, "fields": doc.fields}) + "\n").encode()
                handles[doc.part].write(line)
                hashes[doc.part].update(line)
                acc.append((doc.part, doc.checksum))
    finally:
        for f in handles.values():
            f.close()
    s = _summarise(acc, tree)
    entry = {"kind": KIND, "count": s.count, "checksum": s.checksum, "parts": s.parts,
             "files": {names[p]: hashes[p].hexdigest() for p in names}}
    write_manifest(out, MANIFEST, entry)
    return entry


def import_export(directory: str | Path, dst: FirestoreLocation, tenant: str, collections: Collections,
                  manifest: dict[str, Any] | None = None, *, progress: Progress | None = None,
                  batch_size: int = MAX_BATCH) -> Summary:
    """Restore an export into `dst`, checked against its manifest (the directory's manifest.json unless a
    manifest entry is given) before anything is written and again after; resumable like `copy`."""
    tree = _prepare(dst, tenant, collections)
    _check_batch(batch_size, 1)
    folder = Path(directory)
    entry = manifest if manifest is not None else _read_manifest(folder)
    docs = _read_export(folder, entry, tree)
    expected = Summary.from_json(entry)
    found = _summarise(((d.part, d.checksum) for d in docs.values()), tree)
    if found != expected:
        raise Mismatch(f"export {folder} does not match its manifest: {'; '.join(expected.differences(found))}")
    target = _checksums(dst, tree)
    todo = (d for _, d in sorted(docs.items(), key=lambda kv: (kv[1].depth, kv[0]))
            if target.get(d.rel, (None, None))[1] != d.checksum)
    written = _write(dst, todo, target, batch_size)
    (progress or (lambda m: None))(f"  imported {written} documents of '{tenant}' from {folder} into {dst}")
    _refuse_extras(dst, tenant, f"the export {folder}", sorted(set(target) - set(docs)))
    result = _summarise(target.values(), tree)
    if result != expected:
        raise Mismatch(f"{dst} after import does not match the manifest: {'; '.join(expected.differences(result))}")
    return result


def delete(loc: FirestoreLocation, tenant: str, collections: Collections, expect: Summary, *,
           progress: Progress | None = None, batch_size: int = MAX_BATCH) -> int:
    """Delete the tenant's documents at `loc`, children first, only while they are exactly `expect`.

    Returns how many documents this call deleted (0 when a previous run already finished). Refused, before any
    deletion, while collections outside the declared tree hold documents (`unmovable()`): they would stay behind."""
    tree = _prepare(loc, tenant, collections)
    _check_batch(batch_size, 2)
    if expect.kind != KIND:
        raise StoreError(f"{loc}: cannot delete against a {expect.kind!r} summary; pass the Firestore summary")
    say = progress or (lambda m: None)
    client = _client(loc)
    marker_ref = client.document(loc.path(f"{MARKER_COLLECTION}/deletion"))
    with _api(loc, "reading the deletion marker"):
        snap = marker_ref.get(retry=_retry())
    marker = snap.to_dict() if snap.exists else None
    if marker is not None and marker.get("expect") != expect.checksum:
        raise Mismatch(f"{loc}: an unfinished deletion of tenant '{tenant}' was started against another summary "
                       f"({str(marker.get('expect'))[:12]}, not {expect.checksum[:12]}); finish or inspect it first")
    with _api(loc, "reading documents"):
        problems = _undeclared(loc, "", tree)
        docs = sorted(_walk(loc, tree, problems), key=lambda d: (-d.depth, d.rel))
    _refuse_unmovable(loc, tenant, "delete", problems)
    if marker is None and not docs:
        say(f"  nothing to delete for '{tenant}' at {loc}")
        return 0
    deleted = {p: (int(v["count"]), int(v["checksum"], 16)) for p, v in (marker or {}).get("deleted", {}).items()}
    _check_against(loc, tenant, tree, expect, docs, deleted)
    done = 0
    for start in range(0, len(docs), batch_size - 1):
        batch = client.batch()
        for doc in docs[start:start + batch_size - 1]:
            # on Firestore a document changed since it was read fails the whole commit (FAILED_PRECONDITION)
            unchanged = client.write_option(last_update_time=doc.update_time)
            batch.delete(client.document(loc.path(doc.rel)), option=unchanged)
            n, s = deleted.get(doc.part, (0, 0))
            deleted[doc.part] = (n + 1, (s + int(doc.checksum, 16)) % _MOD)
        batch.set(marker_ref, {"expect": expect.checksum,
                               "deleted": {p: {"count": n, "checksum": f"{s:064x}"} for p, (n, s) in deleted.items()}})
        _commit(loc, batch)
        done += min(batch_size - 1, len(docs) - start)
    with _api(loc, "reading documents"):
        left = sorted(d.rel for d in _walk(loc, tree))
    if left:
        raise Mismatch(f"{loc}: {len(left)} documents of tenant '{tenant}' were written during the deletion and "
                       f"were kept: {_names(left)}")
    batch = client.batch()
    batch.delete(marker_ref)
    _commit(loc, batch)
    say(f"  deleted {done} documents of '{tenant}' at {loc}")
    return done


def clear(loc: FirestoreLocation, tenant: str, collections: Collections, *, progress: Progress | None = None) -> int:
    """Delete everything of the tenant at `loc`, as it is now, resuming an interrupted clear: what remains plus
    what the deletion marker says was deleted is what the deletion started with. Only for a copy no one uses yet
    (an aborted restore's target); a tenant's data of record is deleted against a verified summary (`delete`)."""
    tree = _prepare(loc, tenant, collections)
    client = _client(loc)
    with _api(loc, "reading the deletion marker"):
        snap = client.document(loc.path(f"{MARKER_COLLECTION}/deletion")).get(retry=_retry())
    acc = {p: [0, 0] for p in _part_names(tree)}
    for part, checksum in _checksums(loc, tree).values():
        acc[part][0] += 1
        acc[part][1] = (acc[part][1] + int(checksum, 16)) % _MOD
    for part, gone in ((snap.to_dict() or {}).get("deleted", {}) if snap.exists else {}).items():
        acc.setdefault(part, [0, 0])
        acc[part][0] += int(gone["count"])
        acc[part][1] = (acc[part][1] + int(gone["checksum"], 16)) % _MOD
    parts = {p: {"count": n, "checksum": f"{s:064x}"} for p, (n, s) in acc.items()}
    count, checksum = combine(parts)
    return delete(loc, tenant, collections, Summary(KIND, count, checksum, parts), progress=progress)


def discard(loc: FirestoreLocation, tenant: str, collections: Collections, *, batch_size: int = MAX_BATCH) -> int:
    """Remove a scratch copy whole (`scratch_location`), without a verified summary: it is nobody's data of
    record. Refused for any other location. Returns the documents removed."""
    tree = _prepare(loc, tenant, collections)
    if not _is_scratch(loc, tenant):
        raise StoreError(f"{loc}: refusing to discard documents that are not a scratch copy")
    client = _client(loc)
    with _api(loc, "reading documents"):
        docs = sorted(_walk(loc, tree, fields=False), key=lambda d: (-d.depth, d.rel))
    refs = [client.document(loc.path(d.rel)) for d in docs] + [client.document(loc.path(f"{MARKER_COLLECTION}/deletion"))]
    _delete_refs(loc, client, refs, batch_size)
    return len(docs)


# --- reading -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Doc:
    rel: str                    # path relative to the location's root
    part: str                   # collection path with "*" for document ids
    depth: int                  # 0 for top-level collections
    checksum: str
    fields: dict[str, Any]      # canonical JSON
    update_time: datetime | None


def _walk(loc: FirestoreLocation, tree: Collections, problems: list[str] | None = None, *,
          fields: bool = True) -> Iterator[_Doc]:
    """Every document under the declared tree, each parent before its subcollections' documents.

    Declared subcollections are read under missing parents as under existing ones. With `problems`, the
    undeclared collections beneath each missing document are appended to it. Without `fields` (a pass that only
    needs the paths) documents come without fields and with an empty checksum."""
    client = _client(loc)
    documents = f"projects/{loc.project}/databases/{loc.database}/documents"
    yield from _walk_under(loc, client, f"{documents}/{loc.root}" if loc.root else documents, tree, "", "", 0,
                           problems, fields)


def _walk_under(loc, client, parent: str, tree: Collections, rel_prefix: str, part_prefix: str, depth: int,
                problems: list[str] | None, fields: bool) -> Iterator[_Doc]:
    from google.cloud.firestore_v1 import _helpers

    for name in sorted(tree):
        part, parents = part_prefix + name, []
        for item in _list(client, parent, name, fields):
            doc_id = item.name.rsplit("/", 1)[1]
            rel = f"{rel_prefix}{name}/{doc_id}"
            if item._pb.HasField("create_time"):
                data = _canon_fields(_helpers.decode_dict(item.fields, client), loc.root) if fields else {}
                yield _Doc(rel, part, depth, _doc_checksum(rel, data) if fields else "", data, item.update_time)
            elif problems is not None:
                problems.extend(_undeclared(loc, rel, tree[name]))
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
    return client._firestore_api.list_documents(request=request, metadata=client._rpc_metadata, retry=_retry())


def _undeclared(loc: FirestoreLocation, rel: str, declared: Collections) -> list[str]:
    """Collections holding documents under `rel` ("" for the root) that `declared` does not name, as problem
    lines; the deletion marker's collection at the root is the store's own."""
    client = _client(loc)
    at = client.document(loc.path(rel)) if rel else client.document(loc.root) if loc.root else client
    found = sorted(c.id for c in at.collections(retry=_retry()))
    if rel:
        return [f"{rel}/{c} (not declared, under the missing document {rel})" for c in found if c not in declared]
    return [f"{c} (not declared, at the tenant's root)" for c in found if c not in declared and c != MARKER_COLLECTION]


def _unmovable(loc: FirestoreLocation, tree: Collections) -> list[str]:
    problems = _undeclared(loc, "", tree)
    for _ in _walk(loc, tree, problems, fields=False):
        pass
    return problems


def _refuse_unmovable(loc: FirestoreLocation, tenant: str, doing: str, problems: list[str]) -> None:
    if problems:
        raise StoreError(f"{loc}: refusing to {doing} tenant '{tenant}': {len(problems)} collections hold documents "
                         f"outside the declared collections, which would be left behind: {_names(problems)}; declare "
                         "them (stores.yaml, firestore) or move those documents into declared collections, then run "
                         "again; nothing was changed")


def _checksums(loc: FirestoreLocation, tree: Collections) -> dict[str, tuple[str, str]]:
    """relative path -> (part, checksum) of every document at the location."""
    with _api(loc, "reading documents"):
        return {d.rel: (d.part, d.checksum) for d in _walk(loc, tree)}


def _summarise(items, tree: Collections) -> Summary:
    """Summary from (part, document checksum) pairs; every declared part appears, empty ones with count 0."""
    acc = {p: [0, 0] for p in _part_names(tree)}
    for part, checksum in items:
        acc[part][0] += 1
        acc[part][1] = (acc[part][1] + int(checksum, 16)) % _MOD
    parts = {p: {"count": n, "checksum": f"{s:064x}"} for p, (n, s) in acc.items()}
    count, checksum = combine(parts)
    return Summary(KIND, count, checksum, parts)


def _part_names(tree: Collections, prefix: str = "") -> list[str]:
    out = []
    for name in sorted(tree):
        out.append(prefix + name)
        out.extend(_part_names(tree[name], f"{prefix}{name}/*/"))
    return out


def _part_of(rel: str) -> str:
    segments = rel.split("/")
    return "/*/".join(segments[0::2])


def _doc_checksum(rel: str, fields: dict[str, Any]) -> str:
    return hashlib.sha256(f"{rel}\0{_dumps(fields)}".encode()).hexdigest()


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# --- writing -------------------------------------------------------------------------------------------------


def _commit(loc: FirestoreLocation, batch) -> None:
    """Every write goes through here: one atomic commit of at most MAX_BATCH writes (tests wrap it to kill)."""
    with _api(loc, "writing documents"):
        batch.commit(retry=_retry())


def _write(dst: FirestoreLocation, docs, target: dict[str, tuple[str, str]], batch_size: int) -> int:
    """Set each document at `dst` (callers give parents before children); updates `target` as commits land."""
    client = _client(dst)
    batch, pending, written = client.batch(), [], 0
    for doc in docs:
        batch.set(client.document(dst.path(doc.rel)), _uncanon_fields(doc.fields, client, dst, doc.rel))
        pending.append(doc)
        if len(pending) == batch_size:
            _commit(dst, batch)
            target.update((d.rel, (d.part, d.checksum)) for d in pending)
            written += len(pending)
            batch, pending = client.batch(), []
    if pending:
        _commit(dst, batch)
        target.update((d.rel, (d.part, d.checksum)) for d in pending)
        written += len(pending)
    return written


def _refuse_extras(dst: FirestoreLocation, tenant: str, origin: Any, extras: list[str]) -> None:
    if extras:
        raise Mismatch(f"{dst} holds {len(extras)} documents of tenant '{tenant}' that {origin} does not: "
                       f"{_names(extras)}; they were left in place (nothing is deleted by a copy): remove them or "
                       f"find out where they came from, then copy again")


def _check_against(loc, tenant: str, tree: Collections, expect: Summary, docs: list[_Doc],
                   deleted: dict[str, tuple[int, int]]) -> None:
    """What is left plus what earlier runs deleted must be exactly the verified summary, part by part."""
    now = {p: [0, 0] for p in _part_names(tree)}
    for d in docs:
        now[d.part][0] += 1
        now[d.part][1] = (now[d.part][1] + int(d.checksum, 16)) % _MOD
    problems = []
    for part in sorted(set(now) | set(expect.parts) | set(deleted)):
        want = expect.parts.get(part, {"count": 0, "checksum": "0" * 64})
        have, gone = now.get(part, [0, 0]), deleted.get(part, (0, 0))
        if have[0] + gone[0] != int(want["count"]):
            extra = f" (+{gone[0]} already deleted)" if gone[0] else ""
            problems.append(f"{part}: verified {want['count']}, now {have[0]}{extra} documents")
        elif (have[1] + gone[1]) % _MOD != int(want["checksum"], 16):
            problems.append(f"{part}: same count ({want['count']}), different checksum")
    if problems:
        raise Mismatch(f"{loc}: refusing to delete tenant '{tenant}': it no longer matches the verified summary "
                       f"({'; '.join(problems)}); a write arrived after verification: copy and verify again")


# --- canonical values ----------------------------------------------------------------------------------------


def _canon_fields(fields: dict[str, Any], root: str) -> dict[str, Any]:
    return {_escape(k): _canon(v, root) for k, v in fields.items()}


def _canon(value: Any, root: str) -> Any:
    from google.cloud.firestore_v1 import DocumentReference, GeoPoint
    from google.cloud.firestore_v1.vector import Vector

    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$double": repr(value)}
    if isinstance(value, datetime):
        return {"$timestamp": _rfc3339(value)}
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode()}
    if isinstance(value, GeoPoint):
        return {"$geo": [value.latitude, value.longitude]}
    if isinstance(value, Vector):
        return {"$vector": [float(x) for x in value]}
    if isinstance(value, DocumentReference):
        inside = not root or value.path.startswith(root + "/")
        return {"$ref": (value.path[len(root) + 1:] if root else value.path) if inside else "/" + value.path}
    if isinstance(value, list):
        return [_canon(v, root) for v in value]
    if isinstance(value, dict):
        return _canon_fields(value, root)
    raise StoreError(f"unsupported Firestore value of type {type(value).__name__}")


def _uncanon_fields(fields: dict[str, Any], client, dst: FirestoreLocation, rel: str) -> dict[str, Any]:
    return {_unescape(k): _uncanon(v, client, dst, rel) for k, v in fields.items()}


def _uncanon(value: Any, client, dst: FirestoreLocation, rel: str) -> Any:
    if isinstance(value, list):
        return [_uncanon(v, client, dst, rel) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) != 1 or next(iter(value)) not in _TAGS:
        return _uncanon_fields(value, client, dst, rel)
    (tag, body), = value.items()
    from google.cloud.firestore_v1 import GeoPoint
    from google.cloud.firestore_v1.vector import Vector

    if tag == "$double":
        return float(body)
    if tag == "$timestamp":
        return _parse_rfc3339(body, rel)
    if tag == "$bytes":
        return base64.b64decode(body)
    if tag == "$geo":
        return GeoPoint(body[0], body[1])
    if tag == "$vector":
        return Vector(body)
    if body.startswith("/"):
        target = body[1:]
        if not dst.root or target.startswith(dst.root + "/"):
            raise StoreError(f"document {rel}: a reference to {target} points outside the tenant's documents and "
                             f"cannot be kept in {dst} (its root would contain it); rewrite or remove the reference "
                             f"before moving the tenant")
        return client.document(target)
    return client.document(dst.path(body))


def _escape(key: str) -> str:
    return "$" + key if key.startswith("$") else key


def _unescape(key: str) -> str:
    return key[1:] if key.startswith("$") else key


def _rfc3339(value: datetime) -> str:
    """Microseconds: Firestore stores no finer (and the client's snapshots drop nanoseconds anyway)."""
    d = value.astimezone(timezone.utc) if value.tzinfo else value
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}:{d.second:02d}.{d.microsecond:06d}Z"


def _parse_rfc3339(text: str, rel: str):
    from google.api_core.datetime_helpers import DatetimeWithNanoseconds

    m = _TIMESTAMP.match(text)
    if not m:
        raise StoreError(f"document {rel}: timestamp {text!r} is not RFC 3339 UTC with 6 fraction digits")
    y, mo, d, h, mi, s, us = (int(g) for g in m.groups())
    return DatetimeWithNanoseconds(y, mo, d, h, mi, s, us, tzinfo=timezone.utc)


# --- exports -------------------------------------------------------------------------------------------------


def _file_name(part: str) -> str:
    """`itineraries/*/notes` -> `itineraries.notes.jsonl`; ids are percent-encoded ("." too), so names never clash."""
    return ".".join(quote(s, safe="").replace(".", "%2E") for s in part.split("/*/")) + ".jsonl"


def _read_manifest(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except OSError as exc:
        raise StoreError(f"cannot read {folder / MANIFEST}: {exc.strerror}") from None
    except ValueError as exc:
        raise StoreError(f"{folder / MANIFEST} is not valid JSON: {exc}") from None


def _read_export(folder: Path, entry: dict[str, Any], tree: Collections) -> dict[str, _Doc]:
    if entry.get("kind") != KIND or not isinstance(entry.get("files"), dict):
        raise StoreError(f"{folder}: the manifest entry is not a Firestore export (kind {entry.get('kind')!r})")
    parts = {_file_name(p): p for p in _part_names(tree)}
    if set(entry["files"]) != set(parts):
        raise StoreError(f"{folder}: the export's files {sorted(entry['files'])} do not match the declared "
                         f"collections {sorted(parts)}; import with the collections it was exported with")
    docs: dict[str, _Doc] = {}
    for name, sha in sorted(entry["files"].items()):
        try:
            data = (folder / name).read_bytes()
        except OSError as exc:
            raise StoreError(f"cannot read {folder / name}: {exc.strerror}") from None
        if hashlib.sha256(data).hexdigest() != sha:
            raise Mismatch(f"{folder / name}: SHA-256 differs from the manifest; the export was changed or truncated")
        for number, line in enumerate(data.decode().splitlines(), 1):
            try:
                item = json.loads(line)
                rel, fields = item["path"], item["fields"]
            except (ValueError, KeyError, TypeError):
                raise StoreError(f"{folder / name}:{number}: not a line of the form "
                                 '{"path": ..., "fields": {...}}') from None
            segments = rel.split("/") if isinstance(rel, str) else []
            if len(segments) % 2 or not all(map(_valid_id, segments)) or _part_of(rel) != parts[name]:
                raise StoreError(f"{folder / name}:{number}: document path {rel!r} does not belong in {parts[name]}")
            if rel in docs:
                raise StoreError(f"{folder / name}:{number}: document {rel} appears twice")
            docs[rel] = _Doc(rel, parts[name], rel.count("/") // 2, _doc_checksum(rel, fields), fields, None)
    return docs


# --- clients, errors and checks ------------------------------------------------------------------------------

_clients: dict[tuple[str, str, str | None], Any] = {}


def _client(loc: FirestoreLocation):
    """One client per project, database and emulator host (FIRESTORE_EMULATOR_HOST selects a local server)."""
    key = (loc.project, loc.database, os.environ.get("FIRESTORE_EMULATOR_HOST"))
    if key not in _clients:
        try:
            from google.auth.exceptions import GoogleAuthError
            from google.cloud import firestore
        except ImportError:
            raise StoreError("Firestore stores need the google-cloud-firestore package (pinned in "
                             "requirements.txt; run `make venv`)") from None
        try:
            _clients[key] = firestore.Client(project=loc.project, database=loc.database)
        except GoogleAuthError as exc:
            raise StoreError(f"{loc}: no Google credentials ({_one_line(exc)}); run `gcloud auth "
                             "application-default login`, or set FIRESTORE_EMULATOR_HOST=host:port for a local "
                             "Firestore API server") from None
    return _clients[key]


def _retry():
    from google.api_core import exceptions as gexc
    from google.api_core.retry import Retry, if_exception_type

    transient = if_exception_type(gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.InternalServerError,
                                  gexc.ResourceExhausted)
    return Retry(predicate=transient, initial=0.2, maximum=5.0, multiplier=2.0, timeout=RETRY_SECONDS)


@contextmanager
def _api(loc: FirestoreLocation, doing: str):
    """Firestore and auth errors become one StoreError line naming the project and database."""
    from google.api_core import exceptions as gexc
    from google.auth.exceptions import GoogleAuthError

    try:
        yield
    except gexc.FailedPrecondition as exc:
        raise Mismatch(f"{loc}: {doing}: a document changed after it was read ({_one_line(exc)}); that commit was "
                       "not applied; run again to re-check") from None
    except (gexc.PermissionDenied, gexc.Unauthenticated) as exc:
        raise StoreError(f"{loc}: permission denied while {doing} ({_one_line(exc)}); the caller needs "
                         f"roles/datastore.user (or owner for deletes) on project {loc.project}") from None
    except gexc.NotFound as exc:
        raise StoreError(f"{loc}: not found while {doing} ({_one_line(exc)}); does database "
                         f"{loc.database!r} exist in project {loc.project}?") from None
    except gexc.RetryError as exc:
        raise StoreError(f"{loc}: cannot reach Firestore while {doing} (gave up after {RETRY_SECONDS:.0f}s: "
                         f"{_one_line(exc.cause or exc)})") from None
    except (gexc.GoogleAPIError, GoogleAuthError) as exc:
        raise StoreError(f"{loc}: {doing} failed: {type(exc).__name__}: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())[:300]


def _names(paths: list[str]) -> str:
    more = f" and {len(paths) - SHOWN} more" if len(paths) > SHOWN else ""
    return ", ".join(paths[:SHOWN]) + more


def _valid_id(name: Any) -> bool:
    return (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name
            and not _RESERVED_ID.match(name) and len(name.encode()) <= 1500)


def _check_id(name: Any, what: str) -> None:
    if not _valid_id(name):
        raise StoreError(f"{what} {name!r} is not a valid Firestore id (non-empty, no '/', not '.', '..' or __x__)")


def _check_tree(tree: Any, where: str = "collections") -> dict[str, dict]:
    if not isinstance(tree, Mapping) or (where == "collections" and not tree):
        raise StoreError(f"{where} must be a non-empty tree of collection names, e.g. {DEFAULT_COLLECTIONS}")
    out = {}
    for name, sub in tree.items():
        _check_id(name, f"{where}: collection")
        if name == MARKER_COLLECTION:
            raise StoreError(f"{where}: collection {name!r} is reserved for deletion progress; rename it")
        out[name] = _check_tree(sub if sub is not None else {}, f"{where}.{name}")
    return out


def _prepare(loc: FirestoreLocation, tenant: str, collections: Any) -> dict[str, dict]:
    """Checks shared by every operation: a valid tree, and a pooled root that belongs to this tenant."""
    if not isinstance(loc, FirestoreLocation):
        raise StoreError(f"expected a FirestoreLocation, got {type(loc).__name__}")
    _check_id(tenant, "tenant id")
    if loc.root and loc.root != f"{POOL_COLLECTION}/{tenant}" and not _is_scratch(loc, tenant):
        raise StoreError(f"{loc} is not tenant '{tenant}''s place in the pool ({POOL_COLLECTION}/{tenant}); "
                         "refusing to touch another tenant's documents")
    return _check_tree(collections)


def _check_batch(batch_size: int, least: int) -> None:
    if not isinstance(batch_size, int) or not least <= batch_size <= MAX_BATCH:
        raise StoreError(f"batch_size must be between {least} and {MAX_BATCH} (Firestore's limit per commit), "
                         f"got {batch_size!r}")
