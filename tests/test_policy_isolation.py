"""Isolation breaks planted in a deep copy of the real plan: each must be caught (rule and message), and
the unbroken copy must pass the same rule.

The breaks are built on `copy.deepcopy` of the committed catalogue's plan.json stacks, so the tests
exercise the owners, projects, clusters and names the real stacks produce.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

from policy import rules
from tenancy.policycheck import evaluate_cross_stack, evaluate_plan, evaluate_stack, plan_view
from tests.conftest import ROOT, stack_of

NEW_RULES = ("iam-tenant-scope", "iam-condition-exact", "k8s-network-isolation", "k8s-tenant-rbac", "k8s-no-host-access",
             "k8s-no-exposed-services", "no-credentials-in-config", "tenant-namespace-placement",
             "tenant-namespace-guardrails", "gke-cluster-hardened", "unique-physical-names", "ingress-host-claims")


def _exact_conditions(data: dict) -> dict:
    """Firestore grants as the fixed stacks write them (`==` or a '/'-ended prefix), whatever the tree holds."""
    for s in data["stacks"]:
        for r in s["resources"]:
            cond = r["inputs"].get("condition")
            if isinstance(cond, dict) and "startsWith(" in cond.get("expression", ""):
                path = cond["expression"].split('"')[1].rstrip("/")
                cond["expression"] = f'resource.name == "{path}" || resource.name.startsWith("{path}/")'
    return data


@pytest.fixture
def plan(sample_plan):
    return _exact_conditions(copy.deepcopy(sample_plan[1]))


def found(data: dict, policy: str) -> list[tuple[str, str]]:
    """(urn, message) of every violation of `policy`, per stack and plan-wide, as `tenancy plan` reports them."""
    assert evaluate_cross_stack([plan_view(s) for s in data["stacks"]]) == evaluate_cross_stack(data["stacks"]), \
        "what a streaming plan keeps of each stack (plan_view) gives the cross-stack rules the same violations"
    out = [v for s in data["stacks"] for v in evaluate_stack(s)] + evaluate_plan(data["stacks"])
    return [(v["urn"], v["message"]) for v in out if v["policy"] == policy]


def res(data: dict, stack: str, name: str) -> dict:
    for r in stack_of(data, stack)["resources"]:
        if r["name"] == name:
            return r
    raise AssertionError(f"no resource {name} in {stack}")


def add(data: dict, stack: str, type_: str, name: str, inputs: dict, like: str | None = None) -> dict:
    """A new resource in `stack`, with the provider of resource `like` (so it lands in the same project/cluster)."""
    s = stack_of(data, stack)
    options = copy.deepcopy(res(data, stack, like)["options"]) if like else {"provider": ""}
    r = {"urn": f"urn:pulumi:{stack}::tenancy::pulumi:pulumi:Stack${type_}::{name}", "type": type_, "name": name,
         "parent": "", "custom": True, "inputs": inputs, "options": options}
    s["resources"].append(r)
    return r


def sa(data: dict, stack: str, name: str = "app-gsa") -> str:
    i = res(data, stack, name)["inputs"]
    return f"serviceAccount:{i['accountId']}@{i['project']}.iam.gserviceaccount.com"


PROJECT = "tenancy-dev-482913"


def test_clean_plan_passes_every_isolation_rule(plan):
    for policy in NEW_RULES:
        assert found(plan, policy) == [], policy
    assert {p.name for p in rules.ALL_POLICIES} | {n for n, _ in rules.PLAN_POLICIES} >= set(NEW_RULES)


# ---------------------------------------------------------------------------------------------- IAM

def test_tenant_service_account_on_another_tenants_bucket(plan):
    grant = res(plan, "dev.stark", "uploads-storage-objectAdmin")
    grant["inputs"]["bucket"] = "dev-wayne-uploads"
    member = sa(plan, "dev.stark")
    assert found(plan, "iam-tenant-scope") == [
        (grant["urn"], f"IAM: tenant 'stark''s principal {member} is granted roles/storage.objectAdmin on bucket "
                       "dev-wayne-uploads, which is tenant 'wayne''s: a tenant's principals are granted only on that "
                       "tenant's own resources"),
        (grant["urn"], f"IAM: the stack of tenant 'stark' manages a grant of {member} on bucket dev-wayne-uploads, which "
                       "involves tenant(s) wayne: a tenant stack touches only its own tenant"),
    ]


# A grant from any platform-side stack: the global stack's, or a pool shard's (whose own grants reach the pooled bucket).
@pytest.mark.parametrize("stack,like", [("dev", "access-logs-storage-objectCreator"),
                                        ("dev.pool-1", "pooled-bucket-storage-objectAdmin")])
def test_binding_members_user_and_group_on_tenant_data_from_a_platform_stack(plan, stack, like):
    b = add(plan, stack, "gcp:storage/bucketIAMBinding:BucketIAMBinding", "audit-readers",
            {"bucket": "dev-stark-uploads", "role": "roles/storage.objectViewer",
             "members": ["user:eve@example.com", "group:support@saas-example.com"]}, like=like)
    assert found(plan, "iam-tenant-scope") == [
        (b["urn"], f"IAM: {kind} {m} (not declared in the plan) is granted roles/storage.objectViewer on bucket "
                   "dev-stark-uploads, which is tenant 'stark''s: only the tenant's own principals and the platform's "
                   "known principals (Google service agents, the pack's platformPrincipals) may reach tenant data")
        for kind, m in (("user", "user:eve@example.com"), ("group", "group:support@saas-example.com"))]


def test_policy_data_json_on_another_tenants_secret(plan):
    member = sa(plan, "dev.stark")
    p = add(plan, "dev.pool-1", "gcp:secretmanager/secretIamPolicy:SecretIamPolicy", "wayne-secret-policy",
            {"project": PROJECT, "secretId": "dev-wayne-postgres-1-tenancy-app",
             "policyData": json.dumps({"bindings": [{"role": "roles/secretmanager.secretAccessor", "members": [member]}]})},
            like="pooled-app-db-secret")
    assert found(plan, "iam-tenant-scope") == [
        (p["urn"], f"IAM: tenant 'stark''s principal {member} is granted roles/secretmanager.secretAccessor on secret "
                   f"{PROJECT}/dev-wayne-postgres-1-tenancy-app, which is tenant 'wayne''s: a tenant's principals are "
                   "granted only on that tenant's own resources")]


@pytest.mark.parametrize("member", [
    f"serviceAccount:{PROJECT}.svc.id.goog[tenant-stark/app]",
    f"principal://iam.googleapis.com/projects/27164844863/locations/global/workloadIdentityPools/{PROJECT}.svc.id.goog"
    "/subject/ns/tenant-stark/sa/app",
    f"principalSet://iam.googleapis.com/projects/27164844863/locations/global/workloadIdentityPools/{PROJECT}.svc.id.goog"
    "/namespace/tenant-stark",
])
def test_workload_identity_forms_on_another_tenants_service_account(plan, member):
    wi = res(plan, "dev.wayne", "app-wi-binding")
    wi["inputs"]["member"] = member
    target = wi["inputs"]["serviceAccountId"].rsplit("/", 1)[1]
    assert found(plan, "iam-tenant-scope") == [
        (wi["urn"], f"IAM: tenant 'stark''s principal {member} is granted roles/iam.workloadIdentityUser on service "
                    f"account {target}, which is tenant 'wayne''s: a tenant's principals are granted only on that "
                    "tenant's own resources"),
        (wi["urn"], f"IAM: the stack of tenant 'wayne' manages a grant of {member} on service account {target}, which "
                    "involves tenant(s) stark: a tenant stack touches only its own tenant"),
    ]


def test_tenant_principal_on_platform_bucket_project_folder_and_organization(plan):
    member = sa(plan, "dev.stark")
    like = "pooled-bucket-storage-objectAdmin"
    bucket = add(plan, "dev.pool-1", "gcp:storage/bucketIAMMember:BucketIAMMember", "x-bucket",
                 {"bucket": f"{PROJECT}-dev-pooled-uploads", "role": "roles/storage.objectViewer", "member": member}, like)
    project = add(plan, "dev.pool-1", "gcp:projects/iAMMember:IAMMember", "x-project",
                  {"project": PROJECT, "role": "roles/storage.admin", "member": member}, like)
    folder = add(plan, "dev.pool-1", "gcp:folder/iAMMember:IAMMember", "x-folder",
                 {"folder": "folders/123456789012", "role": "roles/browser", "member": member}, like)
    org = add(plan, "dev.pool-1", "gcp:organizations/iAMMember:IAMMember", "x-org",
              {"orgId": "1234", "role": "roles/browser", "member": "group:contractors@example.com"}, like)
    got = dict(found(plan, "iam-tenant-scope"))
    assert got[bucket["urn"]] == (f"IAM: tenant 'stark''s principal {member} is granted roles/storage.objectViewer on "
                                  f"bucket {PROJECT}-dev-pooled-uploads, which is the platform's: a tenant's principals "
                                  "are granted only on that tenant's own resources")
    assert got[project["urn"]].startswith(f"IAM: tenant 'stark''s principal {member} is granted roles/storage.admin on "
                                          f"project {PROJECT}, which is the platform's")
    assert got[folder["urn"]].startswith(f"IAM: tenant 'stark''s principal {member} is granted roles/browser on folder "
                                         "123456789012 (every project in it), which is tenant 'acme''s")
    assert got[org["urn"]].startswith("IAM: group group:contractors@example.com (not declared in the plan) is granted "
                                      "roles/browser on organization 1234 (every project in it), which is tenant 'acme''s "
                                      "and tenant 'cyberdyne''s and tenant 'pied-piper''s and tenant 'stark''s and "
                                      "tenant 'wayne''s and the platform's")
    assert len(got) == 4


def test_audit_exemption_on_a_tenant_project(plan):
    audit = res(plan, "dev.acme", "audit-logs")
    assert audit["inputs"]["auditLogConfigs"][1] == {"logType": "DATA_READ"}
    audit["inputs"]["auditLogConfigs"][1]["exemptedMembers"] = ["user:ops@saas-example.com"]
    assert found(plan, "iam-tenant-scope") == [
        (audit["urn"], "IAM: user user:ops@saas-example.com (not declared in the plan) is granted audit exemption "
                       "(DATA_READ) on project acme-tenancy-prod, which is tenant 'acme''s: only the tenant's own "
                       "principals and the platform's known principals (Google service agents, the pack's "
                       "platformPrincipals) may reach tenant data")]


def test_platform_principal_on_tenant_data_unless_allow_listed(plan):
    pooled = sa(plan, "dev.pool-1", "pooled-app-gsa")
    g = add(plan, "dev.pool-1", "gcp:storage/bucketIAMMember:BucketIAMMember", "pooled-on-stark",
            {"bucket": "dev-stark-uploads", "role": "roles/storage.objectViewer", "member": pooled},
            like="pooled-bucket-storage-objectAdmin")
    assert found(plan, "iam-tenant-scope") == [
        (g["urn"], f"IAM: service account {pooled} (declared by the platform) is granted roles/storage.objectViewer on "
                   "bucket dev-stark-uploads, which is tenant 'stark''s: only the tenant's own principals and the "
                   "platform's known principals (Google service agents, the pack's platformPrincipals) may reach tenant data")]
    from tenancy.policycheck import _policy_resources
    stacks = [(s["tenant"], _policy_resources(s)) for s in plan["stacks"]]
    allowed: list[str] = []
    rules.tenant_iam_scope_plan(stacks, lambda m, urn=None: allowed.append(m), {"platformPrincipals": [pooled]})
    assert allowed == []
    # the real plan's GKE service agent on a dedicated tenant's etcd key is a known platform principal
    assert "container-engine-robot" in res(plan, "dev.acme", "tenant-secrets-key-gke")["inputs"]["member"]


def test_condition_naming_another_tenants_database(plan):
    g = res(plan, "dev.stark", "app-firestore")
    g["inputs"]["condition"]["expression"] = f'resource.name == "projects/{PROJECT}/databases/dev-wayne"'
    member = sa(plan, "dev.stark")
    assert found(plan, "iam-tenant-scope")[0] == (
        g["urn"], f"IAM: tenant 'stark''s principal {member} is granted roles/datastore.user on Firestore database "
                  f"{PROJECT}/dev-wayne, which is tenant 'wayne''s: a tenant's principals are granted only on that "
                  "tenant's own resources")


def test_prefix_condition_reaches_a_neighbouring_database(plan):
    add(plan, "dev.wayne", "gcp:firestore/database:Database", "labs-db",
        {"name": "dev-stark-labs", "project": PROJECT, "locationId": "europe-west1"}, like="firestore-firestore")
    g = res(plan, "dev.stark", "app-firestore")
    prefix = f"projects/{PROJECT}/databases/dev-stark"
    g["inputs"]["condition"]["expression"] = f'resource.name.startsWith("{prefix}")'
    member = sa(plan, "dev.stark")
    assert found(plan, "iam-condition-exact") == [
        (g["urn"], f"IAM condition for {member} (roles/datastore.user) matches by prefix: startsWith(\"{prefix}\") also "
                   "matches every resource whose name merely begins with it (another tenant's); match the name exactly "
                   "(==) or end the prefix with '/'")]
    assert (g["urn"], f"IAM: tenant 'stark''s principal {member} is granted roles/datastore.user on Firestore database "
                      f"{PROJECT}/dev-stark-labs, which is tenant 'wayne''s: a tenant's principals are granted only on "
                      "that tenant's own resources") in found(plan, "iam-tenant-scope")
    g["inputs"]["condition"]["expression"] = f'resource.name.startsWith("{prefix}/")'
    assert found(plan, "iam-condition-exact") == [] and found(plan, "iam-tenant-scope") == []


def test_the_exact_condition_the_stacks_write_does_not_reach_a_neighbour(plan):
    # `== x || startsWith(x + "/")`: the `==` term names x alone, even beside a startsWith() term.
    add(plan, "dev.wayne", "gcp:firestore/database:Database", "labs-db",
        {"name": "dev-stark-labs", "project": PROJECT, "locationId": "europe-west1"}, like="firestore-firestore")
    path = f"projects/{PROJECT}/databases/dev-stark"
    assert res(plan, "dev.stark", "app-firestore")["inputs"]["condition"]["expression"] == (
        f'resource.name == "{path}" || resource.name.startsWith("{path}/")')
    assert found(plan, "iam-tenant-scope") == [] and found(plan, "iam-condition-exact") == []


# --------------------------------------------------------------------------------------- Kubernetes

def test_network_policy_open_to_every_namespace_or_address(plan):
    ing = res(plan, "dev.stark", "namespace-allow-ingress-controller")
    ing["inputs"]["spec"]["ingress"][0]["from"][0]["namespaceSelector"] = {}
    egress = res(plan, "dev.wayne", "namespace-allow-google-apis")
    egress["inputs"]["spec"]["egress"][0]["to"].append({"ipBlock": {"cidr": "0.0.0.0/0"}})
    assert found(plan, "k8s-network-isolation") == [
        (ing["urn"], "Kubernetes: NetworkPolicy allow-from-ingress in tenant-stark selects every namespace (ingress "
                     "namespaceSelector {}): other tenants' pods are let through"),
        (egress["urn"], "Kubernetes: NetworkPolicy allow-google-apis in tenant-wayne allows egress to 0.0.0.0/0: every "
                        "address, other tenants' included"),
    ]


def test_rbac_wildcards_cluster_bindings_and_foreign_namespaces(plan):
    role = res(plan, "dev.stark", "namespace-operator-role")
    role["inputs"]["rules"][0]["verbs"] = ["*"]
    crb = add(plan, "dev.pool-1", "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding", "stark-view",
              {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "stark-view"},
               "roleRef": {"kind": "ClusterRole", "name": "view"},
               "subjects": [{"kind": "Group", "name": "system:serviceaccounts:tenant-stark"}]}, like="pooled-ns-ns")
    rb = add(plan, "dev.stark", "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding", "peek",
             {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
              "metadata": {"name": "peek", "namespace": "tenant-wayne", "labels": {"tenancy.io/tenant": "stark"}},
              "roleRef": {"kind": "Role", "name": "tenant-operator"},
              "subjects": [{"kind": "User", "name": "system:serviceaccount:tenant-stark:app"}]}, like="namespace-ns")
    assert sorted(found(plan, "k8s-tenant-rbac")) == sorted([
        (role["urn"], "Kubernetes: Role tenant-operator in tenant-stark has a wildcard in verbs: tenant Roles list what "
                      "they allow"),
        (rb["urn"], "Kubernetes: RoleBinding in tenant-wayne grants User system:serviceaccount:tenant-stark:app of tenant "
                    "'stark': a tenant's subjects are bound only in its own namespace"),
        (rb["urn"], "Kubernetes: the stack of tenant 'stark' places a RoleBinding in tenant-wayne, tenant 'wayne''s namespace"),
        (crb["urn"], "Kubernetes: no ClusterRoleBinding may name a tenant subject: tenants act in their own namespace only"),
    ])


def test_tenant_namespace_and_workload_escaping_guardrails_by_name(plan):
    ns = copy.deepcopy(res(plan, "dev.stark", "namespace-ns"))
    ns.update(urn=ns["urn"] + "-tools", name="tools-ns")
    ns["inputs"]["metadata"]["name"] = "stark-tools"
    del ns["inputs"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
    stack_of(plan, "dev.stark")["resources"].append(ns)
    job = copy.deepcopy(res(plan, "dev.stark", "postgres-1-sql-job"))
    job.update(urn=job["urn"] + "-tools", name="tools-job")
    job["inputs"]["metadata"].update(namespace="stark-tools", name="tools")
    stack_of(plan, "dev.stark")["resources"].append(job)
    assert found(plan, "tenant-namespace-placement") == [
        (ns["urn"], "namespace stark-tools belongs to tenant 'stark' but is not named tenant-stark: it escapes the "
                    "guardrails every tenant namespace gets (PSA restricted, quota, default-deny)"),
        (job["urn"], "Job tools of tenant 'stark' runs in namespace stark-tools, not tenant-stark: outside the tenant's "
                     "guardrails"),
    ]
    assert [m for _, m in found(plan, "tenant-namespace-guardrails")] == [
        "namespace stark-tools: Pod Security must enforce 'restricted'",
        "namespace stark-tools: ResourceQuota must cover requests.cpu, requests.memory, requests.storage, pods, "
        "persistentvolumeclaims, services.loadbalancers, services.nodeports",
        "namespace stark-tools: a LimitRange must give containers default requests and limits",
        "namespace stark-tools: a default-deny NetworkPolicy (ingress and egress) must exist",
    ]


@pytest.mark.parametrize("kind,path", [("Pod", ("spec",)), ("Deployment", ("spec", "template", "spec")),
                                       ("DaemonSet", ("spec", "template", "spec")),
                                       ("CronJob", ("spec", "jobTemplate", "spec", "template", "spec"))])
def test_privileged_and_host_workloads(plan, kind, path):
    job = res(plan, "dev.stark", "postgres-1-sql-job")
    pod = copy.deepcopy(job["inputs"]["spec"]["template"]["spec"])
    pod.update(hostPID=True, hostNetwork=True)
    pod["volumes"].append({"name": "node", "hostPath": {"path": "/var/lib/kubelet"}})
    pod["containers"][0]["securityContext"]["privileged"] = True
    spec: dict = pod
    for key in reversed(path[1:]):
        spec = {key: spec}
    w = add(plan, "dev.stark", f"kubernetes:apps/v1:{kind}", "w",
            {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": "w", "namespace": "tenant-stark",
                                                                  "labels": {"tenancy.io/tenant": "stark"}}, "spec": spec},
            like="postgres-1-sql-job")
    assert found(plan, "k8s-no-host-access") == [
        (w["urn"], f"Kubernetes: {kind} w sets hostNetwork: it shares the node's namespaces with every tenant's pods"),
        (w["urn"], f"Kubernetes: {kind} w sets hostPID: it shares the node's namespaces with every tenant's pods"),
        (w["urn"], f"Kubernetes: {kind} w mounts hostPath /var/lib/kubelet (volume node): node files are shared by every tenant"),
        (w["urn"], f"Kubernetes: {kind} w runs container 'psql' privileged: it controls the node"),
    ]


def test_service_with_external_ips(plan):
    svc = add(plan, "dev.stark", "kubernetes:core/v1:Service", "svc",
              {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "app", "namespace": "tenant-stark",
                                                                     "labels": {"tenancy.io/tenant": "stark"}},
               "spec": {"type": "ClusterIP", "externalIPs": ["10.10.0.5"]}}, like="namespace-ns")
    assert found(plan, "k8s-no-exposed-services") == [
        (svc["urn"], "Kubernetes: service app in tenant-stark sets externalIPs 10.10.0.5: it can intercept other tenants' "
                     "traffic to those addresses (CVE-2020-8554)")]
    svc["inputs"]["spec"].pop("externalIPs")
    assert found(plan, "k8s-no-exposed-services") == []


def test_ingress_host_claimed_by_two_tenants_or_a_wildcard(plan):
    piper = res(plan, "dev.pied-piper", "ingress")
    stark = res(plan, "dev.stark", "ingress")
    host = piper["inputs"]["spec"]["rules"][0]["host"]
    stark["inputs"]["spec"]["rules"][0]["host"] = host
    assert found(plan, "ingress-host-claims") == [
        (stark["urn"], f"Ingress host {host} of tenant 'stark' collides with {host} of tenant 'pied-piper' "
                       f"({piper['urn']}): a host belongs to one tenant")]
    stark["inputs"]["spec"]["rules"][0]["host"] = "*.dev.saas-example.com"
    stark["inputs"]["spec"]["tls"][0]["hosts"] = ["*.dev.saas-example.com"]
    messages = [m for _, m in found(plan, "ingress-host-claims")]
    assert len(messages) == 3 and all("*.dev.saas-example.com of tenant 'stark'" in m for m in messages), messages
    assert {m.split(" of tenant '")[1].split("'")[0] if not m.startswith("Ingress host *") else
            m.split(" of tenant '")[2].split("'")[0] for m in messages} == {"pied-piper", "acme", "cyberdyne"}


# ---------------------------------------------------------------------------------------- credentials

def test_credentials_in_configmaps_helm_env_and_urls(plan):
    cm = res(plan, "dev.stark", "postgres-1-sql-sql")
    name = cm["inputs"]["metadata"]["name"]
    cm["inputs"]["data"]["db_password"] = "hunter2"
    cm["inputs"]["data"]["app.conf"] = "host=10.0.0.3 dbname=app user=tenancy_app password=hunter2"
    release = res(plan, "dev.stark", "app-release")
    release["inputs"]["values"]["env"] = [{"name": "DB_PASSWORD", "value": "hunter2"},
                                          {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "t", "key": "k"}}}]
    job = res(plan, "dev.wayne", "postgres-1-sql-job")
    job["inputs"]["spec"]["template"]["spec"]["containers"][0]["args"] = ["psql postgres://tenancy_owner:s3cret@10.0.0.3/app"]
    got = found(plan, "no-credentials-in-config")
    assert sorted(got) == sorted([
        (cm["urn"], f"ConfigMap {name}: key 'db_password' holds a credential; ConfigMaps are readable "
                    "by every reader of the namespace: use a Secret"),
        (cm["urn"], f"ConfigMap {name}: key 'app.conf' contains a password assignment (a DSN or config "
                    "with a credential): use a Secret"),
        (release["urn"], "Release: environment variable values.env.0 (DB_PASSWORD) is set to a literal credential: use valueFrom a "
                         "Secret (or a secret name the chart reads)"),
        (job["urn"], "Job: input spec.template.spec.containers.0.args.0 holds a URL with a password (user:password@host): "
                     "pass the credential through a secret"),
    ])


# ------------------------------------------------------------------------------------------ clusters

def test_control_plane_reachable_from_anywhere(plan):
    cluster = res(plan, "dev.acme", "tenant-cluster")
    cluster["inputs"]["masterAuthorizedNetworksConfig"]["cidrBlocks"].append({"cidrBlock": "0.0.0.0/0", "displayName": "all"})
    assert found(plan, "gke-cluster-hardened") == [
        (cluster["urn"], "GKE cluster: the control plane's authorized networks include 0.0.0.0/0: it is reachable from anywhere")]
    del cluster["inputs"]["masterAuthorizedNetworksConfig"]
    assert found(plan, "gke-cluster-hardened") == [
        (cluster["urn"], "GKE cluster: the control plane has a public endpoint and no authorized networks "
                         "(masterAuthorizedNetworksConfig): it is reachable from anywhere")]
    cluster["inputs"]["privateClusterConfig"]["enablePrivateEndpoint"] = True
    assert found(plan, "gke-cluster-hardened") == []


# ----------------------------------------------------------------------------- evaluation of the plan

def test_resources_without_the_custom_flag_are_checked(plan):
    bucket = res(plan, "dev.stark", "uploads-bucket")
    del bucket["custom"]
    bucket["inputs"]["publicAccessPrevention"] = "inherited"
    assert found(plan, "storage-bucket-private") == [
        (bucket["urn"], "bucket: public access prevention must be 'enforced' so no grant can make tenant objects public")]


def test_physical_names_unique_in_their_scope(plan):
    wayne_bucket = res(plan, "dev.wayne", "uploads-bucket")
    stark_bucket = res(plan, "dev.stark", "uploads-bucket")
    wayne_bucket["inputs"]["name"] = "dev-stark-uploads"
    secret = res(plan, "dev.wayne", "postgres-1-tenancy-app-secret")
    secret["inputs"]["secretId"] = "dev-stark-postgres-1-tenancy-app"
    stark_ns = res(plan, "dev.stark", "namespace-ns")
    ns = add(plan, "dev.pool-1", "kubernetes:core/v1:Namespace", "stray-ns",
             copy.deepcopy(stark_ns["inputs"]), like="pooled-ns-ns")
    got = found(plan, "unique-physical-names")
    stark_secret = res(plan, "dev.stark", "postgres-1-tenancy-app-secret")
    assert sorted(got) == sorted([
        (wayne_bucket["urn"], f"bucket (global) dev-stark-uploads is declared twice, by {stark_bucket['urn']} and "
                              f"{wayne_bucket['urn']}: one physical name in its scope is one real object"),
        (secret["urn"], f"secret {PROJECT}/dev-stark-postgres-1-tenancy-app is declared twice, by {stark_secret['urn']} and "
                        f"{secret['urn']}: one physical name in its scope is one real object"),
        (stark_ns["urn"], f"Kubernetes object {PROJECT}/europe-west1/dev-shared/Namespace/tenant-stark is declared twice, "
                          f"by {ns['urn']} and {stark_ns['urn']}: one physical name in its scope is one real object"),
    ])
    # the same namespace name in a dedicated tenant's own cluster is another object
    assert not [m for _, m in got if "cert-manager" in m]


def test_policy_check_command_reports_plan_wide_breaks(plan, tmp_path):
    res(plan, "dev.wayne", "uploads-bucket")["inputs"]["name"] = "dev-stark-uploads"
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    out = subprocess.run([sys.executable, "-m", "tenancy", "policy-check", str(path)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 1, out.stdout + out.stderr
    assert any(": unique-physical-names: bucket (global) dev-stark-uploads is declared twice" in line
               for line in out.stdout.splitlines()), out.stdout


def test_the_packs_per_stack_form_catches_a_foreign_principal(plan):
    """What a real `pulumi preview` of one stack runs: only that stack's resources are the tenant's."""
    from pulumi_policy import StackValidationArgs

    from tenancy.policycheck import _policy_resources
    stark = stack_of(plan, "dev.stark")
    policy = {p.name: p for p in rules.STACK_POLICIES}["iam-tenant-scope"]
    cfg = {"platformPrincipals": [], "tenantProjectRoles": list(rules.TENANT_PROJECT_ROLES)}
    clean: list[str] = []
    policy.validate(StackValidationArgs(_policy_resources(stark), cfg), lambda m, urn=None: clean.append(m))
    assert clean == []
    grant = res(plan, "dev.stark", "uploads-storage-objectAdmin")
    grant["inputs"]["member"] = sa(plan, "dev.wayne")
    got: list[str] = []
    policy.validate(StackValidationArgs(_policy_resources(stark), cfg), lambda m, urn=None: got.append(m))
    assert got == [f"IAM: service account {sa(plan, 'dev.wayne')} (not declared in the plan) is granted "
                   "roles/storage.objectAdmin on bucket dev-stark-uploads, which is tenant 'stark''s: only the tenant's "
                   "own principals and the platform's known principals (Google service agents, the pack's "
                   "platformPrincipals) may reach tenant data"]
