"""Exports (files 0600 plus objects.json with sizes, MD5 and SHA-256), their check, and their import into a
prefix.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, IO

from tenancy.stores import Mismatch, Summary, file_sha256, private_export_dir, private_file, write_manifest
from tenancy.stores.objects.backends import KIND, ObjectError, ObjectInfo, Progress, Store, b64
from tenancy.stores.objects.listing import list_prefix, normalise_prefix, summarise, summary


class _HashingFile:
    """Writes through to a file while computing MD5 and SHA-256 (downloads stream into it)."""

    def __init__(self, f: IO[bytes]):
        self.f, self.md5, self.sha256, self.size = f, hashlib.md5(), hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.md5.update(data)
        self.sha256.update(data)
        self.size += len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def safe_path(root: Path, rel: str) -> Path:
    segments = rel.split("/")
    bad = next((s for s in segments if s in ("", ".", "..")), None)
    if bad is not None:
        raise ObjectError(f"object name {rel!r} has a {bad or 'empty'!r} path segment and cannot be exported as a "
                          "file; rename it or copy it with `gcloud storage cp`")
    return root.joinpath(*segments)


def export(store: Store, prefix: str, directory: str | Path, progress: Progress | None = None) -> dict[str, Any]:
    """Download every object under `prefix` into `directory` (new or empty; files 0600) and write
    `objects.json` there; returns the manifest entry (names, sizes, MD5, SHA-256, summary)."""
    say = progress or (lambda m: None)
    prefix = normalise_prefix(prefix)
    root = private_export_dir(directory)
    files_dir = root / "objects"
    files_dir.mkdir(mode=0o700)
    objs, _ = list_prefix(store, prefix)
    files = []
    for rel in sorted(objs):
        info = objs[rel]
        path = safe_path(files_dir, rel)
        try:
            for parent in reversed(path.relative_to(files_dir).parents):
                (files_dir / parent).mkdir(mode=0o700, exist_ok=True)
            out = private_file(path)
        except (FileExistsError, NotADirectoryError):
            raise ObjectError(f"objects {rel!r} and another object both need the path {path}: one name is a "
                              "'directory' of the other; export them with `gcloud storage cp`") from None
        with out:
            h = _HashingFile(out)
            store.download(info.name, h)
        md5 = b64(h.md5.digest())
        if not info.md5.startswith("crc32c:") and md5 != info.md5:
            raise ObjectError(f"{store.url}/{info.name} changed while it was exported (MD5 {md5} vs {info.md5}); "
                              "export again into a new directory")
        files.append({"name": rel, "path": path.relative_to(root).as_posix(), "size": h.size, "md5": md5,
                      "sha256": h.sha256.hexdigest(), "content_type": info.content_type,
                      "cache_control": info.cache_control, "metadata": info.metadata})
    s = summarise(objs)
    entry = {"kind": KIND, "source": f"{store.url}/{prefix}", "count": s.count, "bytes": sum(f["size"] for f in files),
             "checksum": s.checksum, "summary": s.to_json(), "files": files}
    write_manifest(root, "objects.json", entry)
    say(f"  exported {len(files)} objects ({entry['bytes']:,} bytes) from {store.url}/{prefix} to {root}")
    return entry


def read_export(directory: str | Path) -> Summary:
    """An export read back: every file against `objects.json` (size and SHA-256); the summary it was taken with."""
    root = Path(directory)
    try:
        entry = json.loads((root / "objects.json").read_text())
    except (OSError, ValueError) as exc:
        raise ObjectError(f"no readable objects.json in {root} ({exc}); export again") from None
    for f in entry["files"]:
        path = safe_path(root, f["path"])
        if not path.is_file() or path.stat().st_size != f["size"] or file_sha256(path) != f["sha256"]:
            raise Mismatch(f"exported object {f['name']} in {root} is missing or changed (size or SHA-256 differs)")
    return Summary.from_json(entry["summary"])


def import_export(directory: str | Path, store: Store, prefix: str, progress: Progress | None = None) -> Summary:
    """Upload an export (`objects.json` and its files) under `prefix`, each object with its exported name, content
    type, cache control and metadata; returns the store's summary, equal to the export's.

    Every file is checked against the manifest (size, SHA-256) before the first upload. Resumable: an object
    already there with the exported MD5 is kept (a re-run after a kill continues). Nothing is overwritten or
    deleted: an object of another content under an exported name, or one the export does not hold, raises
    Mismatch."""
    say = progress or (lambda m: None)
    root, prefix = Path(directory), normalise_prefix(prefix)
    expected = read_export(root)
    entry = json.loads((root / "objects.json").read_text())
    there, _ = list_prefix(store, prefix)
    exported = {f["name"]: f for f in entry["files"]}
    extra = sorted(set(there) - set(exported))
    clash = sorted(n for n in set(there) & set(exported) if there[n].md5 != exported[n]["md5"])
    if extra or clash:
        shown = [f"{n} (not in the export)" for n in extra] + [f"{n} (different content)" for n in clash]
        raise Mismatch(f"{store.url}/{prefix} already holds objects the export {root} does not: {', '.join(shown[:5])}"
                       f"{', ...' if len(shown) > 5 else ''}; nothing was overwritten or deleted")
    uploaded = nbytes = 0
    for name, f in sorted(exported.items()):
        if name in there:
            continue
        like = ObjectInfo(name, f["md5"], f["size"], content_type=f.get("content_type"),
                          cache_control=f.get("cache_control"), metadata=f.get("metadata"))
        with open(safe_path(root, f["path"]), "rb") as data:
            store.upload(prefix + name, data, f["size"], like)
        uploaded += 1
        nbytes += f["size"]
    result = summary(store, prefix)
    if not result.same_data(expected):
        raise Mismatch(f"{store.url}/{prefix} after the import does not match the export {root}: "
                       f"{'; '.join(expected.differences(result))}")
    say(f"  imported {uploaded} objects ({nbytes:,} bytes) into {store.url}/{prefix}"
        f"{f', {len(there)} already there' if there else ''}")
    return result
