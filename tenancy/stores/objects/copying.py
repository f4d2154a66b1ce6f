"""Copies between two prefixes: what is missing or different, verified by listing both sides; the passes of a
move while the tenant writes, the repair after a switch, and the verification of every object.

`transfer_object` copies one object; tests replace it here to corrupt a copy.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import datetime

from tenancy.stores import Mismatch, Summary
from tenancy.stores.objects.backends import ObjectError, ObjectInfo, Progress, Store
from tenancy.stores.objects.listing import list_prefix, normalise_prefix, summarise


def _refuse_overlap(src: Store, src_prefix: str, dst: Store, dst_prefix: str) -> None:
    if src.url == dst.url and (src_prefix.startswith(dst_prefix) or dst_prefix.startswith(src_prefix)):
        raise ObjectError(f"{src.url}/{src_prefix} and {dst.url}/{dst_prefix} overlap; copy between distinct locations")


def transfer_object(src: Store, src_info: ObjectInfo, dst: Store, name: str) -> ObjectInfo | None:
    """Copy one object; the copy's metadata when the store's answer gave it (a server-side rewrite does)."""
    copied = dst.copy_in(src, src_info.name, name)
    if copied:
        return copied if isinstance(copied, ObjectInfo) else None
    with tempfile.TemporaryFile() as tmp:  # bounded memory whatever the object's size
        src.download(src_info.name, tmp)
        size = tmp.tell()
        tmp.seek(0)
        dst.upload(name, tmp, size, src_info)
    return None


def _copy_missing(src: Store, src_prefix: str, dst: Store, dst_prefix: str, changed_since: datetime | None,
                  say: Progress) -> tuple[int, int, int]:
    """(copied, bytes copied, already present) -- only objects missing or different at the target."""
    source, _ = list_prefix(src, src_prefix)
    target, _ = list_prefix(dst, dst_prefix)
    copied = nbytes = present = 0
    for rel in sorted(source):
        info = source[rel]
        if changed_since is not None and info.updated is not None and info.updated <= changed_since:
            continue
        if rel in target and target[rel].md5 == info.md5:
            present += 1
            continue  # already there from an earlier attempt
        transfer_object(src, info, dst, dst_prefix + rel)
        copied += 1
        nbytes += info.size
    say(f"  copied {copied} objects ({nbytes:,} bytes) from {src.url}/{src_prefix} to {dst.url}/{dst_prefix}"
        f"{f', {present} already there' if present else ''}")
    return copied, nbytes, present


def _compare(src: Store, src_prefix: str, dst: Store, dst_prefix: str) -> tuple[Summary, list[str]]:
    source, _ = list_prefix(src, src_prefix)
    target, _ = list_prefix(dst, dst_prefix)
    bad = [f"{n} (missing at the target)" for n in sorted(set(source) - set(target))]
    bad += [f"{n} (different content)" for n in sorted(set(source) & set(target)) if source[n].md5 != target[n].md5]
    bad += [f"{n} (only at the target)" for n in sorted(set(target) - set(source))]
    return summarise(source), bad


def copy(src: Store, src_prefix: str, dst: Store, dst_prefix: str, *, changed_since: datetime | None = None,
         progress: Progress | None = None) -> Summary:
    """Copy the objects under `src_prefix` to `dst_prefix` (same relative names), then verify both sides.

    Resumable and idempotent: only objects missing or different at the target are copied; nothing is deleted
    at the target. `changed_since` limits the copy to objects updated after it (a short second pass inside a
    write freeze); the verification still covers every object. Returns the (equal) summary of both sides."""
    say = progress or (lambda m: None)
    src_prefix, dst_prefix = normalise_prefix(src_prefix), normalise_prefix(dst_prefix)
    _refuse_overlap(src, src_prefix, dst, dst_prefix)
    _copy_missing(src, src_prefix, dst, dst_prefix, changed_since, say)
    result, bad = _compare(src, src_prefix, dst, dst_prefix)
    if bad:
        raise Mismatch(f"{dst.url}/{dst_prefix} does not match {src.url}/{src_prefix}: {len(bad)} objects differ "
                       f"({', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''}); nothing was deleted")
    return result


@dataclass
class Pass:
    """What one pass of a move saw and did: the source's objects as listed, and those it copied (not yet
    verified at the target) or removed there."""

    source: dict[str, ObjectInfo]
    copied: list[str]               # copied, and not known to hold what the listing saw
    removed: list[str]
    transferred: int = 0            # objects this pass copied

    def summary(self) -> Summary:
        return summarise(self.source)


COPY_THREADS = 4     # objects copied at once (each a request; a bucket serves many)


def _copy_all(src: Store, source: dict[str, ObjectInfo], dst: Store, dst_prefix: str,
              rels: list[str]) -> dict[str, ObjectInfo | None]:
    """rel -> the copy's metadata where the store's answer gave it."""
    if not rels:
        return {}
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(COPY_THREADS, len(rels))) as pool:
        return dict(zip(rels, pool.map(lambda rel: transfer_object(src, source[rel], dst, dst_prefix + rel), rels)))


def sync_pass(src: Store, src_prefix: str, dst: Store, dst_prefix: str, *, before: Pass | None = None,
              verify: bool = False, progress: Progress | None = None) -> Pass:
    """One pass of a move: the objects missing or different at `dst_prefix` copied, and those found only there
    removed (`dst_prefix` is the move's own copy, which nothing else writes). Without `before` both sides are
    listed: a listing carries every object's MD5, so it compares them all.

    With `before` (the previous pass) only the source is listed: every object that pass found equal is still so
    at the target, so what differs from it, plus what it copied, is copied. With `verify` too (inside the write
    freeze, the source unchanged since its listing) each of those is then compared at the target (its MD5, from
    the copy's answer or read back): a difference raises Mismatch, and the returned pass has nothing left
    unverified."""
    say = progress or (lambda m: None)
    src_prefix, dst_prefix = normalise_prefix(src_prefix), normalise_prefix(dst_prefix)
    _refuse_overlap(src, src_prefix, dst, dst_prefix)
    source, _ = list_prefix(src, src_prefix)
    if before is None:
        target, _ = list_prefix(dst, dst_prefix)
        todo = [rel for rel in sorted(source) if rel not in target or target[rel].md5 != source[rel].md5]
        extra = sorted(set(target) - set(source))
    else:
        was = before.source
        todo = sorted({rel for rel in source if rel not in was or was[rel].md5 != source[rel].md5}
                      | {rel for rel in before.copied if rel in source})
        extra = sorted(set(was) - set(source))
    answers = _copy_all(src, source, dst, dst_prefix, todo)
    for rel in extra:
        dst.delete(dst_prefix + rel)
    say(f"  {len(todo)} objects copied to {dst.url}/{dst_prefix}, {len(extra)} removed there ({len(source)} at the source)")
    if not verify:
        # A copy whose answer shows the listed MD5 holds what the listing saw: equal as of it, like the others.
        unsure = [rel for rel in todo if answers.get(rel) is None or answers[rel].md5 != source[rel].md5]
        return Pass(source, unsure, extra, len(todo))
    if before is not None:
        bad = []
        for rel in todo + extra:
            there = answers.get(rel) or dst.info(dst_prefix + rel)
            if rel in source and (there is None or there.md5 != source[rel].md5):
                bad.append(f"{rel} ({'missing at the target' if there is None else 'different content'})")
            elif rel not in source and there is not None:
                bad.append(f"{rel} (only at the target)")
        if bad:
            raise Mismatch(f"{dst.url}/{dst_prefix} does not match {src.url}/{src_prefix}: {len(bad)} objects differ "
                           f"({', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''}); nothing was deleted")
        return Pass(source, [], extra, len(todo))
    return Pass(source, todo, extra, len(todo))


def repair(src: Store, src_prefix: str, dst: Store, dst_prefix: str, verified: Summary, switched_at: datetime,
           progress: Progress | None = None) -> tuple[Summary, list[str], list[str]]:
    """After a switch, when the read-only source no longer matches what was verified (an object that reached
    it after the last pass: its writer was told to write it again): each such object is copied to the target
    unless the tenant wrote it there since the switch. Returns (the source's summary now, repaired, left)."""
    src_prefix, dst_prefix = normalise_prefix(src_prefix), normalise_prefix(dst_prefix)
    source, _ = list_prefix(src, src_prefix)
    now = summarise(source)
    if now.same_data(verified):
        return now, [], []
    target, _ = list_prefix(dst, dst_prefix)
    repaired, left = [], []
    for rel in sorted(source):
        t = target.get(rel)
        if t is not None and t.md5 == source[rel].md5:
            continue
        if t is not None and t.updated is not None and t.updated <= switched_at:
            transfer_object(src, source[rel], dst, dst_prefix + rel)
            repaired.append(rel)
        else:
            left.append(rel)
    (progress or (lambda m: None))(f"  {dst.url}/{dst_prefix}: {len(repaired)} objects copied again from the read-only "
                                   f"source" + (f"; left as they are: {', '.join(left[:5])}" if left else ""))
    return now, repaired, left


def verify_all(src: Store, src_prefix: str, dst: Store, dst_prefix: str) -> Summary:
    """Both sides listed and compared object by object (MD5); the source's summary, or Mismatch."""
    result, bad = _compare(src, normalise_prefix(src_prefix), dst, normalise_prefix(dst_prefix))
    if bad:
        raise Mismatch(f"{dst.url}/{dst_prefix} does not match {src.url}/{src_prefix}: {len(bad)} objects differ "
                       f"({', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''}); nothing was deleted")
    return result
