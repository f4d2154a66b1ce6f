"""What a prefix holds: its objects by name relative to the prefix (folder placeholders apart), summed per
top-level folder into a `Summary` that does not depend on the layout.
"""

from __future__ import annotations

import hashlib

from tenancy.stores import Summary, combine
from tenancy.stores.objects.backends import KIND, ObjectError, ObjectInfo, Store, TOP_LEVEL


# --- the store contract ------------------------------------------------------------------------------------------

def normalise_prefix(prefix: str) -> str:
    """'' (a bucket root) or a prefix ending in '/'; a bare tenant id would also match its longer neighbours."""
    if prefix.startswith("/"):
        raise ObjectError(f"object prefix {prefix!r} must not start with '/'")
    return prefix if prefix == "" or prefix.endswith("/") else prefix + "/"


def _relative(objs: list[ObjectInfo], prefix: str) -> tuple[dict[str, ObjectInfo], list[ObjectInfo]]:
    """(relative name -> object, "folder" placeholders: zero-byte objects whose names end in '/')."""
    out, placeholders = {}, []
    for o in objs:
        rel = o.name[len(prefix):]
        if rel == "" or rel.endswith("/"):
            if o.size:
                raise ObjectError(f"object {o.name!r} ends in '/' and holds {o.size} bytes; it cannot be copied as a "
                                  "file or to a bucket root: rename it, then retry")
            placeholders.append(o)
        else:
            out[rel] = o
    return out, placeholders


def _part(rel: str) -> str:
    return rel.split("/", 1)[0] + "/" if "/" in rel else TOP_LEVEL


def summarise(objs: dict[str, ObjectInfo]) -> Summary:
    grouped: dict[str, list[str]] = {}
    for rel in objs:
        grouped.setdefault(_part(rel), []).append(rel)
    parts = {}
    for name, rels in grouped.items():
        h = hashlib.sha256()
        for rel in sorted(rels):
            h.update(f"{rel}\0{objs[rel].md5}\n".encode())
        times = [objs[r].updated for r in rels if objs[r].updated is not None]
        parts[name] = {"count": len(rels), "checksum": h.hexdigest(), "bytes": sum(objs[r].size for r in rels),
                       "updated_max": max(times).isoformat() if times else None}
    count, checksum = combine(parts)
    return Summary(kind=KIND, count=count, checksum=checksum, parts=parts)


def list_prefix(store: Store, prefix: str) -> tuple[dict[str, ObjectInfo], list[ObjectInfo]]:
    return _relative(store.objects(prefix), prefix)


def summary(store: Store, prefix: str) -> Summary:
    """What `store` holds under `prefix`, independent of the prefix (see the module docstring)."""
    prefix = normalise_prefix(prefix)
    return summarise(list_prefix(store, prefix)[0])
