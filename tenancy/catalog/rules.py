"""The rules of the second pass, which need the whole file: each tenant's plan exists, its features are allowed by
the plan, its limit overrides stay within the plan's bounds, settings only a dedicated plan has (a custom domain,
a project of its own) are on one; ids, subdomains and custom domains are unique, no two tenants share a derived
name or a GCP project. Each tenant comes out with its plan resolved."""

from __future__ import annotations

import difflib
from typing import Any, Mapping

from pydantic import ValidationError

from tenancy import naming
from tenancy.catalog.models import PLACEMENT_KEYS, Tenant, TenantSpec
from tenancy.catalog.plans import Limits, Model, Plan
from tenancy.catalog.problems import Who
from tenancy.catalog.reader import line_for
from tenancy.catalog.values import echo
from tenancy.errors import Problem

_PLACEHOLDERS = {"id": "placeholder", "name": "placeholder", "admin_email": "placeholder@example.com"}


def partial_spec(entry: Any, exc: ValidationError) -> TenantSpec | None:
    """The entry with its invalid fields replaced, so the rules of pass 2 still report on the rest."""
    if not isinstance(entry, dict):
        return None
    broken = {err["loc"][0] for err in exc.errors() if err["loc"]}
    if "plan" in broken or not isinstance(entry.get("plan"), str):
        return None
    subset = {k: v for k, v in entry.items() if k not in broken and k in TenantSpec.model_fields}
    for key, value in _PLACEHOLDERS.items():
        subset.setdefault(key, value)
    try:
        return TenantSpec.model_validate(subset)
    except ValidationError:
        return None


def apply_rules(tenants_raw: list, specs: list[tuple[int, TenantSpec]], plans: Mapping[str, Plan], path: str,
                lines: Mapping[tuple, int], who: Who, problems: list[Problem]) -> list[Tenant | None]:
    """Pass 2: the rules that need the whole file. One Tenant per spec, in their order (None where the plan is
    unknown); every problem found goes to `problems`. Uniqueness is checked on the entries as written
    (`tenants_raw`), the others on the specs."""
    # value -> the position of the first entry with it (its line is looked up only for a message).
    seen: dict[str, dict[str, int]] = {"id": {}, "subdomain": {}, "custom_domain": {}}
    # Uniqueness is checked on every readable value, even in entries that failed pass 1.
    for i, entry in enumerate(tenants_raw):
        if not isinstance(entry, dict):
            continue
        values = {
            "id": entry.get("id"),
            "subdomain": entry.get("subdomain") or entry.get("id"),
            "custom_domain": entry.get("custom_domain"),
        }
        for key_name, value in values.items():
            if not isinstance(value, str):
                continue
            key = value.lower()
            loc = ("tenants", i, key_name if key_name in entry else "id")
            if key in seen[key_name]:
                if key_name == "subdomain" and "subdomain" not in entry and key in seen["id"]:
                    continue  # a duplicate id already says it; its default subdomain follows from it
                first = f"the tenant at line {line_for(lines, ('tenants', seen[key_name][key]))}"
                problems.append(Problem(path, line_for(lines, loc), who.tenant_label(i), key_name,
                                        f"{echo(value)} is already used by {first}; each tenant needs its own "
                                        f"{key_name.replace('_', ' ')}"))
            else:
                seen[key_name][key] = i
    tenants: list[Tenant | None] = []
    plan_limits: dict[str, tuple[dict[str, float], dict[str, float]]] = {}
    for i, spec in specs:
        tenants.append(_resolve(spec, i, plans, path, lines, who, problems, plan_limits))
    problems.extend(_name_collisions([t for t in tenants if t is not None], path, lines, specs))
    problems.extend(_shared_projects(specs, path, lines))
    return tenants


def _name_collisions(tenants: list[Tenant], path: str, lines: Mapping[tuple, int],
                     specs: list[tuple[int, TenantSpec]]) -> list[Problem]:
    """No physical name of one tenant may equal another's. Shortened names carry a hash; this makes a
    hash collision (or any overlap between derivations) an error rather than two tenants on one resource."""
    line_of: dict[str, int | None] | None = None  # built on the first collision: most catalogues have none
    problems: list[Problem] = []
    owners: dict[tuple[str, str], str] = {}
    for t in tenants:
        if t.id == _PLACEHOLDERS["id"]:
            continue
        names = naming.tenant_names("dev", t.id, tuple(t.plan.databases))
        if owners.keys().isdisjoint(names):
            # No name taken yet (the common case): every one becomes this tenant's, as setdefault below would.
            owners.update(dict.fromkeys(names, t.id))
            continue
        reported: set[str] = set()
        for key in names:
            owner = owners.setdefault(key, t.id)
            if owner != t.id and owner not in reported:
                reported.add(owner)
                if line_of is None:
                    line_of = {spec.id: line_for(lines, ("tenants", i, "id")) for i, spec in specs}
                problems.append(Problem(path, line_of.get(t.id), f"tenant '{t.id}'", "id",
                                        f"its {key[0]} '{key[1]}' collides with tenant '{owner}'; choose a different id"))
    return problems


def _shared_projects(specs: list[tuple[int, TenantSpec]], path: str, lines: Mapping[tuple, int]) -> list[Problem]:
    """Two dedicated tenants in one GCP project would share its IAM, quotas and log sinks: refuse it."""
    problems: list[Problem] = []
    owners: dict[str, str] = {}
    for i, spec in specs:
        project = spec.dedicated.project.id if spec.dedicated and spec.dedicated.project else None
        if project is None or spec.id == _PLACEHOLDERS["id"]:
            continue
        owner = owners.setdefault(project, spec.id)
        if owner != spec.id:
            problems.append(Problem(path, line_for(lines, ("tenants", i, "dedicated", "project", "id")), f"tenant '{spec.id}'",
                                    "dedicated.project.id", f"project '{project}' is also the project of tenant '{owner}'; "
                                    f"tenants '{owner}' and '{spec.id}' each need a project of their own"))
    return problems


def _resolve(spec: TenantSpec, index: int, plans: Mapping[str, Plan], path: str, lines: Mapping[tuple, int],
             who: Who, problems: list[Problem],
             plan_limits: dict[str, tuple[dict[str, float], dict[str, float]]]) -> Tenant | None:
    """The tenant with its plan resolved, or None when the plan is unknown; the rules' problems go to `problems`.
    `plan_limits` holds each plan's limits and bounds as dicts, made once per plan rather than per tenant."""

    def bad(field: str, message: str) -> None:
        problems.append(Problem(path, line_for(lines, ("tenants", index, field.split(".")[0])), who.tenant_label(index),
                                field, message))

    plan = plans.get(spec.plan)
    if plan is None:
        close = difflib.get_close_matches(spec.plan, sorted(plans), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        bad("plan", f"unknown plan '{spec.plan}'; {hint}use one of {', '.join(sorted(plans))} or declare it under 'plans'")
        return None
    if spec.custom_domain and plan.model is not Model.DEDICATED:
        bad("custom_domain", f"custom domains need a dedicated plan, and '{spec.plan}' is {plan.model.value}; remove custom_domain or move the tenant to a dedicated plan")
    if spec.dedicated is not None and plan.model is not Model.DEDICATED:
        bad("dedicated", f"dedicated settings apply to dedicated plans only, and '{spec.plan}' is {plan.model.value}; remove the 'dedicated' block")
    if spec.kms_key and plan.model is Model.POOLED:
        bad("kms_key", "a pooled plan shares the platform bucket; remove kms_key or move the tenant to a namespace or dedicated plan")
    if spec.operator_group and plan.model is Model.POOLED:
        bad("operator_group", "a pooled plan has no namespace or cluster of the tenant's own for operators to run; "
            "remove operator_group or move the tenant to a namespace or dedicated plan")
    if spec.placement is not None:
        allowed = PLACEMENT_KEYS[plan.model]
        for key in spec.placement.pins():
            if key not in allowed:
                fix = (f"pin {' or '.join(allowed)} instead" if allowed else
                       "a dedicated tenant has its own cluster and project; remove 'placement'")
                bad(f"placement.{key}", f"plan '{spec.plan}' is {plan.model.value}, and {key} applies to "
                    f"{'pooled' if key == 'pool_shard' else 'namespace'} plans only; {fix}")
    if spec.features is not None:
        extra = [f.value for f in spec.features if f not in plan.features]
        if extra:
            bad("features", f"plan '{spec.plan}' does not allow {', '.join(extra)}; allowed: {', '.join(f.value for f in plan.features)}")
    if spec.plan not in plan_limits:
        plan_limits[spec.plan] = (plan.limits.model_dump(), plan.bounds.model_dump())
    plan_values, bounds = plan_limits[spec.plan]
    # No override written (most tenants): nothing to check, and the plan's own (frozen) limits are the tenant's.
    overrides = spec.limits.set_values() if spec.limits.model_fields_set else {}
    limits = dict(plan_values)
    for key, value in overrides.items():
        if value > bounds[key]:
            bad(f"limits.{key}", f"{value:g} exceeds plan '{spec.plan}' maximum of {bounds[key]:g}; lower it or choose a larger plan")
        else:
            limits[key] = value
    features = spec.features if spec.features is not None else plan.features
    return Tenant(
        id=spec.id, name=spec.name, plan_name=spec.plan, plan=plan, state=spec.state,
        subdomain=spec.subdomain or spec.id, custom_domain=spec.custom_domain, admin_email=spec.admin_email,
        region=spec.region, features=tuple(features), limits=Limits(**limits) if overrides else plan.limits,
        kms_key=spec.kms_key, dedicated=spec.dedicated, limit_overrides=dict(overrides), explicit_features=spec.features,
        operator_group=spec.operator_group, placement=spec.placement,
    )
