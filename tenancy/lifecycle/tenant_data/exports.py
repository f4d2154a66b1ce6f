"""A tenant's archive: every store exported into its own directory with `archive.json` indexing them (counts,
checksums, each manifest's SHA-256), read back against the stores, or checked whole without any store (a restore).
Where the archive lives (a local directory, a bucket prefix) is tenancy/lifecycle/archives.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Mapping

from tenancy.lifecycle.tenant_data.handles import KINDS, Handle, Say, archived, kind_of
from tenancy.stores import Mismatch, StoreError, Summary, file_sha256, private_export_dir, write_manifest
from tenancy.stores import firestore as fs

ARCHIVE_INDEX = "archive.json"
MANIFESTS = {"postgres": "manifest.json", "objects": "objects.json", "firestore": fs.MANIFEST, "graph": "objects.json"}


def export_all(found: Mapping[str, Handle], archive: Path, tenant: str, operation: str, discarded: list[str],
               say: Say, about: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every store into its own directory of a new private archive, plus `archive.json` listing each store
    with its counts, checksums and the SHA-256 of its manifest (which holds each file's), and `about` (the
    environment, plan and model the tenant had: what a restore brings it back as). Resumable: a store whose
    export completed is kept, a half-written one is redone; an archive of another tenant or operation is
    refused."""
    index_path = archive / ARCHIVE_INDEX
    if archive.exists() and any(archive.iterdir()):
        try:
            index = json.loads(index_path.read_text())
        except (OSError, ValueError):
            index = {}
        if (index.get("tenant"), index.get("operation")) != (tenant, operation):
            raise StoreError(f"export directory {archive} is not empty and is not this operation's archive; give a new "
                             "(or empty) directory so no earlier export is overwritten")
    else:
        private_export_dir(archive)
        index = {"tenant": tenant, "operation": operation, "stores": {}, "discarded": sorted(discarded), **(about or {})}
        write_manifest(archive, ARCHIVE_INDEX, index)
    for name, h in found.items():
        done = archive / f".{name}.json"
        if done.exists():
            index["stores"][name] = json.loads(done.read_text())
            continue
        folder = archive / name
        if folder.exists():   # an export killed half-way: this store again
            shutil.rmtree(folder)
        say(f"  exporting {h.describe()}")
        entry = h.export(folder, say)
        entry["manifestSha256"] = file_sha256(folder / MANIFESTS[h.kind])
        write_manifest(archive, done.name, entry)
        index["stores"][name] = entry
    index_path.unlink()
    write_manifest(archive, ARCHIVE_INDEX, index)
    return index


def export_archive(found: Mapping[str, Handle], where: str, staging: Path, tenant: str, operation: str,
                   discarded: list[str], say: Say, about: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`export_all` to where the archive goes (tenancy/lifecycle/archives.py): a local directory in place; a bucket
    archive staged in `staging`, then uploaded and listed back. Resumable: a killed run's finished upload is
    found and kept."""
    from tenancy.lifecycle import archives

    if archives.is_bucket(where) and archives.uploaded(where, operation):
        with archives.fetched(where) as local:
            return json.loads((local / ARCHIVE_INDEX).read_text())
    index = export_all(found, staging, tenant, operation, discarded, say, about)
    if archives.is_bucket(where):
        archives.upload(where, staging, operation, say)
    return index


def verify_archive_at(found: Mapping[str, Handle], where: str) -> dict[str, Summary]:
    """`verify_archive` of the archive where it now is (a bucket archive downloaded again, as a restore reads it)."""
    from tenancy.lifecycle import archives

    with archives.fetched(where) as local:
        return verify_archive(found, local)


def verify_archive(found: Mapping[str, Handle], archive: Path) -> dict[str, Summary]:
    """Each store's export read back and compared with the store now; the verified summaries."""
    index = json.loads((archive / ARCHIVE_INDEX).read_text())
    out = {}
    for name, h in found.items():
        entry = index["stores"].get(name)
        if entry is None:
            raise Mismatch(f"the archive {archive} has no export of {h.describe()}; nothing was deleted")
        out[name] = h.verify_export(archive / name, entry)
    return out


def read_archive(archive: Path, tenant: str, env: str | None = None) -> tuple[dict[str, Any], dict[str, Summary], list[str]]:
    """An archive checked whole without reading any store: `archive.json` is the tenant's (and the environment's,
    when it says), and each store's directory holds its manifest, unchanged since the export (its SHA-256 in
    `archive.json`), and every file that manifest lists, unchanged (each file's SHA-256); the counts and
    checksums each manifest declares are the ones `archive.json` lists. Returns (the index, each store's
    archived summary, every problem found)."""
    problems: list[str] = []
    try:
        index = json.loads((archive / ARCHIVE_INDEX).read_text())
    except OSError as exc:
        return {}, {}, [f"{archive}: no readable {ARCHIVE_INDEX} ({exc.strerror}): not an archive of `tenancy offboard`"]
    except ValueError:
        return {}, {}, [f"{archive / ARCHIVE_INDEX}: not valid JSON: the archive is damaged"]
    if not isinstance(index, dict) or not isinstance(index.get("stores"), dict):
        return {}, {}, [f"{archive / ARCHIVE_INDEX}: lists no stores: not an archive of `tenancy offboard`"]
    if index.get("tenant") != tenant:
        return index, {}, [f"{archive} is the archive of tenant '{index.get('tenant')}', not '{tenant}'"]
    if env is not None and index.get("environment") not in (None, env):
        return index, {}, [f"{archive} is an archive of environment '{index['environment']}', not '{env}'"]
    sums: dict[str, Summary] = {}
    for name, entry in sorted(index["stores"].items()):
        kind, folder = kind_of(name), archive / name
        if kind not in KINDS or "/" in name or name.startswith("."):
            problems.append(f"{archive}: store '{name}' is not a store of the data layout")
            continue
        if not folder.is_dir():
            problems.append(f"{name}: the archive has no directory {folder}")
            continue
        manifest = folder / MANIFESTS[kind]
        if not manifest.is_file():
            problems.append(f"{name}: {manifest} is missing")
            continue
        if entry.get("manifestSha256") and file_sha256(manifest) != entry["manifestSha256"]:
            problems.append(f"{name}: {manifest} changed since the export (sha256 differs from {ARCHIVE_INDEX})")
            continue
        try:
            s = archived(folder, kind, tenant)
        except (StoreError, KeyError, TypeError, ValueError) as exc:
            problems.append(f"{name}: {exc}")
            continue
        if (s.count, s.checksum) != (entry.get("count"), entry.get("checksum")):
            problems.append(f"{name}: its manifest says {s.count} items/{s.checksum[:12]}, {ARCHIVE_INDEX} "
                            f"{entry.get('count')}/{str(entry.get('checksum'))[:12]}")
            continue
        sums[name] = s
    return index, sums, problems
