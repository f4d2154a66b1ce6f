"""The policy pack's rules, each with a passing and a failing resource built as validation args."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import yaml
from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    StackValidationArgs,
)

from policy import rules
from tests.conftest import ROOT, of_type, stack_of

PLATFORM = "urn:pulumi:dev::tenancy::"
TENANT = "urn:pulumi:dev.acme::tenancy::"
POLICIES = {p.name: p for p in rules.ALL_POLICIES}


def opts(protect=False):
    return PolicyResourceOptions(protect, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], None)


def check(policy: str, type_: str, props: dict, protect=False, urn_prefix=PLATFORM, config=None) -> list[str]:
    p = POLICIES[policy]
    cfg = {k: v["default"] for k, v in ((p.config_schema.properties if p.config_schema else {}) or {}).items()}
    cfg.update(config or {})
    args = ResourceValidationArgs(type_, props, f"{urn_prefix}{type_}::r", "r", opts(protect), None, cfg)
    found: list[str] = []
    p.validate(args, lambda message, urn=None: found.append(message))
    return found


def check_stack(policy: str, resources: list[tuple[str, dict]], urn_prefix=TENANT) -> list[str]:
    res = [PolicyResource(t, props, f"{urn_prefix}{t}::r{i}", f"r{i}", opts(), None, None, [], {})
           for i, (t, props) in enumerate(resources)]
    found: list[str] = []
    POLICIES[policy].validate(StackValidationArgs(res, {}), lambda message, urn=None: found.append(message))
    return found


@pytest.fixture(scope="module")
def plan_data(sample_plan):
    return sample_plan[1]


def real(plan_data, stack, type_):
    return copy.deepcopy(of_type(stack_of(plan_data, stack), type_)[0]["inputs"])


CLUSTER = "gcp:container/cluster:Cluster"


def test_gke_cluster_passes_and_each_hardening_item_fails(plan_data):
    good = real(plan_data, "dev.cell-1", CLUSTER)          # the shared cluster
    assert check("gke-cluster-hardened", CLUSTER, good) == []
    breaks = [
        (lambda c: c.pop("workloadIdentityConfig"), "Workload Identity must be on"),
        (lambda c: c["privateClusterConfig"].update(enablePrivateNodes=False), "private nodes must be on"),
        (lambda c: c.update(enableShieldedNodes=False), "shielded nodes must be on"),
        (lambda c: c.pop("datapathProvider"), "network policy enforcement (Dataplane V2) must be on"),
        (lambda c: c.update(enableLegacyAbac=True), "legacy ABAC must be off"),
        (lambda c: c["masterAuth"]["clientCertificateConfig"].update(issueClientCertificate=True), "client certificates must be off"),
        (lambda c: c.pop("releaseChannel"), "a release channel must be set"),
        (lambda c: c.pop("databaseEncryption"), "application-layer secrets encryption (Cloud KMS) must be on"),
        (lambda c: c.update(enableKubernetesAlpha=True), "alpha features must be off"),
        (lambda c: c.pop("loggingConfig"), "logging must be on"),
        (lambda c: c.pop("monitoringConfig"), "monitoring must be on"),
        (lambda c: c["nodeConfig"].update(serviceAccount="123456-compute@developer.gserviceaccount.com"),
         "never the Compute default"),
    ]
    for mutate, expected in breaks:
        bad = copy.deepcopy(good)
        mutate(bad)
        found = check("gke-cluster-hardened", CLUSTER, bad)
        assert len(found) == 1 and expected in found[0], (expected, found)


def test_gke_node_pool(plan_data):
    good = real(plan_data, "dev.cell-1", "gcp:container/nodePool:NodePool")
    assert check("gke-node-pool-hardened", "gcp:container/nodePool:NodePool", good) == []
    bad = copy.deepcopy(good)
    bad["management"]["autoUpgrade"] = False
    bad["nodeConfig"]["workloadMetadataConfig"]["mode"] = "GCE_METADATA"
    bad["nodeConfig"]["shieldedInstanceConfig"]["enableSecureBoot"] = False
    assert check("gke-node-pool-hardened", "gcp:container/nodePool:NodePool", bad) == [
        "GKE node pool: auto-repair and auto-upgrade must be on so nodes get security patches",
        "GKE node pool: workloadMetadataConfig.mode must be GKE_METADATA so pods cannot read node credentials",
        "GKE node pool: shielded nodes need secure boot and integrity monitoring",
    ]


SQL = "gcp:sql/databaseInstance:DatabaseInstance"


def test_cloudsql(plan_data):
    good = real(plan_data, "dev.stark", SQL)
    assert check("cloudsql-private-ssl-backups", SQL, good) == []
    bad = copy.deepcopy(good)
    bad["settings"]["ipConfiguration"]["ipv4Enabled"] = True
    bad["settings"]["ipConfiguration"]["sslMode"] = "ALLOW_UNENCRYPTED_AND_ENCRYPTED"
    bad["settings"]["backupConfiguration"]["pointInTimeRecoveryEnabled"] = False
    bad["settings"]["backupConfiguration"]["backupRetentionSettings"]["retainedBackups"] = 7
    bad["settings"]["deletionProtectionEnabled"] = False
    found = check("cloudsql-private-ssl-backups", SQL, bad)
    assert [f.split(":")[1].strip()[:30] for f in found] == [
        "public IP must be off (setting", "sslMode must be ENCRYPTED_ONLY", "backups and point-in-time reco",
        "7 retained backups is below th", "deletion protection must be on"]
    assert "7 retained backups is below the namespace minimum of 30 days" in found[3]
    # the minimum is configurable per model through the pack's config
    assert check("cloudsql-private-ssl-backups", SQL, good, config={"minRetention_namespace": 60}) == [
        "Cloud SQL: 30 retained backups is below the namespace minimum of 60 days"]


def test_storage_bucket(plan_data):
    good = real(plan_data, "dev.stark", "gcp:storage/bucket:Bucket")
    assert check("storage-bucket-private", "gcp:storage/bucket:Bucket", good) == []
    bad = dict(good, uniformBucketLevelAccess=False, publicAccessPrevention="inherited", versioning={"enabled": False})
    assert check("storage-bucket-private", "gcp:storage/bucket:Bucket", bad) == [
        "bucket: uniform bucket-level access must be on: access is decided by IAM only, never per-object ACLs",
        "bucket: public access prevention must be 'enforced' so no grant can make tenant objects public",
        "tenant bucket: versioning must be on so overwritten or deleted objects can be recovered",
    ]


def test_no_public_members():
    t = "gcp:storage/bucketIAMMember:BucketIAMMember"
    assert check("no-public-members", t, {"bucket": "b", "role": "roles/storage.objectViewer", "member": "group:x@y.z"}) == []
    assert check("no-public-members", t, {"bucket": "b", "role": "roles/storage.objectViewer", "member": "allUsers"}) == [
        "IAM: 'allUsers' must never be granted: it makes tenant resources public"]
    assert check("no-public-members", "gcp:storage/bucketIAMBinding:BucketIAMBinding",
                 {"members": ["allAuthenticatedUsers"], "role": "r"}) == [
        "IAM: 'allAuthenticatedUsers' must never be granted: it makes tenant resources public"]


def test_iam_least_privilege():
    sa = "serviceAccount:t-dev-acme@p.iam.gserviceaccount.com"
    t = "gcp:projects/iAMMember:IAMMember"
    assert check("iam-least-privilege", t, {"project": "p", "role": "roles/logging.logWriter",
                                            "member": "serviceAccount:dev-gke-nodes@p.iam.gserviceaccount.com"}) == []
    assert check("iam-least-privilege", t, {"project": "p", "role": "roles/editor", "member": "user:a@b.c"}) == [
        "IAM: basic role roles/editor must not be granted: it spans every service in the project"]
    assert check("iam-least-privilege", t, {"project": "p", "role": "roles/iam.serviceAccountUser", "member": sa}) == [
        "IAM: roles/iam.serviceAccountUser at the project lets a tenant service account impersonate every service "
        "account; grant it on one account only",
        f"IAM: project-wide role roles/iam.serviceAccountUser granted to tenant service account {sa}; grant on the "
        "tenant's own resources only"]
    assert check("iam-least-privilege", "gcp:serviceaccount/key:Key", {"serviceAccountId": "x"}) == [
        "IAM: service account keys must not be created; workloads use Workload Identity (keys leak and do not expire)"]
    # Whose account and whose bucket a grant involves is iam-tenant-scope's to decide, from the plan
    # (tests/test_policy_isolation.py): judged by name, a long id's shortened account was "another tenant's".
    b = "gcp:storage/bucketIAMMember:BucketIAMMember"
    shortened = "serviceAccount:t-dev-llllllllllllllll--897042@p.iam.gserviceaccount.com"
    assert check("iam-least-privilege", b, {"bucket": "dev-" + "l" * 44 + "-abcde-uploads", "role": "roles/storage.objectAdmin",
                                            "member": shortened}, urn_prefix=TENANT.replace("acme", "l" * 44 + "-abcde")) == []


def test_k8s_tenant_rbac():
    crb = "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding"
    rb = "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding"
    ok = {"metadata": {"name": "ops", "namespace": "tenant-acme"}, "roleRef": {"kind": "Role", "name": "tenant-operator"},
          "subjects": [{"kind": "Group", "name": "ops@acme.example"}]}
    assert check("k8s-tenant-rbac", rb, ok) == []
    assert check("k8s-tenant-rbac", rb, {**ok, "roleRef": {"kind": "ClusterRole", "name": "admin"}}) == [
        "Kubernetes: the built-in 'admin' role must not be bound to tenants: it can edit quotas and NetworkPolicies"]
    tenant_crb = {"metadata": {"name": "x"}, "roleRef": {"kind": "ClusterRole", "name": "view"},
                  "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": "tenant-acme"}]}
    assert check("k8s-tenant-rbac", crb, tenant_crb) == [
        "Kubernetes: no ClusterRoleBinding may name a tenant subject: tenants act in their own namespace only"]
    platform_crb = {**tenant_crb, "subjects": [{"kind": "ServiceAccount", "name": "cert-manager", "namespace": "cert-manager"}]}
    assert check("k8s-tenant-rbac", crb, platform_crb) == []


def test_k8s_no_exposed_services():
    t = "kubernetes:core/v1:Service"
    assert check("k8s-no-exposed-services", t, {"metadata": {"namespace": "tenant-acme"}, "spec": {"type": "ClusterIP"}}) == []
    assert check("k8s-no-exposed-services", t, {"metadata": {"namespace": "ingress-nginx"}, "spec": {"type": "LoadBalancer"}}) == []
    assert check("k8s-no-exposed-services", t, {"metadata": {"namespace": "tenant-acme"}, "spec": {"type": "NodePort"}}) == [
        "Kubernetes: a NodePort service in tenant namespace tenant-acme bypasses the shared ingress and its limits"]


def test_k8s_containers_declare_resources(plan_data):
    job = real(plan_data, "dev.pool-1", "kubernetes:batch/v1:Job")     # the pool shard's SQL job
    assert check("k8s-container-resources", "kubernetes:batch/v1:Job", job) == []
    del job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert check("k8s-container-resources", "kubernetes:batch/v1:Job", job) == [
        "Kubernetes: container 'psql' must declare resource requests and limits (quota accounting, noisy neighbours)"]


def test_no_plaintext_secrets():
    t = "gcp:sql/user:User"
    masked = {"secretsMasked": True}
    assert check("no-plaintext-secrets", t, {"name": "u", "password": "[secret]"}, config=masked) == []
    assert check("no-plaintext-secrets", t, {"name": "u", "password": "hunter2"}, config=masked) == [
        "secret value password is plain text: it must come from a secret output (pulumi.Output.secret)"]
    assert check("no-plaintext-secrets", "kubernetes:core/v1:Secret", {"stringData": {"k": "v"}}, config=masked) == [
        "secret value stringData.k is plain text: it must come from a secret output (pulumi.Output.secret)"]
    helm = {"values": {"db": {"password": "hunter2", "passwordSecret": "name-of-secret"}}}
    assert check("no-plaintext-secrets", "kubernetes:helm.sh/v3:Release", helm, config=masked) == [
        "Helm value db.password looks like a secret in plain text; pass a secret name or a secret output"]
    # Under a real engine policies see decrypted values (pulumi-policy#241), so the rule cannot decide there.
    assert check("no-plaintext-secrets", t, {"name": "u", "password": "hunter2"}) == []


def test_tenant_label():
    b = "gcp:storage/bucket:Bucket"
    assert check("tenant-label", b, {"labels": {"tenant": "acme"}}, urn_prefix=TENANT) == []
    assert check("tenant-label", b, {"labels": {"tenant": "other"}}, urn_prefix=TENANT) == [
        "resource of tenant 'acme' must carry the label tenant=acme"]
    assert check("tenant-label", "kubernetes:core/v1:ConfigMap", {"metadata": {"labels": {}}}, urn_prefix=TENANT) == [
        "resource of tenant 'acme' must carry the label tenant=acme"]
    assert check("tenant-label", b, {"labels": {}}) == []  # platform stack: shared resources carry no tenant


def test_stateful_protected():
    assert check("stateful-protected", SQL, {}, protect=True) == []
    assert check("stateful-protected", SQL, {}, protect=False) == [
        f"stateful resource {SQL} must be protected (protect=True): it holds tenant data"]


def test_tenant_namespace_guardrails(plan_data):
    stark = stack_of(plan_data, "dev.stark")
    ns_objects = [(r["type"], r["inputs"]) for r in stark["resources"] if r["type"].startswith("kubernetes:")]
    assert check_stack("tenant-namespace-guardrails", ns_objects) == []
    stripped = [(t, p) for t, p in ns_objects if t not in ("kubernetes:core/v1:LimitRange",)
                and not (t.endswith("NetworkPolicy") and p["metadata"]["name"] == "default-deny")]
    stripped = [(t, copy.deepcopy(p)) for t, p in stripped]
    for t, p in stripped:
        if t == "kubernetes:core/v1:Namespace":
            p["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] = "baseline"
        if t == "kubernetes:core/v1:ResourceQuota":
            del p["spec"]["hard"]["services.nodeports"]
    assert check_stack("tenant-namespace-guardrails", stripped) == [
        "namespace tenant-stark: Pod Security must enforce 'restricted'",
        "namespace tenant-stark: ResourceQuota must cover services.nodeports",
        "namespace tenant-stark: a LimitRange must give containers default requests and limits",
        "namespace tenant-stark: a default-deny NetworkPolicy (ingress and egress) must exist",
    ]


def test_one_tenant_per_stack():
    a = ("gcp:storage/bucket:Bucket", {"labels": {"tenant": "acme"}})
    b = ("kubernetes:core/v1:Namespace", {"metadata": {"labels": {"tenancy.io/tenant": "globex"}}})
    assert check_stack("one-tenant-per-stack", [a]) == []
    assert check_stack("one-tenant-per-stack", [a, b]) == [
        "one stack holds resources of tenants acme, globex: a tenant stack must hold exactly one tenant"]


def test_no_store_shared_by_two_tenants():
    def res(t, props, stack):
        return PolicyResource(t, props, f"urn:pulumi:{stack}::tenancy::{t}::x", "x", opts(), None, None, [], {})
    bucket = ("gcp:storage/bucket:Bucket", {"name": "dev-acme-uploads"})
    found: list[str] = []
    rules.shared_across_tenants([("acme", [res(*bucket, "dev.acme")]), ("globex", [res(*bucket, "dev.globex")])],
                                lambda m, urn=None: found.append(m))
    assert found == ["bucket 'dev-acme-uploads' is used by tenants 'acme' and 'globex': tenant data stores are never shared"]
    found.clear()
    ns = ("kubernetes:core/v1:Namespace", {"metadata": {"name": "cert-manager", "labels": {"tenancy.io/model": "dedicated"}}})
    rules.shared_across_tenants([("acme", [res(*ns, "dev.acme")]), ("cyber", [res(*ns, "dev.cyber")])],
                                lambda m, urn=None: found.append(m))
    assert found == [], "namespaces in two dedicated clusters are not shared"


def test_policy_check_command_on_an_edited_plan(sample_plan, tmp_path):
    _, data, _ = sample_plan
    clean = tmp_path / "plan.json"
    clean.write_text(json.dumps(data))
    ok = subprocess.run([sys.executable, "-m", "tenancy", "policy-check", str(clean)], capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0, ok.stdout
    # the global stack, its identity shard, cell and pool shard, and five tenant stacks
    assert ok.stdout.strip().endswith("9 stack(s) checked: 0 mandatory violation(s), 0 advisory")
    broken = copy.deepcopy(data)
    bucket = of_type(stack_of(broken, "dev.stark"), "gcp:storage/bucket:Bucket")[0]
    bucket["inputs"]["publicAccessPrevention"] = "inherited"
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    res = subprocess.run([sys.executable, "-m", "tenancy", "policy-check", str(path)], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 1
    assert (f"[mandatory] stack dev.stark: {bucket['urn']}: storage-bucket-private: bucket: public access prevention must be "
            "'enforced' so no grant can make tenant objects public") in res.stdout.splitlines()
    assert "1 mandatory violation(s)" in res.stdout
    res = subprocess.run([sys.executable, "-m", "tenancy", "policy-check", str(tmp_path / "nope.json")],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2 and "file not found" in res.stderr


def _small_plan(sample_plan) -> dict:
    """The real plan's stack of one namespace tenant (small, and read by every rule)."""
    _, data, _ = sample_plan
    return {"version": 1, "environment": "dev", "stacks": [copy.deepcopy(stack_of(data, "dev.stark"))]}


def _policy_check(path, capsys) -> tuple[int, str, str]:
    from tenancy.cli import main

    code = main(["policy-check", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


def _secret_member(plan: dict) -> tuple[int, dict]:
    resources = plan["stacks"][0]["resources"]
    i = next(i for i, r in enumerate(resources) if r["type"] == "gcp:secretmanager/secretIamMember:SecretIamMember")
    return i, resources[i]


@pytest.mark.parametrize("break_it, message", [
    (lambda p, r: r.pop("type"), "stacks[0] (dev.stark).resources[{i}] ({urn}): 'type' is missing"),
    (lambda p, r: r.pop("urn"), "stacks[0] (dev.stark).resources[{i}]: 'urn' is missing"),
    (lambda p, r: r.__setitem__("type", 7), "stacks[0] (dev.stark).resources[{i}] ({urn}): 'type' must be a non-empty "
                                            "string, not a number"),
    (lambda p, r: p["stacks"][0]["resources"].__setitem__(p["stacks"][0]["resources"].index(r), "bucket"),
     "stacks[0] (dev.stark).resources[{i}]: a resource must be a mapping, not a string"),
    (lambda p, r: p["stacks"].__setitem__(0, ["dev.stark"]), "stacks[0]: a stack must be a mapping, not a list"),
    (lambda p, r: p["stacks"][0].pop("resources"), "stacks[0] (dev.stark): 'resources' is missing"),
    (lambda p, r: p["stacks"][0].__setitem__("resources", {}), "stacks[0] (dev.stark): 'resources' must be a list, "
                                                               "not a mapping"),
    (lambda p, r: p["stacks"][0].__setitem__("tenant", 3), "stacks[0]: 'tenant' must be a string, not a number"),
    (lambda p, r: r.__setitem__("inputs", ["role"]), "stacks[0] (dev.stark).resources[{i}] ({urn}): 'inputs' must be "
                                                     "a mapping, not a list"),
    (lambda p, r: r.__setitem__("options", "protect"), "stacks[0] (dev.stark).resources[{i}] ({urn}): 'options' must "
                                                       "be a mapping, not a string"),
    (lambda p, r: r["options"].__setitem__("aliases", "old"), "stacks[0] (dev.stark).resources[{i}] ({urn}): "
                                                              "'options.aliases' must be a list, not a string"),
    (lambda p, r: r["inputs"].__setitem__("member", ["a", "b"]), "stacks[0] (dev.stark).resources[{i}] ({urn}): "
                                                                 "'inputs.member' must be a string, not a list"),
    (lambda p, r: p.__setitem__("stacks", {}), "expected a plan (a mapping with a 'stacks' list); 'stacks' is a mapping"),
])
def test_policy_check_refuses_a_malformed_plan_with_one_line_and_exit_2(sample_plan, tmp_path, capsys, break_it, message):
    plan = _small_plan(sample_plan)
    i, r = _secret_member(plan)
    urn = r["urn"]
    break_it(plan, r)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    code, out, err = _policy_check(path, capsys)
    assert (code, out) == (2, "")
    assert err == f"{path}: {message.format(i=i, urn=urn)}\n"


def test_policy_check_refuses_inputs_of_a_shape_a_rule_cannot_read(sample_plan, tmp_path, capsys):
    """A nested input of another shape than the program gives (a Cloud SQL instance's IP configuration as a
    string) is bad input naming the resource and the rule, not a traceback."""
    plan = _small_plan(sample_plan)
    instance = of_type(plan["stacks"][0], "gcp:sql/databaseInstance:DatabaseInstance")[0]
    instance["inputs"]["settings"]["ipConfiguration"] = "private"
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    code, out, err = _policy_check(path, capsys)
    assert (code, out) == (2, "")
    assert err == (f"{path}: resource {instance['urn']}: the policy 'cloudsql-private-ssl-backups' cannot read its "
                   "inputs (AttributeError: 'str' object has no attribute 'get'); a plan written by `tenancy plan` has "
                   "the shapes the policy pack reads\n")


def test_policy_check_on_a_directory_or_unreadable_file_is_bad_input(sample_plan, tmp_path, capsys):
    code, out, err = _policy_check(tmp_path, capsys)
    assert (code, out, err) == (2, "", f"{tmp_path}: is a directory; give the plan file (e.g. {tmp_path / 'plan.json'})\n")
    binary = tmp_path / "plan.bin"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    assert _policy_check(binary, capsys) == (2, "", f"{binary}: not a plan file (not UTF-8 text)\n")
    listed = tmp_path / "list.json"
    listed.write_text("[]")
    assert _policy_check(listed, capsys) == (2, "", f"{listed}: expected a plan (a mapping with a 'stacks' list), "
                                                    "not a list\n")
    # the real plan's stack passes the same checks
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_small_plan(sample_plan)))
    code, out, err = _policy_check(good, capsys)
    assert (code, err) == (0, "") and out.endswith("1 stack(s) checked: 0 mandatory violation(s), 0 advisory\n")


def test_pack_layout_is_valid():
    meta = yaml.safe_load((ROOT / "policy" / "PulumiPolicy.yaml").read_text())
    assert meta["runtime"] == {"name": "python", "options": {"virtualenv": "venv"}} and meta["version"]
    main = (ROOT / "policy" / "__main__.py").read_text()
    assert "PolicyPack(" in main and "def " not in main, "__main__.py only assembles the rules"
    reqs = (ROOT / "policy" / "requirements.txt").read_text()
    assert "pulumi-policy==" in reqs
    names = [p.name for p in rules.ALL_POLICIES]
    assert len(names) == len(set(names)) >= 14
