"""Evaluates the real policy pack (`policy.rules`) against recorded stacks, offline.

The same rule objects the CrossGuard pack assembles are called here with `ResourceValidationArgs` and
`StackValidationArgs` built from plan.json entries. Offline, secrets are masked, so the plain-text
secret rule can run (`secretsMasked`).

Every resource of a stack is checked, whatever its `custom` flag says (a hand-edited plan without the
flag is not a way around the pack), each with its provider so rules can tell the project and cluster it
lands in. Rules that need other stacks' owners run once over the whole plan (`evaluate_plan`).
"""

from __future__ import annotations

import marshal
from pathlib import Path
from typing import Any, Iterable, Iterator

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


class MalformedPlan(ValueError):
    """A plan whose shape the policy pack cannot read: where, and what is wrong, in one line."""


# What a rule raises when an input it reads has another shape than a plan written by `tenancy plan` gives it.
SHAPE_ERRORS = (AttributeError, TypeError, KeyError, IndexError, ValueError)


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

            try:
                policy.validate(args, report)
            except SHAPE_ERRORS as exc:
                raise MalformedPlan(f"resource {r.urn}: the policy '{policy.name}' cannot read its inputs "
                                    f"({_one_line(exc)})") from exc
    for policy in rules.STACK_POLICIES:
        if policy.name in rules.PLAN_WIDE_FORMS:
            continue  # evaluated once over the whole plan, with every stack's owners
        args = StackValidationArgs(resources, _config(policy))

        def sreport(message: str, urn: str | None = None, _p=policy) -> None:
            out.append({"policy": _p.name, "urn": urn or "", "message": message, "enforcement": _level(_p)})

        try:
            policy.validate(args, sreport)
        except SHAPE_ERRORS as exc:
            raise MalformedPlan(f"stack {stack.get('name')}: the policy '{policy.name}' cannot read its resources "
                                f"({_one_line(exc)})") from exc
    return out


def resource_violations(resource_type: str, props: dict[str, Any], urn: str) -> list[dict[str, Any]]:
    """The pack's resource rules on one object that no stack declares (an operator Stack object the engine
    creates): [{policy, urn, message, enforcement}]."""
    name = urn.rsplit("::", 1)[-1]
    return evaluate_stack({"name": stack_of_urn(urn), "resources": [{"urn": urn, "type": resource_type, "name": name,
                                                                       "inputs": props}]})


# Plan-wide forms that look at one stack at a time: a streaming plan evaluates them where the stack's resources are.
PER_STACK_PLAN_FORMS = ("object-and-stack-size",)


def _plan_checks(per_stack: bool) -> list[tuple[str, Any, dict[str, Any] | None]]:
    by_name = {p.name: p for p in rules.STACK_POLICIES}
    checks = [(name, fn, None) for name, fn in rules.PLAN_POLICIES]
    checks += [(name, fn, _config(by_name[name])) for name, fn in rules.PLAN_WIDE_FORMS.items()]
    return [c for c in checks if (c[0] in PER_STACK_PLAN_FORMS) == per_stack]


def _run_checks(checks, grouped: list[tuple[str | None, list[PolicyResource]]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name, fn, cfg in checks:
        def report(message: str, urn: str | None = None, _n=name) -> None:
            out.append({"policy": _n, "urn": urn or "", "message": message, "enforcement": "mandatory"})

        try:
            if cfg is None:
                fn(grouped, report)
            else:
                fn(grouped, report, cfg)
        except SHAPE_ERRORS as exc:
            raise MalformedPlan(f"the plan-wide policy '{name}' cannot read the plan ({_one_line(exc)})") from exc
    return out


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:160]}"


class PlanStacks:
    """A plan's stacks as the plan-wide rules read them, `(tenant, PolicyResources)` each, built again on every
    pass from the stacks' entries or views, in memory or in the files a streaming plan spilled them to: one stack
    at a time is in memory, whatever the fleet. The rules' ownership (policy.rules.build_ownership) is built
    once per plan and kept here."""

    def __init__(self, stacks: Iterable[dict[str, Any] | Path]):
        self._stacks = list(stacks)
        self.ownership = None

    def __iter__(self) -> Iterator[tuple[str | None, list[PolicyResource]]]:
        for s in self._stacks:
            stack = load_view(s) if isinstance(s, Path) else s
            yield stack.get("tenant"), _policy_resources(stack)


def evaluate_cross_stack(stacks: Iterable[dict[str, Any] | Path]) -> list[dict[str, Any]]:
    """The plan-wide rules that need other stacks (owners, physical names, hosts), over plan.json entries or
    their `plan_view`s (or the files a view was spilled to): the same violations either way."""
    return _run_checks(_plan_checks(per_stack=False), PlanStacks(stacks))


def evaluate_stack_plan_forms(stack: dict[str, Any]) -> list[dict[str, Any]]:
    """The plan-wide forms that only ever look at one stack (its objects' and its own size), for that stack."""
    return _run_checks(_plan_checks(per_stack=True), [(stack.get("tenant"), _policy_resources(stack))])


def evaluate_plan(stacks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Plan-wide rules (across stacks), each violation reported against the resource that breaks it."""
    return evaluate_cross_stack(stacks) + [v for s in stacks for v in evaluate_stack_plan_forms(s)]


# ------------------------------------------------------------------------------------------ plan shape

# Inputs the rules read by name on any resource, and the shape a plan written by `tenancy plan` gives them.
# A whole value may be masked or unknown ("[secret]", "[unknown]").
STRING_INPUTS = ("name", "namespace", "kind", "apiVersion", "project", "secretId", "accountId", "instance", "service",
                 "network", "location", "bucket", "member", "role")
MAPPING_INPUTS = ("labels", "userLabels", "resourceLabels", "metadata", "spec", "data", "stringData", "binaryData",
                  "settings", "values")
LIST_INPUTS = ("members", "rules")
OPTION_LISTS = ("aliases", "dependsOn", "ignoreChanges", "additionalSecretOutputs")
MARKERS = ("[secret]", "[unknown]")


def _type_name(v: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(v), "a number" if isinstance(v, (int, float)) else type(v).__name__)


def plan_problem(data: Any) -> str | None:
    """The first thing in a plan.json document that the policy pack cannot read, as `<where>: <what>`; None when
    its shape is a plan's (`{"stacks": [{"name", "tenant", "resources": [{"urn", "type", "name", "parent",
    "inputs", "options"}]}]}`, DESIGN.md). Values of inputs are checked where rules read them by name."""
    if not isinstance(data, dict):
        return f"expected a plan (a mapping with a 'stacks' list), not {_type_name(data)}"
    stacks = data.get("stacks")
    if not isinstance(stacks, list):
        return "expected a plan (a mapping with a 'stacks' list); 'stacks' is " + \
            ("missing" if "stacks" not in data else f"{_type_name(stacks)}")
    for i, stack in enumerate(stacks):
        where = f"stacks[{i}]"
        if not isinstance(stack, dict):
            return f"{where}: a stack must be a mapping, not {_type_name(stack)}"
        for key in ("name", "tenant"):
            if stack.get(key) is not None and not isinstance(stack[key], str):
                return f"{where}: '{key}' must be a string, not {_type_name(stack[key])}"
        if stack.get("name"):
            where = f"{where} ({stack['name']})"
        resources = stack.get("resources")
        if "resources" not in stack:
            return f"{where}: 'resources' is missing"
        if not isinstance(resources, list):
            return f"{where}: 'resources' must be a list, not {_type_name(resources)}"
        for j, r in enumerate(resources):
            problem = _resource_problem(r)
            if problem:
                urn = f" ({r['urn']})" if isinstance(r, dict) and isinstance(r.get("urn"), str) and r["urn"] else ""
                return f"{where}.resources[{j}]{urn}: {problem}"
    return None


def _resource_problem(r: Any) -> str | None:
    if not isinstance(r, dict):
        return f"a resource must be a mapping, not {_type_name(r)}"
    for key in ("urn", "type"):
        if key not in r:
            return f"'{key}' is missing"
        if not isinstance(r[key], str) or not r[key]:
            return f"'{key}' must be a non-empty string, not {_type_name(r[key]) if r[key] != '' else 'an empty one'}"
    for key in ("name", "parent"):
        if r.get(key) is not None and not isinstance(r[key], str):
            return f"'{key}' must be a string, not {_type_name(r[key])}"
    inputs, options = r.get("inputs"), r.get("options")
    if inputs is not None and not isinstance(inputs, dict):
        return f"'inputs' must be a mapping, not {_type_name(inputs)}"
    if options is not None and not isinstance(options, dict):
        return f"'options' must be a mapping, not {_type_name(options)}"
    for key in OPTION_LISTS:
        if (options or {}).get(key) is not None and not isinstance(options[key], list):
            return f"'options.{key}' must be a list, not {_type_name(options[key])}"
    if (options or {}).get("provider") is not None and not isinstance(options["provider"], str):
        return f"'options.provider' must be a string, not {_type_name(options['provider'])}"
    for key, value in (inputs or {}).items():
        expected = (str if key in STRING_INPUTS else dict if key in MAPPING_INPUTS else list if key in LIST_INPUTS
                    else None)
        if expected is None or value is None or isinstance(value, expected) or value in MARKERS:
            continue
        return f"'inputs.{key}' must be {_type_name(expected())}, not {_type_name(value)}"
    return None


# What the cross-stack rules read of a resource (policy/rules/: ownership.build_ownership, iam.iam_grants,
# isolation's ingress hosts and shared_across_tenants, common.labels_of): type, URN, parent, provider; every input of
# providers, Google Cloud resources and deployers (their scope); of a Kubernetes resource its apiVersion, kind, name, namespace (Helm
# releases), metadata name, namespace and labels, and an Ingress's rules and TLS hosts; of anything else its
# labels. A tenant stack's view is a small part of it (no manifest bodies, ConfigMap data or Helm values).
LABEL_KEYS = ("userLabels", "resourceLabels", "labels")


def _view_inputs(t: str, p: dict[str, Any]) -> dict[str, Any] | None:
    if t.startswith(("gcp:", "pulumi:providers:")) or t == rules.DEPLOYER_TYPE:
        return p
    if t.startswith("kubernetes:"):
        out = {k: p[k] for k in ("apiVersion", "kind", "name", "namespace", *LABEL_KEYS) if k in p}
        if "metadata" in p:
            meta = p["metadata"]
            out["metadata"] = {k: meta[k] for k in ("name", "namespace", "labels") if k in meta} \
                if isinstance(meta, dict) else meta
        spec = p.get("spec")
        if t == "kubernetes:networking.k8s.io/v1:Ingress" and isinstance(spec, dict):
            out["spec"] = {k: spec[k] for k in ("rules", "tls") if k in spec}
        return out
    labels = {k: p[k] for k in LABEL_KEYS if k in p}
    return labels or None


def plan_view(stack: dict[str, Any]) -> dict[str, Any]:
    """The part of a plan.json stack entry that `evaluate_cross_stack` reads (resources it cannot use left out)."""
    resources = []
    for r in stack["resources"]:
        inputs = _view_inputs(str(r.get("type", "")), r.get("inputs") or {})
        if inputs is None:
            continue
        provider = (r.get("options") or {}).get("provider")
        resources.append({"urn": r["urn"], "type": r["type"], "name": r.get("name", ""), "parent": r.get("parent"),
                          "inputs": inputs, "options": {"provider": provider} if provider else {}})
    return {"name": stack.get("name"), "tenant": stack.get("tenant"), "resources": resources}


def save_view(path: Path, view: dict[str, Any]) -> Path:
    """A plan view kept on disk until the plan-wide rules read it (`load_view`). marshal: the view is plain data,
    written and read back at a fraction of JSON's cost; the file never outlives the plan that wrote it."""
    path.write_bytes(marshal.dumps(view))
    return path


def load_view(path: Path) -> dict[str, Any]:
    return marshal.loads(path.read_bytes())


def stack_of_urn(urn: str) -> str:
    """`urn:pulumi:<stack>::<project>::...` -> stack."""
    return urn.split("::")[0].split(":", 2)[-1] if urn.startswith("urn:pulumi:") else ""
