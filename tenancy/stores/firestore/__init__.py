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

The package, by role: `location` (locations and the checks every operation makes), `access` (clients, retries,
one-line errors), `values` (canonical JSON), `documents` (reading and summing), `writes` (every commit),
`operations` (summary, copy, verify, delete), `passes` (a move while the tenant writes), `exports` (export and
import). Callers use the names below.
"""

from __future__ import annotations

from tenancy.stores.firestore.access import RETRY_SECONDS, api_errors, client_for
from tenancy.stores.firestore.documents import doc_checksum, document_checksums, summarise
from tenancy.stores.firestore.exports import export, file_name, import_export
from tenancy.stores.firestore.location import (CHANGES_COLLECTION, CHANGES_DOC, DEFAULT_COLLECTIONS, KIND, LIST_PAGE,
                                               MANIFEST, MARKER_COLLECTION, MAX_BATCH, POOL_COLLECTION, SHOWN,
                                               Collections, FirestoreLocation, location_for, prepare, scratch_location)
from tenancy.stores.firestore.operations import clear, copy, delete, discard, summary, unmovable, verify
from tenancy.stores.firestore.passes import Pass, apply_delta, changes, clear_changes, record_changes, repair, sync_pass

__all__ = ["CHANGES_COLLECTION", "CHANGES_DOC", "DEFAULT_COLLECTIONS", "KIND", "LIST_PAGE", "MANIFEST",
           "MARKER_COLLECTION", "MAX_BATCH", "POOL_COLLECTION", "RETRY_SECONDS", "SHOWN", "Collections",
           "FirestoreLocation", "Pass", "api_errors", "apply_delta", "changes", "clear", "clear_changes", "client_for",
           "copy", "delete", "discard", "doc_checksum", "document_checksums", "export", "file_name", "import_export",
           "location_for", "prepare", "record_changes", "repair", "scratch_location", "summarise", "summary",
           "sync_pass", "unmovable", "verify"]
