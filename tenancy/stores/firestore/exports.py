"""Exports (JSON lines per collection path plus a manifest) and their import into a location, checked against
the manifest.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tenancy.stores import Mismatch, Progress, StoreError, Summary, private_export_dir, private_file, write_manifest
from tenancy.stores.firestore.access import api_errors
from tenancy.stores.firestore.documents import (Doc, doc_checksum, document_checksums, dumps, part_names, part_of,
                                                refuse_unmovable, summarise, unreachable_collections, walk)
from tenancy.stores.firestore.location import (Collections, FirestoreLocation, KIND, MANIFEST, MAX_BATCH, check_batch,
                                               prepare, valid_id)
from tenancy.stores.firestore import writes
from tenancy.stores.firestore.writes import refuse_extras


def export(loc: FirestoreLocation, tenant: str, collections: Collections, directory: str | Path) -> dict[str, Any]:
    """JSON lines, one 0600 file per collection path, in a new private directory (plus manifest.json there).

    Returns the manifest entry {"kind", "count", "checksum", "parts", "files": {name: sha256}}. Refused, before the
    directory is made, while `unmovable()` lists anything: the export would not be the whole tenant."""
    tree = prepare(loc, tenant, collections)
    with api_errors(loc, "listing collections"):
        refuse_unmovable(loc, tenant, "export", unreachable_collections(loc, tree))
    out = private_export_dir(directory)
    names = {part: file_name(part) for part in part_names(tree)}
    hashes = {part: hashlib.sha256() for part in names}
    handles = {part: private_file(out / name) for part, name in names.items()}
    acc: list[tuple[str, str]] = []
    try:
        with api_errors(loc, "reading documents"):
            for doc in walk(loc, tree):
                line = (dumps({"path": doc.rel, "fields": doc.fields}) + "\n").encode()
                handles[doc.part].write(line)
                hashes[doc.part].update(line)
                acc.append((doc.part, doc.checksum))
    finally:
        for f in handles.values():
            f.close()
    s = summarise(acc, tree)
    entry = {"kind": KIND, "count": s.count, "checksum": s.checksum, "parts": s.parts,
             "files": {names[p]: hashes[p].hexdigest() for p in names}}
    write_manifest(out, MANIFEST, entry)
    return entry


def import_export(directory: str | Path, dst: FirestoreLocation, tenant: str, collections: Collections,
                  manifest: dict[str, Any] | None = None, *, progress: Progress | None = None,
                  batch_size: int = MAX_BATCH) -> Summary:
    """Restore an export into `dst`, checked against its manifest (the directory's manifest.json unless a
    manifest entry is given) before anything is written and again after; resumable like `copy`."""
    tree = prepare(dst, tenant, collections)
    check_batch(batch_size, 1)
    folder = Path(directory)
    entry = manifest if manifest is not None else _read_manifest(folder)
    docs = _read_export(folder, entry, tree)
    expected = Summary.from_json(entry)
    found = summarise(((d.part, d.checksum) for d in docs.values()), tree)
    if found != expected:
        raise Mismatch(f"export {folder} does not match its manifest: {'; '.join(expected.differences(found))}")
    target = document_checksums(dst, tree)
    todo = (d for _, d in sorted(docs.items(), key=lambda kv: (kv[1].depth, kv[0]))
            if target.get(d.rel, (None, None))[1] != d.checksum)
    written = writes.write_docs(dst, todo, target, batch_size)
    (progress or (lambda m: None))(f"  imported {written} documents of '{tenant}' from {folder} into {dst}")
    refuse_extras(dst, tenant, f"the export {folder}", sorted(set(target) - set(docs)))
    result = summarise(target.values(), tree)
    if result != expected:
        raise Mismatch(f"{dst} after import does not match the manifest: {'; '.join(expected.differences(result))}")
    return result


# --- exports -------------------------------------------------------------------------------------------------


def file_name(part: str) -> str:
    """`itineraries/*/notes` -> `itineraries.notes.jsonl`; ids are percent-encoded ("." too), so names never clash."""
    return ".".join(quote(s, safe="").replace(".", "%2E") for s in part.split("/*/")) + ".jsonl"


def _read_manifest(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except OSError as exc:
        raise StoreError(f"cannot read {folder / MANIFEST}: {exc.strerror}") from None
    except ValueError as exc:
        raise StoreError(f"{folder / MANIFEST} is not valid JSON: {exc}") from None


def _read_export(folder: Path, entry: dict[str, Any], tree: Collections) -> dict[str, Doc]:
    if entry.get("kind") != KIND or not isinstance(entry.get("files"), dict):
        raise StoreError(f"{folder}: the manifest entry is not a Firestore export (kind {entry.get('kind')!r})")
    parts = {file_name(p): p for p in part_names(tree)}
    if set(entry["files"]) != set(parts):
        raise StoreError(f"{folder}: the export's files {sorted(entry['files'])} do not match the declared "
                         f"collections {sorted(parts)}; import with the collections it was exported with")
    docs: dict[str, Doc] = {}
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
            if len(segments) % 2 or not all(map(valid_id, segments)) or part_of(rel) != parts[name]:
                raise StoreError(f"{folder / name}:{number}: document path {rel!r} does not belong in {parts[name]}")
            if rel in docs:
                raise StoreError(f"{folder / name}:{number}: document {rel} appears twice")
            docs[rel] = Doc(rel, parts[name], rel.count("/") // 2, doc_checksum(rel, fields), fields, None)
    return docs
