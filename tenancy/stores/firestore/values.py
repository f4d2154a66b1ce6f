"""Canonical JSON of Firestore values (also the export format): one-key tags keep timestamps, bytes, points,
references, vectors and non-finite doubles apart from plain JSON; references are made relative to the root.
"""

from __future__ import annotations

import base64
import math
import re
from datetime import datetime, timezone
from typing import Any

from tenancy.stores import StoreError
from tenancy.stores.firestore.location import FirestoreLocation


_TAGS = frozenset({"$bytes", "$double", "$geo", "$ref", "$timestamp", "$vector"})


_TIMESTAMP = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{6})Z$")


# --- canonical values ----------------------------------------------------------------------------------------


def canon_fields(fields: dict[str, Any], root: str) -> dict[str, Any]:
    return {_escape(k): _canon(v, root) for k, v in fields.items()}


def _canon(value: Any, root: str) -> Any:
    from google.cloud.firestore_v1 import DocumentReference, GeoPoint
    from google.cloud.firestore_v1.vector import Vector

    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$double": repr(value)}
    if isinstance(value, datetime):
        return {"$timestamp": _rfc3339(value)}
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode()}
    if isinstance(value, GeoPoint):
        return {"$geo": [value.latitude, value.longitude]}
    if isinstance(value, Vector):
        return {"$vector": [float(x) for x in value]}
    if isinstance(value, DocumentReference):
        inside = not root or value.path.startswith(root + "/")
        return {"$ref": (value.path[len(root) + 1:] if root else value.path) if inside else "/" + value.path}
    if isinstance(value, list):
        return [_canon(v, root) for v in value]
    if isinstance(value, dict):
        return canon_fields(value, root)
    raise StoreError(f"unsupported Firestore value of type {type(value).__name__}")


def uncanon_fields(fields: dict[str, Any], client, dst: FirestoreLocation, rel: str) -> dict[str, Any]:
    return {_unescape(k): _uncanon(v, client, dst, rel) for k, v in fields.items()}


def _uncanon(value: Any, client, dst: FirestoreLocation, rel: str) -> Any:
    if isinstance(value, list):
        return [_uncanon(v, client, dst, rel) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) != 1 or next(iter(value)) not in _TAGS:
        return uncanon_fields(value, client, dst, rel)
    (tag, body), = value.items()
    from google.cloud.firestore_v1 import GeoPoint
    from google.cloud.firestore_v1.vector import Vector

    if tag == "$double":
        return float(body)
    if tag == "$timestamp":
        return _parse_rfc3339(body, rel)
    if tag == "$bytes":
        return base64.b64decode(body)
    if tag == "$geo":
        return GeoPoint(body[0], body[1])
    if tag == "$vector":
        return Vector(body)
    if body.startswith("/"):
        target = body[1:]
        if not dst.root or target.startswith(dst.root + "/"):
            raise StoreError(f"document {rel}: a reference to {target} points outside the tenant's documents and "
                             f"cannot be kept in {dst} (its root would contain it); rewrite or remove the reference "
                             f"before moving the tenant")
        return client.document(target)
    return client.document(dst.path(body))


def _escape(key: str) -> str:
    return "$" + key if key.startswith("$") else key


def _unescape(key: str) -> str:
    return key[1:] if key.startswith("$") else key


def _rfc3339(value: datetime) -> str:
    """Microseconds: Firestore stores no finer (and the client's snapshots drop nanoseconds anyway)."""
    d = value.astimezone(timezone.utc) if value.tzinfo else value
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}:{d.second:02d}.{d.microsecond:06d}Z"


def _parse_rfc3339(text: str, rel: str):
    from google.api_core.datetime_helpers import DatetimeWithNanoseconds

    m = _TIMESTAMP.match(text)
    if not m:
        raise StoreError(f"document {rel}: timestamp {text!r} is not RFC 3339 UTC with 6 fraction digits")
    y, mo, d, h, mi, s, us = (int(g) for g in m.groups())
    return DatetimeWithNanoseconds(y, mo, d, h, mi, s, us, tzinfo=timezone.utc)
