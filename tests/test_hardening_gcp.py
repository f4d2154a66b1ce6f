"""Isolation and hardening of the Google Cloud resources, asserted by value on the real stack programs.

A small catalogue exercises what the committed one does not: two tenants whose ids share a prefix
(`stark`, `stark-labs`), per-plan node isolation of every kind, two dedicated tenants without a project
of their own, and one with its own project. The whole environment is planned once (its global stack, identity
shard, cell and pool shard first, their exports feeding the tenant stacks), with Cloud SQL's server CA
certificates faked so their wiring shows.
"""

from __future__ import annotations

import re
import textwrap
from collections import Counter

import pytest

from components.postgres import ca_bundle
from tenancy import recorder
from tenancy.catalog import load_catalog
from tenancy.envconfig import PlatformConfig, check_catalog
from tenancy.errors import ConfigError
from tests.conftest import ROOT, of_type, stack_of

PROJECT = "tenancy-dev-482913"
LIMITS = "{api_rate_limit: 1000, storage_gb: 50, cpu: 4, memory_gb: 8, pods: 50, pvcs: 10, services: 10, backup_retention_days: 30}"
CATALOG = textwrap.dedent(f"""\
    version: 1
    plans:
      isolated:
        model: namespace
        node_isolation: dedicated
        limits: {LIMITS}
        features: [core, comments]
        databases: [postgres-1]
      enterprise-gvisor:
        model: dedicated
        node_isolation: sandbox
        limits: {LIMITS}
        features: [core, comments]
        databases: [postgres-1]
    tenants:
      - {{id: globex, name: Globex, plan: free, admin_email: it@globex.example}}
      - {{id: stark, name: Stark, plan: standard, admin_email: ops@stark.example, features: [core]}}
      - {{id: stark-labs, name: Stark Labs, plan: standard, admin_email: ops@labs.example, features: [core],
         region: europe-west4}}
      - {{id: vault, name: Vault, plan: isolated, admin_email: ops@vault.example}}
      - {{id: orbit, name: Orbit, plan: enterprise, admin_email: ops@orbit.example, features: [core],
         custom_domain: portal.orbit.example, dedicated: {{read_replicas: 1}}}}
      - {{id: nimbus, name: Nimbus, plan: enterprise, admin_email: ops@nimbus.example, features: [core]}}
      - {{id: zen, name: Zen, plan: enterprise-gvisor, admin_email: ops@zen.example,
         dedicated: {{project: {{id: zen-saas-project}}}}}}
    """)
# Two CAs, as Cloud SQL presents them during a CA rotation.
CA_PEMS = ["-----BEGIN CERTIFICATE-----\nMIIold\n-----END CERTIFICATE-----", "-----BEGIN CERTIFICATE-----\nMIInew\n-----END CERTIFICATE-----"]
BUNDLE = CA_PEMS[0] + "\n" + CA_PEMS[1] + "\n"
# The environment's platform-side stacks: what the whole environment shares, Identity Platform tenants, the shared
# cluster and its edge, the pooled tier.
GLOBAL, IDENTITY, CELL, POOL = "dev", "dev.identity-1", "dev.cell-1", "dev.pool-1"
PLATFORM_STACKS = (GLOBAL, IDENTITY, CELL, POOL)


@pytest.fixture(scope="module")
def plan_data(tmp_path_factory):
    from tenancy import plan as planmod

    path = tmp_path_factory.mktemp("catalog") / "tenants.yaml"
    path.write_text(CATALOG)
    original = recorder.computed_outputs

    def with_server_ca(typ, name, inputs, project):
        out = original(typ, name, inputs, project)
        if typ == "gcp:sql/databaseInstance:DatabaseInstance":
            out["serverCaCerts"] = [{"cert": pem, "commonName": "C=US,O=Google\\, Inc"} for pem in CA_PEMS]
        return out

    recorder.computed_outputs = with_server_ca
    try:
        result = planmod.plan(load_catalog(path), "dev", workers=1)
    finally:
        recorder.computed_outputs = original
    return result.to_json()


def _iam_conditions(data):
    for stack in data["stacks"]:
        for r in stack["resources"]:
            cond = r["inputs"].get("condition") if "iam" in r["type"].lower() else None
            if cond:
                yield stack["name"], r, cond["expression"]


def _cel_matches(expression: str, resource_name: str) -> bool:
    """Evaluates the two CEL forms the stacks write: `resource.name == "x"` and `.startsWith("x")`, or'ed."""
    results = []
    for term in expression.split("||"):
        term = term.strip()
        if m := re.fullmatch(r'resource\.name == "([^"]*)"', term):
            results.append(resource_name == m.group(1))
        elif m := re.fullmatch(r'resource\.name\.startsWith\("([^"]*)"\)', term):
            results.append(resource_name.startswith(m.group(1)))
        else:
            raise AssertionError(f"unexpected condition term {term!r}")
    return any(results)


# 1 ------------------------------------------------------------------------------------ IAM conditions

def test_firestore_grant_matches_its_own_database_exactly(plan_data):
    db = f"projects/{PROJECT}/databases"
    conditions = {}
    for stack, r, expr in _iam_conditions(plan_data):
        if r["inputs"]["role"] == "roles/datastore.user":
            conditions[stack] = expr
    assert conditions["dev.stark"] == (f'resource.name == "{db}/dev-stark" || '
                                       f'resource.name.startsWith("{db}/dev-stark/")')
    stark, labs = conditions["dev.stark"], conditions["dev.stark-labs"]
    assert _cel_matches(stark, f"{db}/dev-stark") and _cel_matches(stark, f"{db}/dev-stark/documents/orders/1")
    assert not _cel_matches(stark, f"{db}/dev-stark-labs"), "stark's grant must not reach stark-labs' database"
    assert not _cel_matches(stark, f"{db}/dev-stark-labs/documents/orders/1")
    assert _cel_matches(labs, f"{db}/dev-stark-labs/documents/x") and not _cel_matches(labs, f"{db}/dev-stark/documents/x")
    # the pool's grant is its pool shard's, and no other platform-side stack's
    assert set(conditions) & set(PLATFORM_STACKS) == {POOL}
    pooled = conditions[POOL]
    assert _cel_matches(pooled, f"{db}/dev-pooled") and not _cel_matches(pooled, f"{db}/dev-pooled-archive")


def test_no_iam_condition_matches_a_name_by_bare_prefix(plan_data):
    found = list(_iam_conditions(plan_data))
    assert len(found) >= 7                     # the pool, and every non-pooled tenant
    for stack, r, expr in found:
        for prefix in re.findall(r'startsWith\("([^"]*)"\)', expr):
            assert prefix.endswith("/"), f"{stack} {r['urn']}: startsWith({prefix!r}) also matches longer names"


# 2 ------------------------------------------------------------------------------ sign-in and domains

def test_authorized_domains_are_the_platform_hosts_only(plan_data):
    configs = {name: of_type(stack_of(plan_data, name), "gcp:identityplatform/config:Config") for name in PLATFORM_STACKS}
    assert {name: len(found) for name, found in configs.items()} == {GLOBAL: 1, IDENTITY: 0, CELL: 0, POOL: 0}
    [config] = configs[GLOBAL]
    assert config["inputs"]["authorizedDomains"] == ["app.dev.saas-example.com", "auth.dev.saas-example.com"]
    # the custom domain is a tenant host, not an authorized domain: its pages send sign-in to the auth host
    assert stack_of(plan_data, "dev.orbit")["outputs"]["hostnames"] == ["orbit.dev.saas-example.com", "portal.orbit.example"]
    assert _app_values(plan_data, "dev.orbit")["signInHost"] == "auth.dev.saas-example.com"
    assert _app_values(plan_data, "dev.stark")["signInHost"] == "auth.dev.saas-example.com"
    assert _app_values(plan_data, POOL)["signInHost"] == "auth.dev.saas-example.com"    # served by the shared app


def _cfg(env: str = "dev", **extra) -> PlatformConfig:
    return PlatformConfig.validate({"gcp_project": PROJECT, "base_domain": "dev.saas-example.com",
                                    "acme_email": "ops@saas-example.com", **extra}, env)


def _catalog_with_domains(tmp_path, *domains: str):
    tenants = "\n".join(f"  - {{id: ent{i}, name: E{i}, plan: enterprise, admin_email: a@b.example, custom_domain: {d}}}"
                        for i, d in enumerate(domains))
    path = tmp_path / "tenants.yaml"
    path.write_text(f"version: 1\ntenants:\n{tenants}\n")
    return load_catalog(path)


def test_check_catalog_refuses_custom_domains_the_platform_serves(tmp_path):
    catalog = _catalog_with_domains(tmp_path, "auth.dev.saas-example.com", "shop.dev.saas-example.com",
                                    "dev.saas-example.com", "portal.acme.example", "dev.saas-example.com.evil.example")
    problems = check_catalog(catalog, _cfg())
    assert [(p.subject, p.field) for p in problems] == [("tenant 'ent0'", "custom_domain"), ("tenant 'ent1'", "custom_domain"),
                                                       ("tenant 'ent2'", "custom_domain")]
    assert str(problems[0]) == (f"{tmp_path / 'tenants.yaml'}:3: tenant 'ent0': custom_domain: custom domain "
                                "'auth.dev.saas-example.com' is the platform's own host auth.<baseDomain> in environment dev; "
                                "use a domain the tenant owns")
    assert problems[1].message == ("custom domain 'shop.dev.saas-example.com' is under the platform's base domain "
                                   "'dev.saas-example.com' (dev), where the platform routes tenant subdomains; use a domain "
                                   "the tenant owns, or its subdomain instead")
    assert "custom domain 'dev.saas-example.com' is under the platform's base domain" in problems[2].message
    assert check_catalog(load_catalog(ROOT / "tenants.yaml"), _cfg()) == []



def _cli(capsys, *argv: str) -> tuple[int, list[str], list[str]]:
    """`tenancy ARGV` through the real entry point: (exit code, stdout lines, stderr lines)."""
    from tenancy.cli import main

    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out.splitlines(), out.err.splitlines()


def test_validate_and_plan_refuse_custom_domains_the_platform_serves(tmp_path, capsys):
    _catalog_with_domains(tmp_path, "auth.dev.saas-example.com", "shop.dev.saas-example.com", "portal.orbit.example")
    path = tmp_path / "tenants.yaml"
    expected = [
        f"{path}:3: tenant 'ent0': custom_domain: custom domain 'auth.dev.saas-example.com' is the platform's own host "
        "auth.<baseDomain> in environment dev; use a domain the tenant owns",
        f"{path}:4: tenant 'ent1': custom_domain: custom domain 'shop.dev.saas-example.com' is under the platform's base "
        "domain 'dev.saas-example.com' (dev), where the platform routes tenant subdomains; use a domain the tenant owns, "
        "or its subdomain instead",
        "2 problem(s); nothing was planned or applied",
    ]
    assert _cli(capsys, "validate", "--tenants", str(path), "--env", "dev") == (2, [], expected)
    out = tmp_path / "plan"
    assert _cli(capsys, "plan", "--tenants", str(path), "--env", "dev", "--out", str(out)) == (2, [], expected)
    assert not out.exists()                                   # refused before any stack program ran
    # --tenant plans too, even of a tenant whose own domain is fine
    code, _, err = _cli(capsys, "plan", "--tenants", str(path), "--env", "dev", "--tenant", "ent2", "--out", str(out))
    assert (code, err) == (2, expected) and not out.exists()


def test_the_environment_decides_which_custom_domains_are_the_platforms(tmp_path, capsys):
    # prod serves saas-example.com itself: a domain dev leaves alone is prod's (stacks/Pulumi.prod.yaml)
    _catalog_with_domains(tmp_path, "portal.saas-example.com")
    path = str(tmp_path / "tenants.yaml")
    code, out, err = _cli(capsys, "validate", "--tenants", path, "--env", "dev")
    assert (code, err) == (0, [])
    assert out == [f"{path}: valid: 1 tenants (1 dedicated), 3 plans; checked against environment dev"]
    assert _cli(capsys, "validate", "--tenants", path, "--env", "prod") == (2, [], [
        f"{path}:3: tenant 'ent0': custom_domain: custom domain 'portal.saas-example.com' is under the platform's base "
        "domain 'saas-example.com' (prod), where the platform routes tenant subdomains; use a domain the tenant owns, "
        "or its subdomain instead",
        "1 problem(s); nothing was planned or applied"])
    # an environment without a platform config cannot be checked: bad input, one line
    assert _cli(capsys, "validate", "--tenants", path, "--env", "qa") == (2, [], [
        "error: stacks/Pulumi.qa.yaml not found: environment 'qa' has no platform stack config; known environments: dev, prod"])


def test_a_dedicated_tenant_may_not_name_the_platforms_project(tmp_path, capsys):
    path = tmp_path / "tenants.yaml"
    path.write_text("version: 1\ntenants:\n"
                    f"  - {{id: ent0, name: E, plan: enterprise, admin_email: a@b.example, dedicated: {{project: {{id: {PROJECT}}}}}}}\n")
    problem = (f"{path}:3: tenant 'ent0': dedicated.project.id: project '{PROJECT}' is the platform's project in environment "
               "dev; name a project of the tenant's own, or remove 'project' to place the tenant in the platform project")
    assert [str(p) for p in check_catalog(load_catalog(path), _cfg())] == [problem]
    assert _cli(capsys, "validate", "--tenants", str(path), "--env", "dev") == (
        2, [], [problem, "1 problem(s); nothing was planned or applied"])
    assert _cli(capsys, "validate", "--tenants", str(path), "--env", "prod")[0] == 0   # prod's project is another


@pytest.mark.parametrize("stack", PLATFORM_STACKS)
def test_the_platform_programs_refuse_them_too(tmp_path, stack):
    # `pulumi up` and the lifecycle engines run the programs without `tenancy plan`: each checks on its own,
    # before it declares anything.
    from stacks import cells
    from tenancy.errors import CatalogError

    build = {GLOBAL: lambda c: cells.build_global("dev", c, _cfg()),
             IDENTITY: lambda c: cells.build_identity("dev", "identity-1", c, _cfg()),
             CELL: lambda c: cells.build_cell("dev", "cell-1", c, _cfg()),
             POOL: lambda c: cells.build_pool("dev", "pool-1", c, _cfg())}[stack]
    catalog = _catalog_with_domains(tmp_path, "app.dev.saas-example.com")
    with pytest.raises(CatalogError) as exc:
        build(catalog)
    assert [p.field for p in exc.value.problems] == ["custom_domain"]
    assert "is the platform's own host app.<baseDomain>" in exc.value.problems[0].message


# 3 -------------------------------------------------------------------------------------- Cloud SQL

EXPECTED_FLAGS = {
    "cloudsql.iam_authentication": "on", "cloudsql.enable_pgaudit": "on", "pgaudit.log": "ddl,role",
    "log_connections": "on", "log_disconnections": "on", "log_statement": "ddl", "log_lock_waits": "on",
    "log_checkpoints": "on", "log_min_duration_statement": "-1", "log_duration": "on", "log_min_error_statement": "error",
    "log_error_verbosity": "terse", "cloudsql.logical_decoding": "on",
}


def test_every_cloud_sql_instance_is_audited_and_ready_for_logical_replication(plan_data):
    instances = [(s["name"], r) for s in plan_data["stacks"] for r in of_type(s, "gcp:sql/databaseInstance:DatabaseInstance")]
    assert {name for name, _ in instances} == {GLOBAL, POOL, "dev.stark", "dev.stark-labs", "dev.vault", "dev.orbit", "dev.nimbus",
                                               "dev.zen"}
    replicas = [r for _, r in instances if r["inputs"].get("masterInstanceName")]
    assert len(replicas) == 3                          # orbit's read replicas
    for stack, r in instances:
        settings = r["inputs"]["settings"]
        flags = {f["name"]: f["value"] for f in settings["databaseFlags"]}
        # logical decoding is a primary's: replication slots live there
        expected = {k: v for k, v in EXPECTED_FLAGS.items() if k != "cloudsql.logical_decoding"} if r in replicas else EXPECTED_FLAGS
        assert flags == expected, f"{stack} {r['urn']}"
        assert len(settings["databaseFlags"]) == len(flags), "a flag is listed twice"
        assert settings["insightsConfig"] == {"queryInsightsEnabled": True}


def test_the_logging_flags_write_durations_and_failing_statements_without_values(pg_server, fresh_db):
    """On a real PostgreSQL with the instances' logging flags: every statement's duration is logged without its
    text, a failing statement's text is logged without the values bound to it or the error's detail (which quotes
    the failing row), and neither value reaches the log."""
    import uuid

    import psycopg

    from components.postgres import AUDIT_FLAGS

    # the flags that decide what a statement leaves in the log (the rest are server-wide or Cloud SQL's own)
    flags = {k: v for k, v in AUDIT_FLAGS if k in ("log_statement", "log_min_duration_statement", "log_duration",
                                                   "log_min_error_statement", "log_error_verbosity")}
    assert flags == {"log_statement": "ddl", "log_min_duration_statement": "-1", "log_duration": "on",
                     "log_min_error_statement": "error", "log_error_verbosity": "terse"}
    ok, bad = f"kept-{uuid.uuid4().hex}", f"refused-{uuid.uuid4().hex}"
    log = pg_server.datadir.parent / "log"
    start = log.stat().st_size
    options = " ".join(f"-c {name}={value}" for name, value in flags.items())
    with psycopg.connect(pg_server.dsn(dbname=fresh_db), autocommit=True, options=options) as conn:
        assert conn.execute("SHOW log_min_error_statement").fetchone() == ("error",)
        conn.execute("CREATE TABLE notes (body text CHECK (body LIKE 'kept-%'))")
        conn.execute("INSERT INTO notes VALUES (%s)", [ok])
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO notes VALUES (%s)", [bad])
    with log.open() as f:
        f.seek(start)
        written = f.read()
    assert re.search(r"LOG:  duration: [0-9.]+ ms$", written, re.M), written
    assert "STATEMENT:  INSERT INTO notes VALUES ($1)" in written, "the failing statement, with its placeholder"
    assert "ERROR:  new row for relation \"notes\" violates check constraint" in written
    assert ok not in written and bad not in written, "no value, not even in the error's detail"


def test_clients_verify_the_server_certificate(plan_data):
    pooled = [r for r in of_type(stack_of(plan_data, POOL), "kubernetes:helm.sh/v3:Release") if r["inputs"]["name"] == "app"]
    db = pooled[0]["inputs"]["values"]["database"]
    assert (db["sslMode"], db["serverCaCert"]) == ("verify-ca", BUNDLE)
    for name in ("dev.stark", "dev.orbit"):
        app = [r for r in of_type(stack_of(plan_data, name), "kubernetes:helm.sh/v3:Release") if r["inputs"]["name"] == "app"][0]
        dbs = app["inputs"]["values"]["databases"]
        assert dbs and all((d["sslMode"], d["serverCaCert"]) == ("verify-ca", BUNDLE) for d in dbs.values()), name


def test_ca_bundle_joins_every_current_ca():
    assert ca_bundle([{"cert": CA_PEMS[0] + "\n"}, {"cert": CA_PEMS[1]}]) == BUNDLE
    assert ca_bundle([]) is None and ca_bundle(None) is None


# 4 ------------------------------------------------------------------------------------ audit configs

def test_storage_data_access_is_audited_in_every_project(plan_data):
    audits = {s["name"]: [r["inputs"] for r in of_type(s, "gcp:projects/iAMAuditConfig:IAMAuditConfig")]
              for s in plan_data["stacks"]}
    expected = {"service": "storage.googleapis.com", "auditLogConfigs": [{"logType": "DATA_READ"}, {"logType": "DATA_WRITE"}]}
    assert audits["dev"] == [{**expected, "project": PROJECT}]
    # a dedicated tenant's own project: every service, every principal (CIS GCP 2.1), objects included
    assert audits["dev.zen"] == [{"project": "zen-saas-project", "service": "allServices", "auditLogConfigs": [
        {"logType": "ADMIN_READ"}, {"logType": "DATA_READ"}, {"logType": "DATA_WRITE"}]}]
    # tenants in the platform project are covered by the platform's config (one config per project and service)
    assert audits["dev.orbit"] == audits["dev.nimbus"] == audits["dev.stark"] == []


def test_every_bucket_logs_its_requests_to_the_environments_log_bucket(plan_data):
    buckets = {r["inputs"]["name"]: r["inputs"] for s in plan_data["stacks"] for r in of_type(s, "gcp:storage/bucket:Bucket")}
    logs = f"{PROJECT}-dev-access-logs"
    assert logs in buckets and len(buckets) > 2
    for name, b in buckets.items():
        if name == logs:
            # it logs nothing into itself; it keeps a year of logs and only Cloud Storage's logger may write
            assert "logging" not in b
            assert {"action": {"type": "Delete"}, "condition": {"age": 365}} in b["lifecycleRules"]
            assert (b["uniformBucketLevelAccess"], b["publicAccessPrevention"]) == (True, "enforced")
        else:
            assert b["logging"] == {"logBucket": logs, "logObjectPrefix": name}, name
    grants = [g["inputs"] for s in plan_data["stacks"] for g in of_type(s, "gcp:storage/bucketIAMMember:BucketIAMMember")
              if g["inputs"]["bucket"] == logs]
    assert grants == [{"bucket": logs, "role": "roles/storage.objectCreator", "member": "group:cloud-storage-analytics@google.com"}]


# 5 ---------------------------------------------------------------------------------------- clusters

def test_every_cluster_has_intranode_visibility_and_google_groups_rbac(plan_data):
    clusters = {s["name"]: r["inputs"] for s in plan_data["stacks"] for r in of_type(s, "gcp:container/cluster:Cluster")}
    assert set(clusters) == {CELL, "dev.orbit", "dev.nimbus", "dev.zen"}
    for name, c in clusters.items():
        assert c["enableIntranodeVisibility"] is True, name
        assert c["authenticatorGroupsConfig"] == {"securityGroup": "gke-security-groups@saas-example.com"}, name


def test_groups_domain_config():
    assert _cfg(groups_domain="corp.example").groups_domain == "corp.example"
    assert _cfg().groups_domain == "dev.saas-example.com"        # unset: the base domain
    with pytest.raises(ConfigError, match=r"stacks/Pulumi.dev.yaml: tenancy:groupsDomain 'not a domain' is not a domain "
                                          r"name; give the Google Workspace domain of gke-security-groups@<domain>"):
        _cfg(groups_domain="not a domain")


# 6 ---------------------------------------------------------------------------------- node isolation

def _app_values(data, stack):
    return [r for r in of_type(stack_of(data, stack), "kubernetes:helm.sh/v3:Release") if r["inputs"]["name"] == "app"][0]["inputs"]["values"]


def test_shared_cluster_has_a_tainted_gvisor_pool_and_sandbox_tenants_run_on_it(plan_data):
    where = {name: {r["inputs"]["name"] for r in of_type(stack_of(plan_data, name), "gcp:container/nodePool:NodePool")}
             for name in PLATFORM_STACKS}
    assert where == {GLOBAL: set(), IDENTITY: set(), CELL: {"workloads", "sandbox"}, POOL: set()}
    pools = {r["inputs"]["name"]: r["inputs"] for r in of_type(stack_of(plan_data, CELL), "gcp:container/nodePool:NodePool")}
    assert {p["cluster"] for p in pools.values()} == {"dev-shared"}
    nc = pools["sandbox"]["nodeConfig"]
    assert nc["sandboxConfig"] == {"sandboxType": "gvisor"} and nc["imageType"] == "COS_CONTAINERD"
    assert nc["taints"] == [{"key": "tenancy.io/isolation", "value": "sandbox", "effect": "NO_SCHEDULE"}]
    assert nc["labels"] == {"tenancy.io/isolation": "sandbox"}
    assert nc["workloadMetadataConfig"] == {"mode": "GKE_METADATA"}
    assert "sandboxConfig" not in pools["workloads"]["nodeConfig"] and "taints" not in pools["workloads"]["nodeConfig"]
    values = _app_values(plan_data, "dev.stark")                  # standard plan: sandbox
    assert values["runtimeClassName"] == "gvisor"
    assert values["nodeSelector"] == {"tenancy.io/isolation": "sandbox"}
    assert values["tolerations"] == [{"key": "tenancy.io/isolation", "operator": "Equal", "value": "sandbox", "effect": "NoSchedule"}]
    assert not of_type(stack_of(plan_data, "dev.stark"), "gcp:container/nodePool:NodePool")


def test_dedicated_node_isolation_gives_a_tenant_its_own_tainted_pool(plan_data):
    vault = stack_of(plan_data, "dev.vault")
    [pool] = [r["inputs"] for r in of_type(vault, "gcp:container/nodePool:NodePool")]
    assert (pool["name"], pool["cluster"], pool["project"], pool["location"]) == ("t-vault", "dev-shared", PROJECT, "europe-west1")
    nc = pool["nodeConfig"]
    assert nc["taints"] == [{"key": "tenancy.io/tenant", "value": "vault", "effect": "NO_SCHEDULE"}]
    assert nc["labels"] == {"tenancy.io/tenant": "vault"}
    assert nc["serviceAccount"] == f"dev-gke-nodes@{PROJECT}.iam.gserviceaccount.com"
    assert nc["shieldedInstanceConfig"] == {"enableSecureBoot": True, "enableIntegrityMonitoring": True}
    values = _app_values(plan_data, "dev.vault")
    assert values["nodeSelector"] == {"tenancy.io/tenant": "vault"} and "runtimeClassName" not in values
    assert values["tolerations"] == [{"key": "tenancy.io/tenant", "operator": "Equal", "value": "vault", "effect": "NoSchedule"}]


def test_dedicated_clusters_get_a_sandbox_pool_only_when_their_plan_asks(plan_data):
    zen = {r["inputs"]["name"] for r in of_type(stack_of(plan_data, "dev.zen"), "gcp:container/nodePool:NodePool")}
    orbit = {r["inputs"]["name"] for r in of_type(stack_of(plan_data, "dev.orbit"), "gcp:container/nodePool:NodePool")}
    assert zen == {"workloads", "sandbox"} and orbit == {"workloads"}
    assert _app_values(plan_data, "dev.zen")["runtimeClassName"] == "gvisor"
    assert "nodeSelector" not in _app_values(plan_data, "dev.orbit")   # the whole cluster is the tenant's


def test_tenant_namespaces_may_not_tolerate_other_pools(plan_data):
    # the shared cluster's policy: its cell holds it, and no other platform-side stack
    for name in (GLOBAL, IDENTITY, POOL):
        assert not of_type(stack_of(plan_data, name), "kubernetes:admissionregistration.k8s.io/v1:ValidatingAdmissionPolicy"), name
    cell = stack_of(plan_data, CELL)
    [policy] = of_type(cell, "kubernetes:admissionregistration.k8s.io/v1:ValidatingAdmissionPolicy")
    [binding] = of_type(cell, "kubernetes:admissionregistration.k8s.io/v1:ValidatingAdmissionPolicyBinding")
    spec = policy["inputs"]["spec"]
    assert spec["failurePolicy"] == "Fail"
    assert spec["matchConstraints"]["resourceRules"] == [{"apiGroups": [""], "apiVersions": ["v1"],
                                                          "operations": ["CREATE", "UPDATE"], "resources": ["pods"]}]
    assert {"name": "tenant", "expression": "namespaceObject.metadata.labels['tenancy.io/tenant']"} in spec["variables"]
    rules = {v["message"]: v["expression"] for v in spec["validations"]}
    assert rules["tenant pods may not tolerate every taint (a toleration needs a key)"] == \
        "variables.tolerations.all(t, has(t.key) && t.key != '')"
    own = rules["a tenant's pods may tolerate only their own node pool (tenancy.io/tenant=<tenant id>)"]
    assert "t.value == variables.tenant" in own and "t.operator == 'Equal'" in own
    gvisor = rules["pods on the GKE Sandbox pool must run under gVisor (runtimeClassName: gvisor)"]
    assert "'tenancy.io/isolation', 'sandbox.gke.io/runtime'" in gvisor and "object.spec.runtimeClassName == 'gvisor'" in gvisor
    b = binding["inputs"]["spec"]
    assert b == {"policyName": "tenancy-node-isolation", "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {"matchExpressions": [{"key": "tenancy.io/tenant", "operator": "Exists"}]}}}
    # the selector matches tenant namespaces, not the pooled or platform ones
    namespaces = {r["inputs"]["metadata"]["name"]: r["inputs"]["metadata"]["labels"]
                  for s in plan_data["stacks"] for r in of_type(s, "kubernetes:core/v1:Namespace")}
    assert namespaces["tenant-vault"]["tenancy.io/tenant"] == "vault"
    assert "tenancy.io/tenant" not in namespaces["pooled"] and "tenancy.io/tenant" not in namespaces["tenancy-system"]


# 7 ------------------------------------------------------------------------------------ Secret Manager

def test_every_secret_is_replicated_only_in_its_region(plan_data):
    regions = {"dev": "europe-west1", "dev.stark-labs": "europe-west4"}
    checked = 0
    for stack in plan_data["stacks"]:
        for r in of_type(stack, "gcp:secretmanager/secret:Secret"):
            assert r["inputs"]["replication"] == {"userManaged": {"replicas": [{"location": regions.get(stack["name"], "europe-west1")}]}}, r["urn"]
            checked += 1
    # owner, runtime and replication secrets of every database: the pool, the registry, the tenants' own
    assert checked == 3 + 3 + 3 * (3 + 3 + 1 + 3 + 3 + 1)



# 8 ------------------------------------------------------------------------- physical-name collisions

# Resources whose name is unique only inside a parent resource: that parent is part of the identity.
SCOPE = {"gcp:container/nodePool:NodePool": "cluster", "gcp:kms/cryptoKey:CryptoKey": "keyRing",
         "gcp:sql/database:Database": "instance", "gcp:sql/user:User": "instance", "gcp:compute/routerNat:RouterNat": "router"}


def _physical_names(stack):
    for r in stack["resources"]:
        i = r["inputs"]
        name = i.get("name") or i.get("accountId") or i.get("secretId")
        if r["type"].startswith("gcp:") and isinstance(name, str) and r["type"] != "gcp:index":
            yield (r["type"], i.get("project"), i.get(SCOPE.get(r["type"], "-")), name), r["urn"]


def test_dedicated_tenants_without_a_project_share_no_physical_name(plan_data):
    seen = Counter()
    urns = {}
    for name in (*PLATFORM_STACKS, "dev.orbit", "dev.nimbus"):
        for key, urn in _physical_names(stack_of(plan_data, name)):
            seen[key] += 1
            urns.setdefault(key, []).append(urn)
    dupes = {k: urns[k] for k, n in seen.items() if n > 1}
    assert not dupes, dupes
    kinds = {k[0] for k in seen}
    for kind in ("gcp:compute/network:Network", "gcp:compute/subnetwork:Subnetwork", "gcp:compute/router:Router",
                 "gcp:compute/routerNat:RouterNat", "gcp:compute/address:Address", "gcp:kms/keyRing:KeyRing",
                 "gcp:compute/globalAddress:GlobalAddress"):
        assert kind in kinds, kind
    orbit = {(r["type"], r["inputs"]["name"]) for r in stack_of(plan_data, "dev.orbit")["resources"]
             if r["type"].startswith("gcp:compute/") or r["type"] == "gcp:kms/keyRing:KeyRing"}
    assert orbit == {("gcp:compute/network:Network", "dev-orbit-vpc"), ("gcp:compute/subnetwork:Subnetwork", "dev-orbit-subnet"),
                     ("gcp:compute/globalAddress:GlobalAddress", "dev-orbit-sql-range"),
                     ("gcp:compute/router:Router", "dev-orbit-router"), ("gcp:compute/routerNat:RouterNat", "dev-orbit-nat"),
                     ("gcp:compute/address:Address", "dev-orbit-ingress"), ("gcp:kms/keyRing:KeyRing", "dev-orbit-gke")}
    # a tenant in its own project keeps the names it was created with (no replacement of its network)
    zen = {r["inputs"]["name"] for r in of_type(stack_of(plan_data, "dev.zen"), "gcp:compute/network:Network")}
    assert zen == {"tenant-vpc"}
