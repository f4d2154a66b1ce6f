"""Generated operator objects checked against the operator's own CRD (schemas/pko/, v2.9.0, unchanged).

The API server prunes fields a structural schema does not declare, silently: a misspelt
`workspaceReclaimPolicy` would be dropped and the workspace kept. So objects are validated strictly: every
object schema that lists its properties (and does not preserve unknown fields) is closed. The CRD's one
CEL rule (`size(self.metadata.name) <= 42`) is checked here too; jsonschema does not evaluate CEL.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml

SCHEMA_DIR = Path(__file__).resolve().parent.parent.parent / "schemas" / "pko"
CRDS = {("pulumi.com/v1", "Stack"): "pulumi.com_stacks.yaml"}


class InvalidObject(ValueError):
    pass


def _closed(schema: Any) -> Any:
    if isinstance(schema, dict):
        out = {k: _closed(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


@functools.lru_cache(maxsize=None)
def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    """`spec.versions[name == <version>].schema.openAPIV3Schema` of the kind's CRD, closed."""
    try:
        fname = CRDS[(api_version, kind)]
    except KeyError:
        raise InvalidObject(f"no CRD for {kind} {api_version} in {SCHEMA_DIR}") from None
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load((SCHEMA_DIR / fname).read_text(), Loader=loader)
    version = api_version.split("/", 1)[1]
    [entry] = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return _closed(copy.deepcopy(entry["schema"]["openAPIV3Schema"]))


def rules(api_version: str, kind: str) -> list[dict[str, str]]:
    return list(crd_schema(api_version, kind).get("x-kubernetes-validations", []))


def problems(obj: dict[str, Any]) -> list[str]:
    """Everything the operator's CRD would refuse (or prune) in `obj`, one line each."""
    import jsonschema

    schema = crd_schema(obj.get("apiVersion", ""), obj.get("kind", ""))
    validator = jsonschema.Draft7Validator(schema)
    found = [f"{'.'.join(str(p) for p in e.absolute_path) or '(object)'}: {e.message}"
             for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))]
    for rule in rules(obj["apiVersion"], obj["kind"]):
        if rule["rule"] == "size(self.metadata.name) <= 42":
            if len(obj.get("metadata", {}).get("name", "")) > 42:
                found.append(f"metadata.name: {rule['message']}")
        else:  # a rule this check does not know: fail loudly rather than pass unchecked
            found.append(f"(object): CRD rule not checked here: {rule['rule']}")
    return found


def validate(obj: dict[str, Any]) -> None:
    found = problems(obj)
    if found:
        name = obj.get("metadata", {}).get("name", "?")
        raise InvalidObject(f"{obj.get('kind')} '{name}' does not match the operator's CRD: " + "; ".join(found))
