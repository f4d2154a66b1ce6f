"""A recording Kubernetes API server for Stack objects, behind the real `kubernetes` client.

It replaces the client's HTTP connection pool, so every request goes through the official client exactly
as it would to a cluster (paths, query parameters, content types, JSON bodies) and is recorded. A scripted
operator answers: each generation of a Stack object is reconciled after `delay` reads, succeeding (with
`outputs`) unless `outcomes[name]` says otherwise.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from kubernetes import client

HOST = "https://kube.test"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    body: Any

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


class _Response:
    def __init__(self, status: int, body: Any, reason: str = "OK"):
        self.status = status
        self.reason = reason
        self.data = json.dumps(body).encode()
        self.headers = {"content-type": "application/json"}

    def getheaders(self):
        return self.headers

    def getheader(self, name, default=None):
        return self.headers.get(name.lower(), default)


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies application/merge-patch+json."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _merge(out.get(k), v)
    return out


class FakeKube:
    def __init__(self, delay: int = 1):
        self.objects: dict[tuple[str, str], dict] = {}
        self.requests: list[Request] = []
        self.delay = delay
        self.outcomes: dict[str, tuple[str, str]] = {}     # object name -> ("failed", message) | ("stalled", message)
        self.outputs: dict[str, dict] = {}                 # object name -> stack outputs once succeeded
        self.frozen: set[str] = set()                      # objects the operator never gets to
        self.errors: dict[str, tuple[int, str]] = {}       # object name -> (HTTP status, message) for every call
        self._reads: dict[str, int] = {}

    def api_client(self) -> client.ApiClient:
        api = client.ApiClient(client.Configuration(host=HOST))
        api.rest_client.pool_manager = self
        return api

    def writes(self) -> list[Request]:
        return [r for r in self.requests if r.method != "GET"]

    # ------------------------------------------------------------------------ urllib3's PoolManager
    def request(self, method, url, body=None, fields=None, headers=None, **_):
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query)) | dict(fields or [])
        payload = json.loads(body) if body else None
        ctype = (headers or {}).get("Content-Type") if method != "GET" else None
        self.requests.append(Request(method, parts.path, query, ctype, payload))
        segs = parts.path.strip("/").split("/")
        # apis/pulumi.com/v1/namespaces/<ns>/stacks[/<name>]
        if segs[:3] != ["apis", "pulumi.com", "v1"] or segs[3] != "namespaces" or segs[5] != "stacks":
            return _Response(404, {"kind": "Status", "message": f"no route {parts.path}"}, "Not Found")
        ns = segs[4]
        if method == "GET" and len(segs) == 6:        # a list, by label selector
            wanted = dict(kv.split("=", 1) for kv in query.get("labelSelector", "").split(",") if kv)
            items = [copy.deepcopy(o) for (n, _), o in sorted(self.objects.items()) if n == ns and all(
                (o["metadata"].get("labels") or {}).get(k) == v for k, v in wanted.items())]
            return _Response(200, {"kind": "StackList", "apiVersion": "pulumi.com/v1", "items": items})
        name = segs[6] if len(segs) > 6 else (payload or {}).get("metadata", {}).get("name")
        key = (ns, name)
        if name in self.errors:
            status, message = self.errors[name]
            return _Response(status, {"kind": "Status", "message": message}, "Error")
        if method == "POST":
            if key in self.objects:
                return _Response(409, {"kind": "Status", "message": f'stacks.pulumi.com "{name}" already exists'}, "Conflict")
            obj = copy.deepcopy(payload)
            obj["metadata"].update(generation=1, uid=f"uid-{name}", resourceVersion="1")
            obj["status"] = {}
            self.objects[key] = obj
            return _Response(201, obj, "Created")
        if key not in self.objects:
            return _Response(404, {"kind": "Status", "message": f'stacks.pulumi.com "{name}" not found'}, "Not Found")
        obj = self.objects[key]
        if method == "GET":
            self._operate(name, obj)
            return _Response(200, obj)
        if method == "PATCH":
            assert ctype == "application/merge-patch+json", ctype
            new = _merge(obj, payload)
            if new.get("spec") != obj.get("spec"):
                new["metadata"]["generation"] = obj["metadata"]["generation"] + 1
            self.objects[key] = new
            return _Response(200, new)
        if method == "DELETE":
            del self.objects[key]
            return _Response(200, {"kind": "Status", "status": "Success"})
        return _Response(405, {"kind": "Status", "message": method}, "Method Not Allowed")

    def _operate(self, name: str, obj: dict) -> None:
        """The operator: one generation reconciled after `delay` reads."""
        gen = obj["metadata"]["generation"]
        status = obj.setdefault("status", {})
        if (status.get("lastUpdate") or {}).get("generation") == gen or name in self.frozen:
            return
        self._reads[name] = self._reads.get(name, 0) + 1
        if self._reads[name] <= self.delay:
            status["conditions"] = [{"type": "Ready", "status": "False", "reason": "Reconciling",
                                     "message": "update in progress", "lastTransitionTime": "2026-01-01T00:00:00Z"}]
            return
        self._reads[name] = 0
        commit = obj["spec"]["commit"]
        kind = "preview" if obj["spec"].get("preview") else "up"
        outcome, message = self.outcomes.get(name, ("succeeded", ""))
        if outcome == "stalled":
            status["conditions"] = [{"type": "Stalled", "status": "True", "reason": "SourceUnavailable",
                                     "message": message, "observedGeneration": gen,
                                     "lastTransitionTime": "2026-01-01T00:00:00Z"}]
            return
        last = {"generation": gen, "state": outcome, "type": kind, "lastAttemptedCommit": commit, "message": message}
        if outcome == "succeeded":
            last["lastSuccessfulCommit"] = commit
            if kind == "up":
                status["outputs"] = self.outputs.get(name, {})
        status["lastUpdate"] = last
        status["observedGeneration"] = gen
        status["conditions"] = [{"type": "Ready", "status": str(outcome == "succeeded"), "reason": outcome.title(),
                                 "message": message, "lastTransitionTime": "2026-01-01T00:00:00Z"}]
