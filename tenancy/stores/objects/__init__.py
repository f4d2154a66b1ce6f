"""A tenant's objects: under `{tenant_id}/` in the shared bucket (pooled), or at the root of its own bucket.

Stores are addressed by URL: `gs://bucket` (Google Cloud Storage) or a local directory standing for a bucket
(`file:///path` or a plain path; dry runs). The store contract (see `tenancy.stores`):

- `summary(store, prefix)`: objects per top-level folder, checksummed over (name relative to the prefix,
  MD5) pairs, so the pooled layout and the own-bucket layout compare equal when they hold the same objects;
- `copy(src, src_prefix, dst, dst_prefix)`: copies what is missing or different, never deletes at the target,
  then re-lists both sides and raises `Mismatch` on any difference (objects only at the target included).
  Bucket to bucket is a server-side rewrite (no bytes through this machine); otherwise objects stream
  through a temporary file. Content type, cache control and custom metadata travel with the object;
- `export(store, prefix, directory)`: files (0600) plus a manifest entry with sizes, MD5 and SHA-256;
- `delete(store, prefix, expect)`: deletes only what still matches the verified summary `expect`.

A prefix always ends in `/`: `acme` means `acme/`, so the neighbour `acme-corp/` and an object named `acme`
are never part of tenant `acme`'s data. Zero-byte "folder" objects (names ending in `/`, such as one named
exactly like the prefix) hold no data, and the prefix itself cannot exist at a bucket root: they are left out
of summaries, copies and exports, and removed by `delete`.

Composite GCS objects have no MD5; they are compared by CRC32C (`crc32c:...`), which only matches another
GCS copy of the same object (a directory store computes MD5).

The package, by role: `backends` (the `Store` interface, buckets and directories), `listing` (what a prefix
holds, summed), `copying` (copies, passes, repair, verification), `deletion` (delete against a summary,
discard), `exports` (export, check, import). Callers use the names below.
"""

from __future__ import annotations

from tenancy.stores.objects.backends import (CHUNK, KIND, PARTIAL_DIR, SCRATCH_PREFIX, TOP_LEVEL, GcsStore, LocalStore,
                                             ObjectError, ObjectInfo, Progress, Store, gcs_client, open_store)
from tenancy.stores.objects.copying import COPY_THREADS, Pass, copy, repair, sync_pass, verify_all
from tenancy.stores.objects.deletion import delete, discard
from tenancy.stores.objects.exports import export, import_export, read_export, safe_path
from tenancy.stores.objects.listing import normalise_prefix, summary

__all__ = ["CHUNK", "COPY_THREADS", "KIND", "PARTIAL_DIR", "SCRATCH_PREFIX", "TOP_LEVEL", "GcsStore", "LocalStore",
           "ObjectError", "ObjectInfo", "Pass", "Progress", "Store", "copy", "delete", "discard", "export",
           "gcs_client", "import_export", "normalise_prefix", "open_store", "read_export", "repair", "safe_path",
           "summary", "sync_pass", "verify_all"]
