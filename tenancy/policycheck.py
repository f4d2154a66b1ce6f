"""Evaluates the real policy pack (`policy.rules`) against recorded stacks, offline.

The same rule objects the CrossGuard pack assembles are called here with `ResourceValidationArgs` and
`StackValidationArgs` built from plan.json entries. Offline, secrets are masked, so the plain-text
secret rule can run (`secretsMasked`).
"""

from __future__ import annotations

from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    StackValidationArgs,
)

from policy import rules

OFFLINE_CONFIG = {"secretsMasked": True}


def _config(policy) -> dict[str, Any]:
    cfg: dict[str, Any] = {}
    schema = getattr(policy, "config_schema", None)
    for key, spec in ((schema.properties if schema else {}) or {}).items():
        if isinstance(spec, dict) and "default" in spec:
            cfg[key] = spec["default"]
    cfg.update({k: v for k, v in OFFLINE_CONFIG.items() if schema and k in (schema.properties or {})})
    return cfg


def _opts(r: dict[str, Any]) -> PolicyResourceOptions:
    o = r.get("options", {})
    return PolicyResourceOptions(bool(o.get("protect")), o.get("ignoreChanges", []), o.get("deleteBeforeReplace"),
                                 o.get("aliases", []), PolicyCustomTimeouts(0, 0, 0), o.get("additionalSecretOutputs", []),
                                 r.get("parent") or None)


def _level(policy) -> str:
    level = policy.enforcement_level or EnforcementLevel.ADVISORY
    return level.value


def evaluate_stack(stack: dict[str, Any]) -> list[dict[str, Any]]:
    """Violations of one plan.json stack entry: [{policy, urn, message, enforcement}]."""
    out: list[dict[str, Any]] = []
    customs = [r for r in stack["resources"] if r.get("custom")]
    for policy in rules.RESOURCE_POLICIES:
        cfg = _config(policy)
        for r in customs:
            args = ResourceValidationArgs(r["type"], r["inputs"], r["urn"], r["name"], _opts(r), None, cfg)

            def report(message: str, urn: str | None = None, _u=r["urn"], _p=policy) -> None:
                out.append({"policy": _p.name, "urn": urn or _u, "message": message, "enforcement": _level(_p)})

            policy.validate(args, report)
    resources = [PolicyResource(r["type"], r["inputs"], r["urn"], r["name"], _opts(r), None, None, [], {})
                 for r in customs]
    for policy in rules.STACK_POLICIES:
        args = StackValidationArgs(resources, _config(policy))

        def sreport(message: str, urn: str | None = None, _p=policy) -> None:
            out.append({"policy": _p.name, "urn": urn or "", "message": message, "enforcement": _level(_p)})

        policy.validate(args, sreport)
    return out


PLAN_POLICY = "no-shared-tenant-stores"


def evaluate_plan(stacks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Plan-wide rules (across stacks), reported against the stack holding the second owner."""
    out: list[dict[str, Any]] = []
    grouped = []
    for s in stacks:
        res = [PolicyResource(r["type"], r["inputs"], r["urn"], r["name"], _opts(r), None, None, [], {})
               for r in s["resources"] if r.get("custom")]
        grouped.append((s.get("tenant"), res))

    def report(message: str, urn: str | None = None) -> None:
        out.append({"policy": PLAN_POLICY, "urn": urn or "", "message": message, "enforcement": "mandatory"})

    rules.shared_across_tenants(grouped, report)
    return out


def stack_of_urn(urn: str) -> str:
    """`urn:pulumi:<stack>::<project>::...` -> stack."""
    return urn.split("::")[0].split(":", 2)[-1] if urn.startswith("urn:pulumi:") else ""
