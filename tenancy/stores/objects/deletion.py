"""Deleting a tenant's objects only while they still match a verified summary (a re-run finishes an interrupted
delete), and discarding a scratch copy.
"""

from __future__ import annotations

from tenancy.stores import Mismatch, Summary
from tenancy.stores.objects.backends import KIND, ObjectError, Progress, SCRATCH_PREFIX, Store
from tenancy.stores.objects.listing import list_prefix, normalise_prefix, summarise


def _is_remainder(now: Summary, expect: Summary) -> bool:
    """Whether `now` can be what an interrupted delete of `expect` left behind: fewer objects in the same parts,
    none written after the newest verified one (a new upload or an overwrite is newer)."""
    if now.count >= expect.count:
        return False
    for name, part in now.parts.items():
        want = expect.parts.get(name)
        if want is None or part["count"] > want["count"]:
            return False
        if part.get("updated_max") and (not want.get("updated_max") or part["updated_max"] > want["updated_max"]):
            return False
    return True


def delete(store: Store, prefix: str, expect: Summary, progress: Progress | None = None) -> int:
    """Delete the objects under `prefix` only if they still match `expect` (a verified summary). Idempotent:
    a re-run after success deletes nothing; a re-run after an interrupted delete finishes it."""
    say = progress or (lambda m: None)
    if expect.kind != KIND:
        raise ObjectError(f"cannot delete objects against a {expect.kind!r} summary")
    prefix = normalise_prefix(prefix)
    objs, placeholders = list_prefix(store, prefix)
    now = summarise(objs)
    if not now.same_data(expect):
        if now.count == 0 and not placeholders:
            say(f"  {store.url}/{prefix} holds no objects (already deleted)")
            return 0
        if not (now.count == 0 or _is_remainder(now, expect)):
            diff = now.differences(expect)
            raise Mismatch(f"{store.url}/{prefix} changed since it was verified ({'; '.join(diff[:5])}); nothing "
                           "deleted: copy and verify again, then delete against the new summary")
        say(f"  resuming an interrupted delete: {now.count} of {expect.count} objects left")
    for rel in sorted(objs):
        store.delete(objs[rel].name, objs[rel].generation)
    for p in placeholders:
        store.delete(p.name, p.generation)
    say(f"  deleted {len(objs)} objects from {store.url}/{prefix}")
    return len(objs)


def discard(store: Store, prefix: str) -> int:
    """Remove every object under `prefix` without a verified summary: only for a scratch prefix this run made
    (`_tenancy/...`), never a tenant's data."""
    prefix = normalise_prefix(prefix)
    if not prefix.startswith(SCRATCH_PREFIX):
        raise ObjectError(f"refusing to discard {store.url}/{prefix}: only scratch copies under {SCRATCH_PREFIX} are "
                          "discarded whole")
    objs = store.objects(prefix)
    for o in objs:
        store.delete(o.name, o.generation)
    return len(objs)
