"""The platform stack under mocks: security settings by value, identity, directory, labels, SQL job."""

from __future__ import annotations

import inspect
import json

import pulumi_gcp
import pytest

from components.workload import sql_job_name
from stacks.platform import sql_files
from tenancy.catalog import load_catalog
from tenancy.naming import identity_display_name
from tests.conftest import ROOT, of_type, stack_of


@pytest.fixture(scope="module")
def platform(sample_plan):
    return stack_of(sample_plan[1], "dev")


def one(stack, type_):
    found = of_type(stack, type_)
    assert len(found) == 1, f"expected one {type_}, found {len(found)}"
    return found[0]


def test_resource_counts_by_type(platform):
    counts = {}
    for r in platform["resources"]:
        counts[r["type"]] = counts.get(r["type"], 0) + 1
    assert counts["gcp:container/cluster:Cluster"] == 1
    assert counts["gcp:container/nodePool:NodePool"] == 2                 # workloads, and the gVisor sandbox pool
    assert counts["gcp:sql/databaseInstance:DatabaseInstance"] == 2       # the pool and the registry of record
    registry = [r for r in of_type(platform, "gcp:sql/databaseInstance:DatabaseInstance")
                if r["inputs"]["name"] == "dev-registry"]
    assert registry and registry[0]["options"]["protect"] is True
    assert registry[0]["inputs"]["settings"]["ipConfiguration"]["ipv4Enabled"] is False
    assert platform["outputs"]["registry"]["database"] == "app"
    assert counts["gcp:firestore/database:Database"] == 1
    assert counts["gcp:storage/bucket:Bucket"] == 2                       # the pool's, and the access-log bucket
    assert counts["gcp:identityplatform/tenant:Tenant"] == 9              # every tenant but the offboarded one
    assert counts["kubernetes:helm.sh/v3:Release"] == 3                   # ingress-nginx, cert-manager, app


def test_gke_cluster_security_settings(platform):
    c = one(platform, "gcp:container/cluster:Cluster")["inputs"]
    assert c["workloadIdentityConfig"] == {"workloadPool": "tenancy-dev-482913.svc.id.goog"}
    assert c["privateClusterConfig"]["enablePrivateNodes"] is True
    assert c["privateClusterConfig"]["masterIpv4CidrBlock"] == "172.16.0.0/28"
    assert c["enableShieldedNodes"] is True
    assert c["datapathProvider"] == "ADVANCED_DATAPATH"
    assert c["networkPolicy"] == {"enabled": False}, "Dataplane V2 enforces NetworkPolicy, not the Calico add-on"
    assert c["enableLegacyAbac"] is False
    assert c["masterAuth"]["clientCertificateConfig"] == {"issueClientCertificate": False}
    assert c["releaseChannel"] == {"channel": "REGULAR"}
    assert c["removeDefaultNodePool"] is True
    assert c["databaseEncryption"]["state"] == "ENCRYPTED"
    assert c["databaseEncryption"]["keyName"].endswith("/cryptoKeys/etcd-secrets")
    assert c["loggingConfig"]["enableComponents"] == ["SYSTEM_COMPONENTS", "WORKLOADS"]
    assert c["monitoringConfig"]["enableComponents"] == ["SYSTEM_COMPONENTS"]
    assert c["deletionProtection"] is True
    assert c["enableKubernetesAlpha"] is False
    assert one(platform, "gcp:container/cluster:Cluster")["options"]["protect"] is True


def test_node_pool_runs_hardened_nodes_as_a_dedicated_account(platform):
    [pool] = [p["inputs"] for p in of_type(platform, "gcp:container/nodePool:NodePool") if p["inputs"]["name"] == "workloads"]
    assert pool["management"] == {"autoRepair": True, "autoUpgrade": True}
    nc = pool["nodeConfig"]
    assert nc["serviceAccount"] == "dev-gke-nodes@tenancy-dev-482913.iam.gserviceaccount.com"
    assert nc["workloadMetadataConfig"] == {"mode": "GKE_METADATA"}
    assert nc["shieldedInstanceConfig"] == {"enableSecureBoot": True, "enableIntegrityMonitoring": True}
    roles = sorted(r["inputs"]["role"] for r in of_type(platform, "gcp:projects/iAMMember:IAMMember")
                   if r["inputs"]["member"].startswith("serviceAccount:dev-gke-nodes@"))
    assert roles == ["roles/artifactregistry.reader", "roles/logging.logWriter", "roles/monitoring.metricWriter",
                     "roles/monitoring.viewer", "roles/stackdriver.resourceMetadata.writer"]


def test_pooled_postgres_is_private_ssl_only_backed_up_and_protected(platform):
    [db] = [r for r in of_type(platform, "gcp:sql/databaseInstance:DatabaseInstance")
            if r["inputs"]["name"] == "dev-pooled-postgres"]
    s = db["inputs"]["settings"]
    assert s["ipConfiguration"]["ipv4Enabled"] is False
    assert s["ipConfiguration"]["sslMode"] == "ENCRYPTED_ONLY"
    assert s["ipConfiguration"]["privateNetwork"] == "projects/tenancy-dev-482913/global/networks/platform-vpc"
    assert s["backupConfiguration"]["enabled"] is True
    assert s["backupConfiguration"]["pointInTimeRecoveryEnabled"] is True
    # the longest retention among the pooled plans in use (free 7, basic 7, premium 14)
    assert s["backupConfiguration"]["backupRetentionSettings"]["retainedBackups"] == 14
    assert s["deletionProtectionEnabled"] is True and db["inputs"]["deletionProtection"] is True
    assert db["options"]["protect"] is True
    assert db["inputs"]["name"] == "dev-pooled-postgres"


def test_passwords_are_generated_secret_and_in_secret_manager(platform):
    users = of_type(platform, "gcp:sql/user:User")
    assert sorted(u["inputs"]["name"] for u in users) == sorted(["tenancy_app", "tenancy_owner", "tenancy_replication"] * 2)
    assert all(u["inputs"]["password"] == "[secret]" for u in users)
    secrets = sorted(s["inputs"]["secretId"] for s in of_type(platform, "gcp:secretmanager/secret:Secret"))
    assert secrets == ["dev-pooled-tenancy-app", "dev-pooled-tenancy-owner", "dev-pooled-tenancy-replication",
                       "dev-registry-tenancy-app", "dev-registry-tenancy-owner", "dev-registry-tenancy-replication"]
    assert all(v["inputs"]["secretData"] == "[secret]" for v in of_type(platform, "gcp:secretmanager/secretVersion:SecretVersion"))


def test_shared_bucket_and_firestore(platform):
    buckets = {b["inputs"]["name"]: b for b in of_type(platform, "gcp:storage/bucket:Bucket")}
    b = buckets["tenancy-dev-482913-dev-pooled-uploads"]
    assert b["inputs"]["uniformBucketLevelAccess"] is True
    assert b["inputs"]["publicAccessPrevention"] == "enforced"
    assert b["inputs"]["versioning"] == {"enabled": True}
    assert b["inputs"]["logging"] == {"logBucket": "tenancy-dev-482913-dev-access-logs",
                                      "logObjectPrefix": "tenancy-dev-482913-dev-pooled-uploads"}
    assert b["options"]["protect"] is True
    grants = [(g["inputs"]["bucket"], g["inputs"]["role"], g["inputs"]["member"])
              for g in of_type(platform, "gcp:storage/bucketIAMMember:BucketIAMMember")]
    assert grants == [("tenancy-dev-482913-dev-access-logs", "roles/storage.objectCreator",
                       "group:cloud-storage-analytics@google.com"),
                      ("tenancy-dev-482913-dev-pooled-uploads", "roles/storage.objectAdmin",
                       "serviceAccount:t-dev-pooled@tenancy-dev-482913.iam.gserviceaccount.com")]
    fs = one(platform, "gcp:firestore/database:Database")
    assert fs["inputs"]["deleteProtectionState"] == "DELETE_PROTECTION_ENABLED"
    assert fs["inputs"]["pointInTimeRecoveryEnablement"] == "POINT_IN_TIME_RECOVERY_ENABLED"
    assert fs["options"]["protect"] is True


def test_dns_zone_with_app_and_wildcard_records(platform):
    zone = one(platform, "gcp:dns/managedZone:ManagedZone")["inputs"]
    assert zone["dnsName"] == "dev.saas-example.com." and zone["dnssecConfig"] == {"state": "on"}
    records = sorted(r["inputs"]["name"] for r in of_type(platform, "gcp:dns/recordSet:RecordSet"))
    assert records == ["*.dev.saas-example.com.", "app.dev.saas-example.com."]


def test_ingress_cert_manager_and_cluster_issuer(platform):
    releases = {r["inputs"]["name"]: r for r in of_type(platform, "kubernetes:helm.sh/v3:Release")}
    assert set(releases) == {"ingress-nginx", "cert-manager", "app"}
    assert releases["cert-manager"]["inputs"]["values"]["crds"] == {"enabled": True}
    issuer = one(platform, "kubernetes:cert-manager.io/v1:ClusterIssuer")["inputs"]
    assert issuer["spec"]["acme"]["email"] == "platform-team@saas-example.com"
    assert issuer["spec"]["acme"]["solvers"] == [{"http01": {"ingress": {"ingressClassName": "nginx"}}}]


def test_identity_platform_tenant_per_catalogue_tenant(platform):
    catalog = load_catalog(ROOT / "tenants.yaml")
    config = one(platform, "gcp:identityplatform/config:Config")["inputs"]
    assert config["multiTenant"] == {"allowTenants": True}
    tenants = of_type(platform, "gcp:identityplatform/tenant:Tenant")
    expected = {identity_display_name(t.id) for t in catalog.tenants if t.state.value != "offboarded"}
    assert {t["inputs"]["displayName"] for t in tenants} == expected
    assert all(t["options"]["protect"] for t in tenants), "user pools survive refactors"
    assert all(t["inputs"]["deletionPolicy"] == "ABANDON" for t in tenants)


def test_tenant_directory(platform):
    directory = json.loads(platform["outputs"]["tenantDirectory"])
    assert "umbrella" not in directory                          # offboarded: gone
    assert directory["vandelay"]["state"] == "suspended"         # suspended: kept, marked
    assert directory["wayne"]["state"] == "suspended"
    globex = directory["globex"]
    assert globex["model"] == "pooled" and globex["hostnames"] == ["app.dev.saas-example.com"]
    assert globex["placement"]["prefix"] == "globex/" and globex["placement"]["namespace"] == "pooled"
    assert globex["databaseSecrets"] == {"pooled": "dev-pooled-tenancy-app"}
    acme = directory["acme"]
    assert acme["hostnames"] == ["acme.dev.saas-example.com", "portal.acme.example"]
    assert acme["placement"]["project"] == "acme-tenancy-prod" and acme["placement"]["stack"] == "dev.acme"
    assert acme["databaseSecrets"]["postgres-2"] == "dev-acme-postgres-2-tenancy-app"
    assert acme["identityTenant"].startswith("t-acme-")
    cm = [r for r in of_type(platform, "kubernetes:core/v1:ConfigMap") if r["inputs"]["metadata"]["name"] == "tenant-directory"][0]
    assert json.loads(cm["inputs"]["data"]["tenants.json"]) == directory
    assert cm["inputs"]["metadata"]["namespace"] == "tenancy-system"


def test_pooled_app_values_come_from_the_pooled_tenants_plans(platform):
    app = [r for r in of_type(platform, "kubernetes:helm.sh/v3:Release") if r["inputs"]["name"] == "app"][0]["inputs"]
    values = app["values"]
    assert app["namespace"] == "pooled"
    assert values["tenants"]["hooli"] == {"plan": "premium", "active": True, "apiRateLimitPerMinute": 800, "storageQuotaGb": 20,
                                          "features": ["api-access", "comments", "core", "data-export", "likes"]}
    assert values["tenants"]["initech"]["features"] == ["comments", "core"]
    assert values["tenants"]["vandelay"]["active"] is False
    assert set(values["tenants"]) == {"globex", "initech", "hooli", "vandelay"}
    assert values["database"]["secretName"] == "dev-pooled-tenancy-app"


def test_sql_is_applied_by_a_job_named_by_its_hash(platform):
    from components.sqljob import REGISTER_FILE

    job = [r for r in of_type(platform, "kubernetes:batch/v1:Job")][0]["inputs"]
    cm = [r for r in of_type(platform, "kubernetes:core/v1:ConfigMap")
          if r["inputs"]["metadata"]["name"] == job["metadata"]["name"]][0]
    files = {**sql_files(), REGISTER_FILE: cm["inputs"]["data"][REGISTER_FILE]}  # the tenancy SQL + the registration
    assert cm["inputs"]["data"] == files
    assert job["metadata"]["name"] == sql_job_name("\n".join(files[k] for k in sorted(files)))
    init = job["spec"]["template"]["spec"]["initContainers"][0]
    assert "--secret=dev-pooled-tenancy-owner" in init["args"][0]   # a secret's name, fetched at run time
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PGSSLMODE"] == "verify-ca" and env["PGUSER"] == "tenancy_owner"


def _labelable(type_: str) -> str | None:
    """The labels input a GCP resource type takes (from the provider SDK), or None."""
    module, cls = type_.split(":")[1].split("/")[0], type_.split(":")[2]
    klass = getattr(getattr(pulumi_gcp, module), cls, None)
    if klass is None:
        return None
    params = inspect.signature(klass._internal_init).parameters
    for key, wire in (("user_labels", "userLabels"), ("resource_labels", "resourceLabels"), ("labels", "labels")):
        if key in params:
            return wire
    if type_ == "gcp:sql/databaseInstance:DatabaseInstance":
        return "settings.userLabels"
    return None


def _check_labels(stack, tenant: str | None):
    checked = 0
    for r in stack["resources"]:
        t = r["type"]
        if t.startswith("gcp:") and not t.startswith("gcp:index"):
            field = _labelable(t)
            if field is None:
                continue
            labels = r["inputs"]
            for part in field.split("."):
                labels = (labels or {}).get(part)
            assert labels, f"{r['urn']} takes {field} but has none"
            assert labels.get("managed-by") == "tenancy" and labels.get("environment") == "dev" and labels.get("model"), r["urn"]
            if tenant:
                assert labels.get("tenant") == tenant, r["urn"]
            checked += 1
        elif t.startswith("kubernetes:") and "metadata" in r["inputs"]:
            labels = r["inputs"]["metadata"].get("labels") or {}
            assert labels.get("app.kubernetes.io/managed-by") == "tenancy", r["urn"]
            assert labels.get("tenancy.io/environment") == "dev" and labels.get("tenancy.io/model"), r["urn"]
            if tenant:
                assert labels.get("tenancy.io/tenant") == tenant, r["urn"]
            checked += 1
    return checked


def test_labels_on_every_labelable_resource(platform):
    assert _check_labels(platform, None) > 20
    gke_provider = [r for r in platform["resources"] if r["type"] == "pulumi:providers:gcp"][0]
    # provider inputs travel as JSON strings
    assert json.loads(gke_provider["inputs"]["defaultLabels"]) == {"managed-by": "tenancy", "environment": "dev", "model": "shared"}
