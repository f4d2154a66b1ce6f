"""The environment's platform-side stacks under mocks: the global stack `dev`, its identity shard `dev.identity-1`,
cell `dev.cell-1` and pool shard `dev.pool-1`. Security settings by value, identity, directory, labels, SQL job,
each asserted of the stack that holds it and of no other."""

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

GLOBAL, IDENTITY, CELL, POOL = "dev", "dev.identity-1", "dev.cell-1", "dev.pool-1"
PLATFORM_STACKS = (GLOBAL, IDENTITY, CELL, POOL)


@pytest.fixture(scope="module")
def stacks(sample_plan):
    data = sample_plan[1]
    assert [s["name"] for s in data["stacks"] if s["kind"] != "tenant"] == list(PLATFORM_STACKS)
    return {name: stack_of(data, name) for name in PLATFORM_STACKS}


def counts(stacks, type_) -> dict[str, int]:
    """How many resources of `type_` each platform-side stack holds (stacks holding none left out)."""
    return {name: n for name, s in stacks.items() if (n := len(of_type(s, type_)))}


def only_in(stacks, name, type_) -> list[dict]:
    """The resources of `type_` in stack `name`, asserting that no other platform-side stack holds any."""
    where = counts(stacks, type_)
    assert set(where) <= {name}, f"{type_} in {sorted(where)}, expected only in {name}"
    return of_type(stacks[name], type_)


def one(stacks, name, type_):
    found = only_in(stacks, name, type_)
    assert len(found) == 1, f"expected one {type_} in {name}, found {len(found)}"
    return found[0]


def test_resource_counts_by_type(stacks):
    assert counts(stacks, "gcp:container/cluster:Cluster") == {CELL: 1}
    assert counts(stacks, "gcp:container/nodePool:NodePool") == {CELL: 2}          # workloads, and the gVisor sandbox pool
    assert counts(stacks, "gcp:sql/databaseInstance:DatabaseInstance") == {GLOBAL: 1, POOL: 1}  # registry of record; pool
    [registry] = of_type(stacks[GLOBAL], "gcp:sql/databaseInstance:DatabaseInstance")
    assert registry["inputs"]["name"] == "dev-registry"
    assert registry["options"]["protect"] is True
    assert registry["inputs"]["settings"]["ipConfiguration"]["ipv4Enabled"] is False
    assert stacks[GLOBAL]["outputs"]["registry"]["database"] == "app"
    assert [r["inputs"]["name"] for r in of_type(stacks[POOL], "gcp:sql/databaseInstance:DatabaseInstance")] == ["dev-pooled-postgres"]
    assert counts(stacks, "gcp:firestore/database:Database") == {POOL: 1}
    assert counts(stacks, "gcp:storage/bucket:Bucket") == {GLOBAL: 1, POOL: 1}    # the access-log bucket; the pool's
    assert counts(stacks, "gcp:identityplatform/tenant:Tenant") == {IDENTITY: 9}  # every tenant but the offboarded one
    assert counts(stacks, "gcp:identityplatform/config:Config") == {GLOBAL: 1}
    assert counts(stacks, "kubernetes:helm.sh/v3:Release") == {CELL: 2, POOL: 1}  # ingress-nginx, cert-manager; app
    # the global stack grows with nothing per tenant, an identity shard by one resource per tenant
    assert len(stacks[GLOBAL]["resources"]) == 31
    assert len(stacks[IDENTITY]["resources"]) == 2 + 9


def test_gke_cluster_security_settings(stacks):
    cluster = one(stacks, CELL, "gcp:container/cluster:Cluster")
    c = cluster["inputs"]
    assert c["name"] == "dev-shared" and stacks[CELL]["outputs"]["clusterName"] == "dev-shared"
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
    assert cluster["options"]["protect"] is True


def test_node_pool_runs_hardened_nodes_as_a_dedicated_account(stacks):
    [pool] = [p["inputs"] for p in only_in(stacks, CELL, "gcp:container/nodePool:NodePool") if p["inputs"]["name"] == "workloads"]
    assert pool["cluster"] == "dev-shared"
    assert pool["management"] == {"autoRepair": True, "autoUpgrade": True}
    nc = pool["nodeConfig"]
    assert nc["serviceAccount"] == "dev-gke-nodes@tenancy-dev-482913.iam.gserviceaccount.com"
    assert nc["workloadMetadataConfig"] == {"mode": "GKE_METADATA"}
    assert nc["shieldedInstanceConfig"] == {"enableSecureBoot": True, "enableIntegrityMonitoring": True}
    roles = {name: sorted(r["inputs"]["role"] for r in of_type(s, "gcp:projects/iAMMember:IAMMember")
                          if r["inputs"]["member"].startswith("serviceAccount:dev-gke-nodes@"))
             for name, s in stacks.items()}
    assert roles == {GLOBAL: [], IDENTITY: [], POOL: [],
                     CELL: ["roles/artifactregistry.reader", "roles/logging.logWriter", "roles/monitoring.metricWriter",
                            "roles/monitoring.viewer", "roles/stackdriver.resourceMetadata.writer"]}


def test_pooled_postgres_is_private_ssl_only_backed_up_and_protected(stacks):
    where = {name: [r for r in of_type(s, "gcp:sql/databaseInstance:DatabaseInstance") if r["inputs"]["name"] == "dev-pooled-postgres"]
             for name, s in stacks.items()}
    assert {name for name, found in where.items() if found} == {POOL}
    [db] = where[POOL]
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
    assert stacks[POOL]["outputs"]["poolDatabase"] == {
        "shard": "pool-1", "connectionName": "tenancy-dev-482913:europe-west1:dev-pooled-postgres", "database": "app"}


def test_passwords_are_generated_secret_and_in_secret_manager(stacks):
    users = {name: sorted((u["inputs"]["instance"], u["inputs"]["name"]) for u in of_type(s, "gcp:sql/user:User"))
             for name, s in stacks.items()}
    roles = ["tenancy_app", "tenancy_owner", "tenancy_replication"]
    assert users == {GLOBAL: [("dev-registry", r) for r in roles], IDENTITY: [], CELL: [],
                     POOL: [("dev-pooled-postgres", r) for r in roles]}
    assert all(u["inputs"]["password"] == "[secret]" for s in stacks.values() for u in of_type(s, "gcp:sql/user:User"))
    secrets = {name: sorted(x["inputs"]["secretId"] for x in of_type(s, "gcp:secretmanager/secret:Secret"))
               for name, s in stacks.items()}
    assert secrets == {GLOBAL: ["dev-registry-tenancy-app", "dev-registry-tenancy-owner", "dev-registry-tenancy-replication"],
                       IDENTITY: [], CELL: [],
                       POOL: ["dev-pooled-tenancy-app", "dev-pooled-tenancy-owner", "dev-pooled-tenancy-replication"]}
    versions = [v for s in stacks.values() for v in of_type(s, "gcp:secretmanager/secretVersion:SecretVersion")]
    assert len(versions) == 6 and all(v["inputs"]["secretData"] == "[secret]" for v in versions)


def test_shared_bucket_and_firestore(stacks):
    buckets = {name: {b["inputs"]["name"]: b for b in of_type(s, "gcp:storage/bucket:Bucket")} for name, s in stacks.items()}
    assert {name: sorted(found) for name, found in buckets.items()} == {
        GLOBAL: ["tenancy-dev-482913-dev-access-logs"], IDENTITY: [], CELL: [], POOL: ["tenancy-dev-482913-dev-pooled-uploads"]}
    b = buckets[POOL]["tenancy-dev-482913-dev-pooled-uploads"]
    assert b["inputs"]["uniformBucketLevelAccess"] is True
    assert b["inputs"]["publicAccessPrevention"] == "enforced"
    assert b["inputs"]["versioning"] == {"enabled": True}
    assert b["inputs"]["logging"] == {"logBucket": "tenancy-dev-482913-dev-access-logs",
                                      "logObjectPrefix": "tenancy-dev-482913-dev-pooled-uploads"}
    assert b["options"]["protect"] is True
    grants = {name: [(g["inputs"]["bucket"], g["inputs"]["role"], g["inputs"]["member"])
                     for g in of_type(s, "gcp:storage/bucketIAMMember:BucketIAMMember")] for name, s in stacks.items()}
    assert grants == {GLOBAL: [("tenancy-dev-482913-dev-access-logs", "roles/storage.objectCreator",
                                "group:cloud-storage-analytics@google.com")],
                      IDENTITY: [], CELL: [],
                      POOL: [("tenancy-dev-482913-dev-pooled-uploads", "roles/storage.objectAdmin",
                              "serviceAccount:t-dev-pooled@tenancy-dev-482913.iam.gserviceaccount.com")]}
    fs = one(stacks, POOL, "gcp:firestore/database:Database")
    assert fs["inputs"]["name"] == "dev-pooled"
    assert fs["inputs"]["deleteProtectionState"] == "DELETE_PROTECTION_ENABLED"
    assert fs["inputs"]["pointInTimeRecoveryEnablement"] == "POINT_IN_TIME_RECOVERY_ENABLED"
    assert fs["options"]["protect"] is True


def test_dns_zone_with_app_and_wildcard_records(stacks):
    # the zone is the environment's; the records point at the cell's edge
    zone = one(stacks, GLOBAL, "gcp:dns/managedZone:ManagedZone")["inputs"]
    assert zone["dnsName"] == "dev.saas-example.com." and zone["dnssecConfig"] == {"state": "on"}
    records = sorted((r["inputs"]["name"], r["inputs"]["managedZone"]) for r in only_in(stacks, CELL, "gcp:dns/recordSet:RecordSet"))
    assert records == [("*.dev.saas-example.com.", zone["name"]), ("app.dev.saas-example.com.", zone["name"])]


def test_ingress_cert_manager_and_cluster_issuer(stacks):
    releases = {name: {r["inputs"]["name"]: r for r in of_type(s, "kubernetes:helm.sh/v3:Release")} for name, s in stacks.items()}
    assert {name: set(found) for name, found in releases.items()} == {
        GLOBAL: set(), IDENTITY: set(), CELL: {"ingress-nginx", "cert-manager"}, POOL: {"app"}}
    assert releases[CELL]["cert-manager"]["inputs"]["values"]["crds"] == {"enabled": True}
    issuer = one(stacks, CELL, "kubernetes:cert-manager.io/v1:ClusterIssuer")["inputs"]
    assert issuer["spec"]["acme"]["email"] == "platform-team@saas-example.com"
    assert issuer["spec"]["acme"]["solvers"] == [{"http01": {"ingress": {"ingressClassName": "nginx"}}}]
    assert stacks[CELL]["outputs"]["clusterIssuer"] == issuer["metadata"]["name"] == "letsencrypt"


def test_identity_platform_tenant_per_catalogue_tenant(stacks):
    catalog = load_catalog(ROOT / "tenants.yaml")
    config = one(stacks, GLOBAL, "gcp:identityplatform/config:Config")["inputs"]
    assert config["multiTenant"] == {"allowTenants": True}
    tenants = only_in(stacks, IDENTITY, "gcp:identityplatform/tenant:Tenant")
    expected = {identity_display_name(t.id) for t in catalog.tenants if t.state.value != "offboarded"}
    assert {t["inputs"]["displayName"] for t in tenants} == expected
    assert all(t["options"]["protect"] for t in tenants), "user pools survive refactors"
    assert all(t["inputs"]["deletionPolicy"] == "ABANDON" for t in tenants)
    identity = json.loads(stacks[IDENTITY]["outputs"]["identityTenants"])
    assert {identity_display_name(tid) for tid in identity} == expected


def _directory_configmap(stack):
    [cm] = [r for r in of_type(stack, "kubernetes:core/v1:ConfigMap") if r["inputs"]["metadata"]["name"] == "tenant-directory"]
    return cm["inputs"]


def test_tenant_directory(stacks):
    # each tenant's entry lives in its home unit: a pooled tenant's in its pool shard, any other's in its cell
    cell = json.loads(stacks[CELL]["outputs"]["tenantDirectory"])
    pool = json.loads(stacks[POOL]["outputs"]["tenantDirectory"])
    assert set(cell) == {"acme", "cyberdyne", "pied-piper", "stark", "wayne"}
    assert set(pool) == {"globex", "hooli", "initech", "vandelay"}
    assert {e["model"] for e in pool.values()} == {"pooled"} and "pooled" not in {e["model"] for e in cell.values()}
    assert "tenantDirectory" not in stacks[GLOBAL]["outputs"] and "tenantDirectory" not in stacks[IDENTITY]["outputs"]
    directory = {**cell, **pool}
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
    # each unit's ConfigMap holds exactly its share, in its own namespace
    for name, share, namespace in ((CELL, cell, "tenancy-system"), (POOL, pool, "pooled")):
        cm = _directory_configmap(stacks[name])
        assert json.loads(cm["data"]["tenants.json"]) == share, name
        assert cm["metadata"]["namespace"] == namespace


def test_pooled_app_values_come_from_the_pooled_tenants_plans(stacks):
    [app] = [r["inputs"] for r in of_type(stacks[POOL], "kubernetes:helm.sh/v3:Release") if r["inputs"]["name"] == "app"]
    values = app["values"]
    assert app["namespace"] == "pooled"
    assert values["tenants"]["hooli"] == {"plan": "premium", "active": True, "apiRateLimitPerMinute": 800, "storageQuotaGb": 20,
                                          "features": ["api-access", "comments", "core", "data-export", "likes"]}
    assert values["tenants"]["initech"]["features"] == ["comments", "core"]
    assert values["tenants"]["vandelay"]["active"] is False
    assert set(values["tenants"]) == {"globex", "initech", "hooli", "vandelay"}
    assert values["database"]["secretName"] == "dev-pooled-tenancy-app"


def test_sql_is_applied_by_a_job_named_by_its_hash(stacks):
    from components.sqljob import REGISTER_FILE

    [job] = [r["inputs"] for r in only_in(stacks, POOL, "kubernetes:batch/v1:Job")]
    [cm] = [r for r in of_type(stacks[POOL], "kubernetes:core/v1:ConfigMap")
            if r["inputs"]["metadata"]["name"] == job["metadata"]["name"]]
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


def test_labels_on_every_labelable_resource(stacks):
    checked = {name: _check_labels(s, None) for name, s in stacks.items()}
    assert checked[GLOBAL] >= 5 and checked[CELL] >= 10 and checked[POOL] >= 20, checked   # Identity Platform tenants take none
    for name, s in stacks.items():
        [gcp_provider] = [r for r in s["resources"] if r["type"] == "pulumi:providers:gcp"]
        # provider inputs travel as JSON strings
        assert json.loads(gcp_provider["inputs"]["defaultLabels"]) == {"managed-by": "tenancy", "environment": "dev",
                                                                       "model": "shared"}, name
