"""Where an archive lives: a local directory, or a bucket prefix (`gs://BUCKET/PREFIX`).

A local archive is written in place (a new or empty directory, 0700, files 0600). A bucket archive is first
written to a private staging directory on this machine (0700, one per operation, so a killed export resumes
there), then uploaded object by object with `archive.json` last (a prefix without it is an unfinished upload),
each upload made on the condition that no object of that name exists yet: no earlier archive is ever
overwritten, even one written after the preflight looked. The upload is then listed back (every object's size
and MD5 must be its file's) and the staging copy removed. Whoever reads it back -- the verification before any
delete, a restore -- downloads it into a fresh private directory and checks every file against its manifest,
exactly as a local archive is read.

What keeps a bucket archive private and lasting is the bucket's own configuration, not this module: uniform
bucket-level access with public access prevention, a retention policy at least as long as the archive must be
kept (a locked one where the law asks), CMEK where the data requires it, and object versioning off or irrelevant
(nothing here overwrites). The caller needs storage.objects.create/get/list on it; deleting is needed only to
abort an unfinished upload.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from tenancy.stores import StoreError, private_export_dir
from tenancy.stores import objects as obj

Say = Callable[[str], None]
INDEX = "archive.json"
STAGING_ENV = "TENANCY_STAGING_DIR"


class ArchiveError(StoreError):
    pass


def is_bucket(where: str | None) -> bool:
    return bool(where) and str(where).startswith("gs://")


def parse(url: str) -> tuple[str, str]:
    """(bucket, prefix ending in '/') of gs://BUCKET/PREFIX; a prefix is required (an archive never fills a bucket
    root, where it would mix with whatever else the bucket keeps)."""
    rest = url[len("gs://"):]
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    if not bucket or not prefix or any(s in ("", ".", "..") for s in prefix.split("/")):
        raise ArchiveError(f"{url}: give gs://BUCKET/PREFIX, a prefix of its own for this archive (e.g. "
                           "gs://acme-archives/offboarded/acme-2025-06)")
    return bucket, prefix + "/"


def setting(where: str | None) -> str | None:
    """What an operation records of where its archive goes: an absolute path, or gs://BUCKET/PREFIX."""
    if not where:
        return None
    if is_bucket(where):
        bucket, prefix = parse(where)
        return f"gs://{bucket}/{prefix.rstrip('/')}"
    return str(Path(where).resolve())


def staging(where: str | None, operation: str) -> Path | None:
    """The directory the archive is written to on this machine: the archive itself, or a bucket archive's
    staging copy (per operation, under $TENANCY_STAGING_DIR or the system's temporary directory)."""
    if not where:
        return None
    if not is_bucket(where):
        return Path(where)
    return Path(os.environ.get(STAGING_ENV) or tempfile.gettempdir()) / f"tenancy-archive-{operation}"


def describe(where: str | None, store: str) -> str:
    return f"{where}/{store}"


def _client():
    return obj.gcs_client()


def problem(where: str) -> str | None:
    """Why a bucket archive cannot be written at `where` (None when it can): the bucket must be reachable and the
    prefix hold nothing yet."""
    try:
        bucket, prefix = parse(where)
        store = obj.GcsStore(bucket, _client())
        found = store.objects(prefix)
    except StoreError as exc:
        return f"--export-to {where}: {exc}"
    if found:
        return (f"--export-to {where}: already holds {len(found)} objects; give a new prefix so no earlier archive "
                "is overwritten")
    return None


def _md5(path: Path) -> str:
    import base64

    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return base64.b64encode(h.digest()).decode()


def _files(local: Path) -> list[str]:
    names = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
    # the index goes last: its presence in the bucket says the upload is complete
    return [n for n in names if n != INDEX] + ([INDEX] if INDEX in names else [])


def upload(where: str, local: Path, operation: str, say: Say) -> int:
    """Upload the staged archive `local` to gs://BUCKET/PREFIX, never overwriting an object; list it back; remove
    the staging copy. Resumable: an object a killed run uploaded (same MD5) counts as uploaded. Returns the number
    of objects."""
    from google.api_core import exceptions as gexc

    bucket_name, prefix = parse(where)
    store = obj.GcsStore(bucket_name, _client())
    names = _files(local)
    if INDEX not in names:
        raise ArchiveError(f"{local}: no {INDEX}: the archive was not finished; nothing uploaded")
    there = {o.name[len(prefix):]: o for o in store.objects(prefix)}
    index_there = there.get(INDEX)
    if index_there is not None and f'"{operation}"' not in store.read(prefix + INDEX).decode(errors="replace"):
        raise ArchiveError(f"{where} holds another archive; nothing was overwritten")
    sent = 0
    for name in names:
        path = local / name
        md5 = _md5(path)
        if name in there:
            if there[name].md5 != md5:
                raise ArchiveError(f"{where}/{name} exists with other content; nothing was overwritten")
            continue
        blob = store.bucket.blob(prefix + name)
        try:
            blob.upload_from_filename(str(path), if_generation_match=0, checksum="md5",
                                      content_type="application/json" if name.endswith(".json") else None)
        except gexc.PreconditionFailed:
            raise ArchiveError(f"{where}/{name} appeared while this archive was uploaded; nothing was overwritten") from None
        except gexc.GoogleAPICallError as exc:
            raise ArchiveError(f"uploading {where}/{name}: {exc.code} {exc.message}") from None
        sent += 1
    listed = {o.name[len(prefix):]: o for o in store.objects(prefix)}
    bad = [n for n in names if n not in listed or listed[n].md5 != _md5(local / n) or listed[n].size != (local / n).stat().st_size]
    extra = sorted(set(listed) - set(names))
    if bad or extra:
        raise ArchiveError(f"{where} does not hold exactly the archive after the upload: "
                           f"{', '.join([*(f'{n} (missing or different)' for n in bad), *(f'{n} (not in the archive)' for n in extra)][:5])}")
    say(f"  uploaded the archive to {where}: {len(names)} objects ({sent} now), listed back")
    shutil.rmtree(local)
    return len(names)


def uploaded(where: str, operation: str) -> bool:
    """Whether `where` already holds this operation's finished archive (its index is uploaded last)."""
    bucket_name, prefix = parse(where)
    store = obj.GcsStore(bucket_name, _client())
    if not any(o.name == prefix + INDEX for o in store.objects(prefix + INDEX)):
        return False
    return f'"{operation}"' in store.read(prefix + INDEX).decode(errors="replace")


def download(where: str, into: Path) -> Path:
    """A bucket archive downloaded into the new private directory `into` (0700, files 0600)."""
    bucket_name, prefix = parse(where)
    store = obj.GcsStore(bucket_name, _client())
    found = store.objects(prefix)
    if not found:
        raise ArchiveError(f"{where}: no archive there (no object under it)")
    root = private_export_dir(into)
    for o in found:
        rel = o.name[len(prefix):]
        path = obj.safe_path(root, rel)
        for parent in reversed(path.relative_to(root).parents):
            (root / parent).mkdir(mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
        with os.fdopen(fd, "wb") as f:
            store.download(o.name, f)
    return root


@contextmanager
def fetched(where: str) -> Iterator[Path]:
    """The archive as a local directory for as long as the block runs: a local archive itself, a bucket archive
    downloaded into a private temporary directory (removed afterwards)."""
    if not is_bucket(where):
        yield Path(where)
        return
    tmp = Path(tempfile.mkdtemp(prefix="tenancy-archive-read-"))
    try:
        yield download(where, tmp / "archive")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_unfinished(where: str, operation: str, say: Say) -> None:
    """Abort: this operation's staging copy, and what it uploaded of an archive it did not finish (the bucket's
    objects under the prefix, only while its index is absent or names this operation)."""
    local = staging(where, operation)
    if local is not None and local.exists():
        shutil.rmtree(local)
    bucket_name, prefix = parse(where)
    store = obj.GcsStore(bucket_name, _client())
    found = store.objects(prefix)
    index = next((o for o in found if o.name == prefix + INDEX), None)
    if index is not None and f'"{operation}"' not in store.read(index.name).decode(errors="replace"):
        say(f"  {where} holds another operation's archive: left as it is")
        return
    for o in found:
        store.delete(o.name, o.generation)
    if found:
        say(f"  removed this operation's unfinished archive {where} ({len(found)} objects)")
