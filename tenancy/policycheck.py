"""Evaluates the real policy pack (`policy.rules`) against recorded stacks, offline.

The same rule objects the CrossGuard pack assembles are called here with `ResourceValidationArgs` and
`StackValidationArgs` built from plan.json entries. Offline, secrets are masked, so the plain-text
secret rule can run (`secretsMasked`).

Every resource of a stack is checked, whatever its `custom` flag says (a hand-edited plan without the
flag is not a way around the pack), each with its provider so rules can tell the project and cluster it
lands in. Rules that need other stacks' owners run once over the whole plan (`evaluate_plan`).
"""

from __future__ import annotations

from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyProviderResource,
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


def _providers(resources: list[dict[str, Any]]) -> dict[str, PolicyProviderResource]:
    return {r["urn"]: PolicyProviderResource(r["type"], r.get("inputs") or {}, r["urn"], r.get("name", ""))
            for r in resources if str(r.get("type", "")).startswith("pulumi:providers:")}


def _provider_of(r: dict[str, Any], providers: dict[str, PolicyProviderResource]) -> PolicyProviderResource | None:
    ref = str((r.get("options") or {}).get("provider") or "")
    return providers.get(ref) or providers.get(ref.rpartition("::")[0])  # "<urn>::<id>"


def _policy_resources(stack: dict[str, Any]) -> list[PolicyResource]:
    resources = stack["resources"]
    providers = _providers(resources)
    return [PolicyResource(r["type"], r.get("inputs") or {}, r["urn"], r.get("name", ""), _opts(r), _provider_of(r, providers),
                           None, [], {}) for r in resources]


def evaluate_stack(stack: dict[str, Any]) -> list[dict[str, Any]]:
    """Violations of one plan.json stack entry: [{policy, urn, message, enforcement}]."""
    out: list[dict[str, Any]] = []
    resources = _policy_resources(stack)
    for policy in rules.RESOURCE_POLICIES:
        cfg = _config(policy)
        for r in resources:
            args = ResourceValidationArgs(r.resource_type, r.props, r.urn, r.name, r.opts, r.provider, cfg)

            def report(message: str, urn: str | None = None, _u=r.urn, _p=policy) -> None:
                out.append({"policy": _p.name, "urn": urn or _u, "message": message, "enforcement": _level(_p)})

            policy.validate(args, report)
    for policy in rules.STACK_POLICIES:
        if policy.name in rules.PLAN_WIDE_FORMS:
            continue  # evaluated once over the whole plan, with every stack's owners
        args = StackValidationArgs(resources, _config(policy))

        def sreport(message: str, urn: str | None = None, _p=policy) -> None:
            out.append({"policy": _p.name, "urn": urn or "", "message": message, "enforcement": _level(_p)})

        policy.validate(args, sreport)
    return out


def evaluate_plan(stacks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Plan-wide rules (across stacks), each violation reported against the resource that breaks it."""
    out: list[dict[str, Any]] = []
    grouped = [(s.get("tenant"), _policy_resources(s)) for s in stacks]
    by_name = {p.name: p for p in rules.STACK_POLICIES}
    checks = [(name, fn, None) for name, fn in rules.PLAN_POLICIES]
    checks += [(name, fn, _config(by_name[name])) for name, fn in rules.PLAN_WIDE_FORMS.items()]
    for name, fn, cfg in checks:
        def report(message: str, urn: str | None = None, _n=name) -> None:
            out.append({"policy": _n, "urn": urn or "", "message": message, "enforcement": "mandatory"})

        if cfg is None:
            fn(grouped, report)
        else:
            fn(grouped, report, cfg)
    return out


def stack_of_urn(urn: str) -> str:
    """`urn:pulumi:<stack>::<project>::...` -> stack."""
    return urn.split("::")[0].split(":", 2)[-1] if urn.startswith("urn:pulumi:") else ""
