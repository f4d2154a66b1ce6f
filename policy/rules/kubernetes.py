"""Kubernetes: workloads (resources, no host access), RBAC, NetworkPolicies and Services of tenant namespaces,
and each tenant namespace's guardrails (Pod Security, quota, LimitRange, default-deny) and placement."""

from __future__ import annotations

import re
from typing import Any

from pulumi_policy import ReportViolation, ResourceValidationArgs, StackValidationArgs

from .common import ANY_CIDR, get, is_tenant_ns, labelled_tenant, tenant_of_stack, walk

WORKLOAD_KINDS = {"Pod": ("spec",), "Deployment": ("spec", "template", "spec"), "StatefulSet": ("spec", "template", "spec"),
                  "DaemonSet": ("spec", "template", "spec"), "Job": ("spec", "template", "spec"),
                  "CronJob": ("spec", "jobTemplate", "spec", "template", "spec")}

RBAC = "kubernetes:rbac.authorization.k8s.io/v1:"
ESCALATION_VERBS = ("escalate", "bind", "impersonate")

EDGE_NAMESPACES = ("cert-manager", "ingress-nginx")   # the add-ons of a dedicated tenant's own cluster
PLACED_KINDS = set(WORKLOAD_KINDS) | {"ReplicaSet"}


def _tenantish_ns(ns: str | None) -> bool:
    return is_tenant_ns(ns) or ns == "pooled"


def k8s_containers_declare_resources(args: ResourceValidationArgs, report: ReportViolation) -> None:
    kind = args.props.get("kind")
    if not args.resource_type.startswith("kubernetes:") or kind not in WORKLOAD_KINDS:
        return
    pod = get(args.props, *WORKLOAD_KINDS[kind]) or {}
    for c in list(pod.get("containers") or []) + list(pod.get("initContainers") or []):
        res = c.get("resources") or {}
        if not res.get("requests") or not res.get("limits"):
            report(f"Kubernetes: container '{c.get('name')}' must declare resource requests and limits (quota accounting, noisy neighbours)")


def k8s_network_isolation(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """A tenant namespace's NetworkPolicies may not open it to every namespace or to any address."""
    if args.resource_type != "kubernetes:networking.k8s.io/v1:NetworkPolicy":
        return
    ns = get(args.props, "metadata", "namespace")
    if not _tenantish_ns(ns):
        return
    spec = args.props.get("spec") or {}
    for direction, peers_key in (("ingress", "from"), ("egress", "to")):
        for rule in spec.get(direction) or []:
            peers = (rule or {}).get(peers_key)
            if not peers:
                report(f"Kubernetes: NetworkPolicy {get(args.props, 'metadata', 'name')} in {ns} has an {direction} rule "
                       f"without '{peers_key}': it allows every pod of every namespace and every address")
                continue
            for peer in peers:
                sel = peer.get("namespaceSelector")
                if isinstance(sel, dict) and not sel.get("matchLabels") and not sel.get("matchExpressions"):
                    report(f"Kubernetes: NetworkPolicy {get(args.props, 'metadata', 'name')} in {ns} selects every "
                           f"namespace ({direction} namespaceSelector {{}}): other tenants' pods are let through")
                cidr = get(peer, "ipBlock", "cidr")
                if cidr in ANY_CIDR:
                    report(f"Kubernetes: NetworkPolicy {get(args.props, 'metadata', 'name')} in {ns} allows {direction} "
                           f"{'from' if direction == 'ingress' else 'to'} {cidr}: every address, other tenants' included")


def _tenant_of_subject(s: dict) -> str | None:
    """The tenant a RoleBinding subject stands for, in any of its forms, or None."""
    kind, name, ns = s.get("kind"), str(s.get("name") or ""), s.get("namespace")
    if kind == "ServiceAccount" and is_tenant_ns(ns):
        return ns[len("tenant-"):]
    if m := re.match(r"^system:serviceaccounts?:(tenant-[a-z0-9-]+?)(:|$)", name):
        return m[1][len("tenant-"):]
    if name.startswith("tenant-"):
        return name[len("tenant-"):]
    return None


def k8s_no_cluster_admin_for_tenants(args: ResourceValidationArgs, report: ReportViolation) -> None:
    t = args.resource_type
    p = args.props
    if t in (RBAC + "Role", RBAC + "ClusterRole"):
        _check_role_rules(args, report)
        return
    if t not in (RBAC + "ClusterRoleBinding", RBAC + "RoleBinding"):
        return
    subjects = p.get("subjects") or []
    ns = get(p, "metadata", "namespace")
    tenantish = [s for s in subjects if _is_tenant_subject(s)] or (subjects if is_tenant_ns(ns) else [])
    if not tenantish:
        return
    if t.endswith("ClusterRoleBinding"):
        report("Kubernetes: no ClusterRoleBinding may name a tenant subject: tenants act in their own namespace only")
    role = get(p, "roleRef", "name")
    if role in ("admin", "edit", "cluster-admin"):
        report(f"Kubernetes: the built-in '{role}' role must not be bound to tenants: it can edit quotas and NetworkPolicies")
    elif t.endswith("RoleBinding") and not t.endswith("ClusterRoleBinding") and get(p, "roleRef", "kind") == "ClusterRole":
        report(f"Kubernetes: RoleBinding in {ns} binds ClusterRole '{role}' to tenant subjects: bind a Role of the "
               "tenant's own namespace (a ClusterRole can widen under the tenant)")
    if t.endswith("ClusterRoleBinding") or not is_tenant_ns(ns):
        return
    owner = ns[len("tenant-"):]
    for s in subjects:
        other = _tenant_of_subject(s)
        if other and other != owner:
            report(f"Kubernetes: RoleBinding in {ns} grants {s.get('kind')} {s.get('name')} of tenant '{other}': "
                   "a tenant's subjects are bound only in its own namespace")
    stack_tenant = tenant_of_stack(args)
    if stack_tenant and stack_tenant != owner:
        report(f"Kubernetes: the stack of tenant '{stack_tenant}' places a RoleBinding in {ns}, tenant '{owner}''s namespace")


def _is_tenant_subject(s: dict) -> bool:
    return _tenant_of_subject(s) is not None


def _check_role_rules(args: ResourceValidationArgs, report: ReportViolation) -> None:
    ns = get(args.props, "metadata", "namespace")
    tenant_role = _tenantish_ns(ns) or bool(tenant_of_stack(args)) or bool(labelled_tenant(args))
    if not tenant_role:
        return
    kind = args.resource_type.split(":")[-1]
    name = get(args.props, "metadata", "name")
    if kind == "ClusterRole":
        report(f"Kubernetes: ClusterRole {name} is declared for a tenant: tenant rights are namespaced Roles only")
    for rule in args.props.get("rules") or []:
        for field_ in ("verbs", "resources", "apiGroups"):
            if "*" in (rule.get(field_) or []):
                report(f"Kubernetes: {kind} {name} in {ns} has a wildcard in {field_}: tenant Roles list what they allow")
        bad = [v for v in rule.get("verbs") or [] if v in ESCALATION_VERBS]
        if bad:
            report(f"Kubernetes: {kind} {name} in {ns} allows {', '.join(bad)}: a tenant could grant itself more")


def _pod_spec(props: dict) -> dict | None:
    kind = props.get("kind")
    if kind not in WORKLOAD_KINDS:
        return None
    return get(props, *WORKLOAD_KINDS[kind]) or {}


def k8s_no_host_access(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """Privileged or host-sharing pods escape to the node, where every tenant's pods run."""
    if not args.resource_type.startswith("kubernetes:"):
        return
    kind = args.props.get("kind")
    if args.resource_type == "kubernetes:helm.sh/v3:Release":
        for path, v in walk(args.props.get("values") or {}):
            if path[-1] in ("privileged", "hostNetwork", "hostPID", "hostIPC", "allowPrivilegeEscalation") and v is True:
                report(f"Kubernetes: Helm value {'.'.join(path)}=true gives the chart's pods the node's privileges")
            if "hostPath" in path[:-1] and path[-1] == "path":
                report(f"Kubernetes: Helm value {'.'.join(path)} mounts a node path into the chart's pods")
        return
    pod = _pod_spec(args.props)
    if pod is None:
        return
    name = get(args.props, "metadata", "name")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key) is True:
            report(f"Kubernetes: {kind} {name} sets {key}: it shares the node's namespaces with every tenant's pods")
    for vol in pod.get("volumes") or []:
        if vol.get("hostPath"):
            report(f"Kubernetes: {kind} {name} mounts hostPath {vol['hostPath'].get('path')} (volume {vol.get('name')}): "
                   "node files are shared by every tenant")
    for c in list(pod.get("containers") or []) + list(pod.get("initContainers") or []) + list(pod.get("ephemeralContainers") or []):
        sc = c.get("securityContext") or {}
        if sc.get("privileged") is True:
            report(f"Kubernetes: {kind} {name} runs container '{c.get('name')}' privileged: it controls the node")
        added = set(get(sc, "capabilities", "add", default=[]) or [])
        if added & {"SYS_ADMIN", "NET_ADMIN", "ALL", "SYS_PTRACE", "NET_RAW"}:
            report(f"Kubernetes: {kind} {name} container '{c.get('name')}' adds capabilities {', '.join(sorted(added))}")


def k8s_no_exposed_services(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != "kubernetes:core/v1:Service":
        return
    ns = get(args.props, "metadata", "namespace")
    kind = get(args.props, "spec", "type") or "ClusterIP"
    if (is_tenant_ns(ns) or ns == "pooled") and kind in ("NodePort", "LoadBalancer"):
        report(f"Kubernetes: a {kind} service in tenant namespace {ns} bypasses the shared ingress and its limits")
    if get(args.props, "spec", "externalIPs"):
        report(f"Kubernetes: service {get(args.props, 'metadata', 'name')} in {ns} sets externalIPs "
               f"{', '.join(get(args.props, 'spec', 'externalIPs'))}: it can intercept other tenants' traffic to those "
               "addresses (CVE-2020-8554)")


def tenant_namespace_placement(args: StackValidationArgs, report: ReportViolation) -> None:
    """A tenant's namespaces are named tenant-<id>; its workloads run only there (where the guardrails are).

    In a stack that owns its GKE cluster (dedicated) the edge add-ons' namespaces are allowed as well.
    """
    tenant = None
    own_cluster = False
    for r in args.resources:
        tenant = tenant or tenant_of_stack(r)
        own_cluster = own_cluster or r.resource_type == "gcp:container/cluster:Cluster"
    for r in args.resources:
        t, p = r.resource_type, r.props
        owner = tenant or labelled_tenant(r)
        if not owner:
            continue
        if t == "kubernetes:core/v1:Namespace":
            name = get(p, "metadata", "name")
            if name != f"tenant-{owner}" and not (own_cluster and name in EDGE_NAMESPACES):
                report(f"namespace {name} belongs to tenant '{owner}' but is not named tenant-{owner}: it escapes "
                       "the guardrails every tenant namespace gets (PSA restricted, quota, default-deny)", r.urn)
            continue
        if t == "kubernetes:helm.sh/v3:Release":
            ns, kind, name = p.get("namespace"), "Helm release", p.get("name")
        elif t.startswith("kubernetes:") and p.get("kind") in PLACED_KINDS:
            ns, kind, name = get(p, "metadata", "namespace"), p.get("kind"), get(p, "metadata", "name")
        else:
            continue
        if ns != f"tenant-{owner}" and not (own_cluster and ns in EDGE_NAMESPACES):
            report(f"{kind} {name} of tenant '{owner}' runs in namespace {ns or '(none)'}, not tenant-{owner}: "
                   "outside the tenant's guardrails", r.urn)


def tenant_namespace_guardrails(args: StackValidationArgs, report: ReportViolation) -> None:
    """Every tenant namespace has quota (cpu, memory, storage, object counts), LimitRange, default-deny, PSA."""
    by_ns: dict[str, dict[str, list]] = {}
    namespaces: dict[str, Any] = {}
    stack_tenant = next((tid for tid in map(tenant_of_stack, args.resources) if tid), None)
    own_cluster = any(r.resource_type == "gcp:container/cluster:Cluster" for r in args.resources)
    for r in args.resources:
        t = r.resource_type
        p = r.props
        if t == "kubernetes:core/v1:Namespace":
            name = get(p, "metadata", "name")
            # a tenant's namespace by name, or by owner (whatever its name), but not its own cluster's add-ons
            owned = (stack_tenant or labelled_tenant(r)) and not (own_cluster and name in EDGE_NAMESPACES)
            if is_tenant_ns(name) or name == "pooled" or owned:
                namespaces[name] = r
            continue
        ns = get(p, "metadata", "namespace")
        if ns:
            by_ns.setdefault(ns, {}).setdefault(t, []).append(p)
    for name, r in namespaces.items():
        labels = get(r.props, "metadata", "labels", default={})
        if labels.get("pod-security.kubernetes.io/enforce") != "restricted":
            report(f"namespace {name}: Pod Security must enforce 'restricted'", r.urn)
        objs = by_ns.get(name, {})
        quotas = objs.get("kubernetes:core/v1:ResourceQuota", [])
        hard: dict = {}
        for q in quotas:
            hard.update(get(q, "spec", "hard", default={}))
        needed = ("requests.cpu", "requests.memory", "requests.storage", "pods", "persistentvolumeclaims",
                  "services.loadbalancers", "services.nodeports")
        missing = [k for k in needed if k not in hard]
        if missing:
            report(f"namespace {name}: ResourceQuota must cover {', '.join(missing)}", r.urn)
        if not objs.get("kubernetes:core/v1:LimitRange"):
            report(f"namespace {name}: a LimitRange must give containers default requests and limits", r.urn)
        deny = [np for np in objs.get("kubernetes:networking.k8s.io/v1:NetworkPolicy", [])
                if get(np, "spec", "podSelector") == {} and set(get(np, "spec", "policyTypes", default=[])) >= {"Ingress", "Egress"}
                and not get(np, "spec", "ingress") and not get(np, "spec", "egress")]
        if not deny:
            report(f"namespace {name}: a default-deny NetworkPolicy (ingress and egress) must exist", r.urn)
