"""Writing documents: every write goes through `commit` (one atomic batch); `write_docs` sets documents parents
first, `delete_refs` deletes in batches. Other modules call `commit` and `write_docs` through this module, so a
test that wraps them sees every write.
"""

from __future__ import annotations

from typing import Any

from tenancy.stores import Mismatch, Summary
from tenancy.stores.firestore.access import api_errors, client_for, retry, shown
from tenancy.stores.firestore.documents import Doc, part_names
from tenancy.stores.firestore.location import CHECKSUM_MODULUS, Collections, FirestoreLocation, MAX_BATCH
from tenancy.stores.firestore.values import uncanon_fields


def delete_refs(loc: FirestoreLocation, client, refs: list, batch_size: int = MAX_BATCH) -> None:
    """Unconditional deletes, `batch_size` to a commit."""
    for start in range(0, len(refs), batch_size):
        batch = client.batch()
        for ref in refs[start:start + batch_size]:
            batch.delete(ref)
        commit(loc, batch)


# --- writing -------------------------------------------------------------------------------------------------


def commit(loc: FirestoreLocation, batch) -> None:
    """Every write goes through here: one atomic commit of at most MAX_BATCH writes (tests wrap it to kill)."""
    with api_errors(loc, "writing documents"):
        batch.commit(retry=retry())


def write_docs(dst: FirestoreLocation, docs, target: dict[str, tuple[str, str]], batch_size: int) -> int:
    """Set each document at `dst` (callers give parents before children); updates `target` as commits land."""
    client = client_for(dst)
    batch, pending, written = client.batch(), [], 0
    for doc in docs:
        batch.set(client.document(dst.path(doc.rel)), uncanon_fields(doc.fields, client, dst, doc.rel))
        pending.append(doc)
        if len(pending) == batch_size:
            commit(dst, batch)
            target.update((d.rel, (d.part, d.checksum)) for d in pending)
            written += len(pending)
            batch, pending = client.batch(), []
    if pending:
        commit(dst, batch)
        target.update((d.rel, (d.part, d.checksum)) for d in pending)
        written += len(pending)
    return written


def refuse_extras(dst: FirestoreLocation, tenant: str, origin: Any, extras: list[str]) -> None:
    if extras:
        raise Mismatch(f"{dst} holds {len(extras)} documents of tenant '{tenant}' that {origin} does not: "
                       f"{shown(extras)}; they were left in place (nothing is deleted by a copy): remove them or "
                       f"find out where they came from, then copy again")


def check_against(loc, tenant: str, tree: Collections, expect: Summary, docs: list[Doc],
                   deleted: dict[str, tuple[int, int]]) -> None:
    """What is left plus what earlier runs deleted must be exactly the verified summary, part by part."""
    now = {p: [0, 0] for p in part_names(tree)}
    for d in docs:
        now[d.part][0] += 1
        now[d.part][1] = (now[d.part][1] + int(d.checksum, 16)) % CHECKSUM_MODULUS
    problems = []
    for part in sorted(set(now) | set(expect.parts) | set(deleted)):
        want = expect.parts.get(part, {"count": 0, "checksum": "0" * 64})
        have, gone = now.get(part, [0, 0]), deleted.get(part, (0, 0))
        if have[0] + gone[0] != int(want["count"]):
            extra = f" (+{gone[0]} already deleted)" if gone[0] else ""
            problems.append(f"{part}: verified {want['count']}, now {have[0]}{extra} documents")
        elif (have[1] + gone[1]) % CHECKSUM_MODULUS != int(want["checksum"], 16):
            problems.append(f"{part}: same count ({want['count']}), different checksum")
    if problems:
        raise Mismatch(f"{loc}: refusing to delete tenant '{tenant}': it no longer matches the verified summary "
                       f"({'; '.join(problems)}); a write arrived after verification: copy and verify again")
