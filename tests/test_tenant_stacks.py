"""Tenant stacks under mocks: namespace (Standard) and dedicated (Enterprise) models."""

from __future__ import annotations

import json
import re
from collections import Counter

import kubernetes_validate
import pytest
import yaml

from policy.rules import STATEFUL_TYPES
from tenancy.catalog import load_catalog
from tests.conftest import ROOT, of_type, stack_of
from tests.test_platform_stack import _check_labels

K8S_VERSION = "1.33.0"  # a GKE REGULAR-channel version
# cert-manager's custom resources have no official schema in kubernetes-validate; their fields are
# asserted by value in these tests instead.
CUSTOM_KINDS = {"Certificate", "ClusterIssuer"}


def counts(stack) -> Counter:
    return Counter(r["type"] for r in stack["resources"])


@pytest.fixture(scope="module")
def data(sample_plan):
    return sample_plan[1]


def test_one_stack_per_namespace_and_dedicated_tenant(data):
    catalog = load_catalog(ROOT / "tenants.yaml")
    expected = {f"dev.{t.id}" for t in catalog.tenants if t.model.value != "pooled" and t.state.value != "offboarded"}
    assert {s["name"] for s in data["stacks"] if s["kind"] == "tenant"} == expected
    assert "dev.umbrella" not in expected  # offboarded: no stack


def test_namespace_tenant_resource_counts(data):
    c = counts(stack_of(data, "dev.stark"))
    assert c["kubernetes:core/v1:Namespace"] == 1
    assert c["gcp:container/cluster:Cluster"] == 0, "a namespace tenant gets no cluster"
    assert c["gcp:sql/databaseInstance:DatabaseInstance"] == 3
    assert c["gcp:firestore/database:Database"] == 1
    assert c["gcp:storage/bucket:Bucket"] == 1
    assert c["gcp:serviceaccount/account:Account"] == 2           # the app's, and the SQL migrator's
    assert c["kubernetes:batch/v1:Job"] == 3                       # the tenancy SQL, applied to each database
    assert c["kubernetes:core/v1:ResourceQuota"] == 1 and c["kubernetes:core/v1:LimitRange"] == 1
    assert c["kubernetes:networking.k8s.io/v1:NetworkPolicy"] == 6
    assert c["kubernetes:helm.sh/v3:Release"] == 2            # app + neo4j
    assert c["kubernetes:networking.k8s.io/v1:Ingress"] == 1
    assert c["kubernetes:cert-manager.io/v1:Certificate"] == 1
    assert c["gcp:organizations/project:Project"] == 0


def test_dedicated_tenant_resource_counts(data):
    acme, cyberdyne = counts(stack_of(data, "dev.acme")), counts(stack_of(data, "dev.cyberdyne"))
    for c in (acme, cyberdyne):
        assert c["gcp:container/cluster:Cluster"] == 1 and c["gcp:container/nodePool:NodePool"] == 1
        assert c["gcp:compute/network:Network"] == 1
        assert c["kubernetes:core/v1:Namespace"] == 3             # tenant-<id>, ingress-nginx, cert-manager
    assert acme["gcp:organizations/project:Project"] == 1 and cyberdyne["gcp:organizations/project:Project"] == 0
    assert acme["gcp:sql/databaseInstance:DatabaseInstance"] == 6   # 3 primaries + 3 read replicas
    assert cyberdyne["gcp:sql/databaseInstance:DatabaseInstance"] == 3


def test_namespace_isolation_settings(data):
    stark = stack_of(data, "dev.stark")
    ns = of_type(stark, "kubernetes:core/v1:Namespace")[0]["inputs"]["metadata"]
    assert ns["name"] == "tenant-stark"
    for mode in ("enforce", "audit", "warn"):
        assert ns["labels"][f"pod-security.kubernetes.io/{mode}"] == "restricted"
    hard = of_type(stark, "kubernetes:core/v1:ResourceQuota")[0]["inputs"]["spec"]["hard"]
    assert hard["requests.cpu"] == "4000m" and hard["requests.memory"] == "8192Mi" and hard["requests.storage"] == "50Gi"
    assert (hard["pods"], hard["persistentvolumeclaims"], hard["services"]) == ("50", "10", "10")
    assert (hard["services.loadbalancers"], hard["services.nodeports"]) == ("0", "0")
    piper = of_type(stack_of(data, "dev.pied-piper"), "kubernetes:core/v1:ResourceQuota")[0]["inputs"]["spec"]["hard"]
    assert piper["requests.cpu"] == "8000m" and piper["requests.memory"] == "16384Mi"  # catalogue overrides
    policies = {p["inputs"]["metadata"]["name"]: p["inputs"]["spec"]
                for p in of_type(stark, "kubernetes:networking.k8s.io/v1:NetworkPolicy")}
    assert policies["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    assert policies["allow-from-ingress"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "ingress-nginx"}
    db_ips = sorted(f"{d['privateIp']}/32" for d in stark["outputs"]["databases"].values())
    allowed = sorted(t["ipBlock"]["cidr"] for t in policies["allow-own-databases"]["egress"][0]["to"])
    assert allowed == db_ips


def test_tenant_rbac_is_namespaced_and_cannot_touch_guard_rails(data):
    stark = stack_of(data, "dev.stark")
    assert not of_type(stark, "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding")
    role = of_type(stark, "kubernetes:rbac.authorization.k8s.io/v1:Role")[0]["inputs"]
    assert role["metadata"]["namespace"] == "tenant-stark"
    writable = {res for rule in role["rules"] for res in rule["resources"]
                if set(rule["verbs"]) & {"create", "update", "patch", "delete", "*"}}
    assert not writable & {"resourcequotas", "limitranges", "networkpolicies", "roles", "rolebindings"}


def test_service_account_iam_members_and_roles_exactly(data):
    stark = stack_of(data, "dev.stark")
    sa = "serviceAccount:t-dev-stark@tenancy-dev-482913.iam.gserviceaccount.com"
    grants = sorted((r["type"].split(":")[2], r["inputs"]["role"], r["inputs"].get("bucket") or r["inputs"].get("secretId")
                     or r["inputs"].get("serviceAccountId") or r["inputs"].get("project"))
                    for r in stark["resources"] if "iam" in r["type"].lower() and r["inputs"].get("member") in (sa,))
    assert grants == [
        ("BucketIAMMember", "roles/storage.objectAdmin", "dev-stark-uploads"),
        ("IAMMember", "roles/datastore.user", "tenancy-dev-482913"),
        ("SecretIamMember", "roles/secretmanager.secretAccessor", "dev-stark-postgres-1-tenancy-app"),
        ("SecretIamMember", "roles/secretmanager.secretAccessor", "dev-stark-postgres-2-tenancy-app"),
        ("SecretIamMember", "roles/secretmanager.secretAccessor", "dev-stark-postgres-3-tenancy-app"),
    ]
    datastore = [r for r in of_type(stark, "gcp:projects/iAMMember:IAMMember") if r["inputs"]["member"] == sa][0]
    assert datastore["inputs"]["condition"]["expression"] == \
        'resource.name == "projects/tenancy-dev-482913/databases/dev-stark" || ' \
        'resource.name.startsWith("projects/tenancy-dev-482913/databases/dev-stark/")'
    wi = of_type(stark, "gcp:serviceaccount/iAMMember:IAMMember")[0]["inputs"]
    assert wi["role"] == "roles/iam.workloadIdentityUser"
    assert wi["member"] == "serviceAccount:tenancy-dev-482913.svc.id.goog[tenant-stark/app]"
    ksa = of_type(stark, "kubernetes:core/v1:ServiceAccount")[0]["inputs"]["metadata"]
    assert ksa["annotations"]["iam.gke.io/gcp-service-account"] == "t-dev-stark@tenancy-dev-482913.iam.gserviceaccount.com"


def test_tenancy_sql_is_applied_to_each_tenant_database(data):
    stark = stack_of(data, "dev.stark")
    jobs = {j["inputs"]["metadata"]["name"].split("-")[2]: j["inputs"] for j in of_type(stark, "kubernetes:batch/v1:Job")}
    assert sorted(jobs) == ["1", "2", "3"]
    for job in jobs.values():
        pod = job["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == "sql-migrator"
        assert job["metadata"]["namespace"] == "tenant-stark"
    migrator = "serviceAccount:m-dev-stark@tenancy-dev-482913.iam.gserviceaccount.com"
    grants = sorted(r["inputs"]["secretId"] for r in of_type(stark, "gcp:secretmanager/secretIamMember:SecretIamMember")
                    if r["inputs"]["member"] == migrator)
    assert grants == [f"dev-stark-postgres-{i}-tenancy-owner" for i in (1, 2, 3)]


def test_tenant_databases(data):
    for name, ha in (("dev.stark", "ZONAL"), ("dev.cyberdyne", "REGIONAL")):
        instances = [r for r in of_type(stack_of(data, name), "gcp:sql/databaseInstance:DatabaseInstance")
                     if not r["inputs"].get("masterInstanceName")]
        assert len(instances) == 3
        for db in instances:
            s = db["inputs"]["settings"]
            assert s["ipConfiguration"]["ipv4Enabled"] is False and s["ipConfiguration"]["sslMode"] == "ENCRYPTED_ONLY"
            assert s["backupConfiguration"]["pointInTimeRecoveryEnabled"] is True
            assert s["availabilityType"] == ha
            assert db["options"]["protect"] is True and s["deletionProtectionEnabled"] is True
    retention = {r["inputs"]["settings"]["backupConfiguration"]["backupRetentionSettings"]["retainedBackups"]
                 for r in of_type(stack_of(data, "dev.cyberdyne"), "gcp:sql/databaseInstance:DatabaseInstance")}
    assert retention == {365}


def test_tenant_bucket(data):
    b = of_type(stack_of(data, "dev.pied-piper"), "gcp:storage/bucket:Bucket")[0]
    i = b["inputs"]
    assert i["name"] == "dev-pied-piper-uploads" and i["location"] == "europe-west4"  # the tenant's own region
    assert i["uniformBucketLevelAccess"] is True and i["publicAccessPrevention"] == "enforced"
    assert i["versioning"] == {"enabled": True}
    assert {r["action"]["type"] for r in i["lifecycleRules"]} == {"Delete", "AbortIncompleteMultipartUpload"}
    assert b["options"]["protect"] is True


NAME_KEYS = {"name", "namespace", "accountId", "secretId", "displayName", "bucket", "projectId", "tenant", "host",
             "dnsNames", "hosts", "member", "instance", "labels", "resourceLabels", "userLabels"}


def _name_values(d, under=False):
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _name_values(v, under or k in NAME_KEYS)
    elif isinstance(d, list):
        for v in d:
            yield from _name_values(v, under)
    elif isinstance(d, str) and under:
        yield d


def test_no_cross_tenant_references(data):
    catalog = load_catalog(ROOT / "tenants.yaml")
    ids = [t.id for t in catalog.tenants]
    for stack in data["stacks"]:
        if stack["kind"] != "tenant":
            continue
        values = [r["urn"] for r in stack["resources"]]
        for r in stack["resources"]:
            values.extend(_name_values(r["inputs"]))
        for other in (i for i in ids if i != stack["tenant"]):
            pattern = re.compile(rf"(^|[-./\[@]){re.escape(other)}($|[-./\]@])")
            hits = [v for v in values if pattern.search(v)]
            assert not hits, f"{stack['name']} names tenant {other}: {hits[:3]}"


def test_every_stateful_resource_is_protected(data):
    for stack in data["stacks"]:
        for r in stack["resources"]:
            if r["type"] in STATEFUL_TYPES:
                assert r["options"]["protect"], r["urn"]
    neo4j = [r for r in of_type(stack_of(data, "dev.stark"), "kubernetes:helm.sh/v3:Release") if r["inputs"]["name"] == "neo4j"]
    assert neo4j[0]["options"]["protect"] is True


def test_tenant_labels(data):
    for name in ("dev.stark", "dev.acme"):
        stack = stack_of(data, name)
        assert _check_labels(stack, stack["tenant"]) > 10


def test_suspended_tenant_keeps_data_scales_to_zero_and_stops_routing(data):
    wayne = stack_of(data, "dev.wayne")
    assert not of_type(wayne, "kubernetes:networking.k8s.io/v1:Ingress")
    assert not of_type(wayne, "kubernetes:cert-manager.io/v1:Certificate")
    app = [r for r in of_type(wayne, "kubernetes:helm.sh/v3:Release") if r["inputs"]["name"] == "app"][0]
    assert app["inputs"]["values"]["replicaCount"] == 0
    assert len(of_type(wayne, "gcp:sql/databaseInstance:DatabaseInstance")) == 3
    assert of_type(wayne, "gcp:storage/bucket:Bucket")


def test_routes_and_certificates(data):
    acme = stack_of(data, "dev.acme")
    cert = of_type(acme, "kubernetes:cert-manager.io/v1:Certificate")[0]["inputs"]["spec"]
    assert cert["dnsNames"] == ["acme.dev.saas-example.com", "portal.acme.example"]
    assert cert["issuerRef"] == {"kind": "ClusterIssuer", "name": "letsencrypt"}
    ingress = of_type(stack_of(data, "dev.stark"), "kubernetes:networking.k8s.io/v1:Ingress")[0]["inputs"]
    assert [r["host"] for r in ingress["spec"]["rules"]] == ["stark.dev.saas-example.com"]
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/limit-rpm"] == "1000"


def test_dedicated_tenant_operations(data):
    acme = stack_of(data, "dev.acme")
    sink = of_type(acme, "gcp:logging/projectSink:ProjectSink")[0]["inputs"]
    assert sink["destination"] == "storage.googleapis.com/acme-audit-logs" and sink["uniqueWriterIdentity"] is True
    assert sink["filter"] == 'resource.labels.namespace_name="tenant-acme" OR labels.tenant="acme"'
    assert acme["outputs"]["logSinkWriterIdentity"].startswith("serviceAccount:")
    channel = of_type(acme, "gcp:monitoring/notificationChannel:NotificationChannel")[0]["inputs"]
    assert channel["labels"] == {"email_address": "oncall@acme.example"}
    policies = {p["inputs"]["displayName"]: p["inputs"] for p in of_type(acme, "gcp:monitoring/alertPolicy:AlertPolicy")}
    assert set(policies) == {"acme.dev.saas-example.com is down", "portal.acme.example is down", "acme: 5xx above 5%"}
    assert all(len(p["notificationChannels"]) == 1 for p in policies.values()), "each alert goes to the tenant's channel"
    [record] = acme["outputs"]["dnsRecords"]
    assert (record["name"], record["type"], record["ttl"]) == ("portal.acme.example.", "A", 300)
    assert record["value"] == acme["outputs"]["ingressIp"]
    cyber = stack_of(data, "dev.cyberdyne")
    assert not of_type(cyber, "gcp:logging/projectSink:ProjectSink") and "dnsRecords" not in cyber["outputs"]
    assert not of_type(stack_of(data, "dev.stark"), "gcp:monitoring/alertPolicy:AlertPolicy")


def test_dedicated_tenant_uses_its_own_project_provider(data):
    acme = stack_of(data, "dev.acme")
    project = of_type(acme, "gcp:organizations/project:Project")[0]
    assert project["inputs"]["projectId"] == "acme-tenancy-prod" and project["inputs"]["billingAccount"] == "01AB23-45CD67-89EF01"
    assert project["options"]["protect"] is True
    providers = {r["name"]: json.loads(r["inputs"]["project"]) if r["inputs"]["project"].startswith('"') else r["inputs"]["project"]
                 for r in acme["resources"] if r["type"] == "pulumi:providers:gcp"}
    assert providers["gcp"] == "acme-tenancy-prod"
    # nothing except the project itself and its APIs lands through the platform-project provider
    org = [r for r in acme["resources"] if r["options"]["provider"] and "::gcp-org::" in r["options"]["provider"]]
    assert {r["type"] for r in org} == {"gcp:organizations/project:Project", "gcp:projects/service:Service"}
    for r in acme["resources"]:
        if r["type"].startswith("gcp:") and r["inputs"].get("project") and r["type"] != "gcp:projects/service:Service":
            assert r["inputs"]["project"] == "acme-tenancy-prod", r["urn"]
    cyber = stack_of(data, "dev.cyberdyne")
    cluster = of_type(cyber, "gcp:container/cluster:Cluster")[0]["inputs"]
    assert cluster["project"] == "cyberdyne-saas" and cluster["privateClusterConfig"]["enablePrivateEndpoint"] is True


def test_every_manifest_validates_against_the_official_schemas(sample_plan):
    _, _, out = sample_plan
    files = sorted((out / "manifests").rglob("*.yaml"))
    assert len(files) > 50
    checked = 0
    for f in files:
        doc = yaml.safe_load(f.read_text())
        if doc["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        checked += 1
    assert checked > 50


def test_manifest_validation_catches_a_broken_manifest():
    bad = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"}, "spec": {"hardd": {}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)
