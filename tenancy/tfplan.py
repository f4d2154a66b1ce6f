"""The offline plan's Google Cloud resources in Terraform's plan JSON format, for scanners that read it.

Checkov's `terraform_plan` framework (scripts/checkov-scan.py) judges Google Cloud resources by their
Terraform names: `google_sql_database_instance` with `settings.database_flags`, `google_storage_bucket` with
`logging.log_bucket`, `google_project` connected to a `google_project_iam_audit_config`. pulumi-gcp is a
bridge of the Terraform provider, so each Pulumi resource is a Terraform resource under another spelling:

- the type token `gcp:<module>/<resource>:<Resource>` is `google_<module>_<resource in snake case>`, with the
  few module and resource names the bridge renamed (MODULES, TYPES);
- inputs are the engine's camelCase names of the Terraform attributes: snake case again, except that the
  bridge gave a plural name to a repeated block whose Terraform name is singular (BLOCKS);
- a block of at most one item is an object in Pulumi and a one-item list in Terraform; Checkov reads both
  the same way, so objects stay objects;
- a value the plan does not know (`[unknown]`) is left out, as Terraform leaves out a value known only after
  apply; a secret stays masked (`[secret]`);
- a reference between resources (the audit config of a project the same plan creates) is what connects
  them for Checkov's graph checks. Pulumi's plan keeps values, not expressions, so an input that holds the
  identifying value of another resource of the plan (REFERENCES) becomes a reference to it.

Only `gcp:` resources are converted: the Kubernetes objects are scanned as manifests.
"""

from __future__ import annotations

import re
from typing import Any

from tenancy.recorder import UNKNOWN

FORMAT_VERSION = "1.2"
TERRAFORM_VERSION = "1.9.0"       # any: Checkov only requires the key
PROVIDER = "registry.terraform.io/hashicorp/google"

# Modules whose Terraform prefix is spelt differently (`gcp:secretmanager/...` is `google_secret_manager_...`).
MODULES = {"identityplatform": "identity_platform", "projects": "project", "secretmanager": "secret_manager",
           "servicenetworking": "service_networking", "serviceaccount": "service_account"}
# Resources whose Terraform name is not their module's prefix and their own name.
TYPES = {"gcp:organizations/project:Project": "google_project",
         "gcp:serviceaccount/account:Account": "google_service_account"}
# Repeated blocks: the bridge's plural name -> the Terraform block name.
BLOCKS = {"lifecycle_rules": "lifecycle_rule", "audit_log_configs": "audit_log_config",
          "secondary_ip_ranges": "secondary_ip_range", "taints": "taint"}
# Maps whose keys are data (label names), not attribute names.
MAPS = frozenset({"labels", "user_labels", "resource_labels", "default_labels", "resource_manager_tags",
                  "metadata", "annotations"})
# input (snake case) -> (Terraform type, attribute) whose value it names: a reference when both are in the plan.
REFERENCES = {"project": ("google_project", "project_id"),
              "bucket": ("google_storage_bucket", "name"),
              "instance": ("google_sql_database_instance", "name")}

_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])\d*|[A-Z]?[a-z]+\d*|[A-Z]+\d*|\d+")    # digits stay with their word
_NAME = re.compile(r"[^A-Za-z0-9_-]")


def snake(name: str) -> str:
    """`ipv4Enabled` -> `ipv4_enabled`, `IAMAuditConfig` -> `iam_audit_config`, `enableL4IlbSubsetting` ->
    `enable_l4_ilb_subsetting`."""
    return "_".join(w.lower() for w in _WORD.findall(name))


def terraform_type(token: str) -> str | None:
    """The Terraform resource type of a pulumi-gcp type token; None for anything that is not Google Cloud's."""
    if token in TYPES:
        return TYPES[token]
    if not token.startswith("gcp:"):
        return None
    try:
        module, resource = token.split(":")[1:]
        module = module.split("/")[0]
    except ValueError:
        return None
    return f"google_{MODULES.get(module, module)}_{snake(resource)}"


def attributes(inputs: dict[str, Any]) -> dict[str, Any]:
    """A resource's inputs as Terraform attribute values (module docstring)."""
    return {k: v for k, v in ((_key(k, v), _value(k, v)) for k, v in inputs.items()) if v is not _DROP}


_DROP = object()


def _key(name: str, value: Any) -> str:
    key = snake(name)
    return BLOCKS.get(key, key) if isinstance(value, list) else key


def _value(name: str, value: Any) -> Any:
    if value == UNKNOWN:
        return _DROP
    if isinstance(value, dict):
        if snake(name) in MAPS:
            return {k: v for k, v in value.items() if v != UNKNOWN}
        return attributes(value)
    if isinstance(value, list):
        return [x for x in (_value(name, v) for v in value) if x is not _DROP]
    return value


def address_name(stack: str, name: str, taken: set[str]) -> str:
    """A Terraform resource name for a Pulumi resource: its stack and logical name (`dev_acme__uploads-bucket`),
    unique in the plan. Stack names hold '.', which a Terraform address cannot."""
    base = _NAME.sub("_", f"{stack.replace('.', '_')}__{name}")
    out, n = base, 1
    while out in taken:
        n += 1
        out = f"{base}_{n}"
    taken.add(out)
    return out


def convert(plan: dict[str, Any]) -> dict[str, Any]:
    """plan.json -> a Terraform plan JSON document of its Google Cloud resources, each to be created."""
    resources: list[dict[str, Any]] = []
    taken: set[str] = set()
    for stack in plan.get("stacks") or []:
        for r in stack.get("resources") or []:
            tf_type = terraform_type(str(r.get("type", "")))
            if tf_type is None:
                continue
            name = address_name(str(stack.get("name", "")), str(r.get("name", "")), taken)
            resources.append({"address": f"{tf_type}.{name}", "mode": "managed", "type": tf_type, "name": name,
                              "provider_name": PROVIDER, "schema_version": 0,
                              "values": attributes(r.get("inputs") or {}), "sensitive_values": {}})
    index = _index(resources)
    return {
        "format_version": FORMAT_VERSION,
        "terraform_version": TERRAFORM_VERSION,
        "planned_values": {"root_module": {"resources": resources}},
        "resource_changes": [{"address": r["address"], "mode": "managed", "type": r["type"], "name": r["name"],
                              "provider_name": PROVIDER,
                              "change": {"actions": ["create"], "before": None, "after": r["values"], "after_unknown": {}}}
                             for r in resources],
        "configuration": {
            "provider_config": {"google": {"name": "google", "full_name": PROVIDER}},
            "root_module": {"resources": [{"address": r["address"], "mode": "managed", "type": r["type"],
                                           "name": r["name"], "provider_config_key": "google",
                                           "expressions": _expressions(r, index), "schema_version": 0}
                                          for r in resources]},
        },
    }


def _index(resources: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """(Terraform type, identifying value) -> address, for the types REFERENCES point at."""
    out: dict[tuple[str, str], str] = {}
    for r in resources:
        for tf_type, attr in REFERENCES.values():
            value = r["values"].get(attr)
            if r["type"] == tf_type and isinstance(value, str):
                out.setdefault((tf_type, value), r["address"])
    return out


def _expressions(r: dict[str, Any], index: dict[tuple[str, str], str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, (tf_type, attr) in REFERENCES.items():
        value = r["values"].get(key)
        target = index.get((tf_type, value)) if isinstance(value, str) and r["type"] != tf_type else None
        if target is not None:
            out[key] = {"references": [f"{target}.{attr}", target]}
    return out
