"""Physical names: deterministic, within provider limits, never colliding."""

from __future__ import annotations

import itertools
import re

import pytest

from tenancy import naming

LONG_A = "a" * 40 + "-tenant-1"           # 49 characters
LONG_B = "a" * 40 + "-tenant-2"           # same 40-character prefix
LONGEST = ("x" * 50, "x" * 49 + "y", "x" * 40 + "y" * 10, "x" * 40 + "z" * 10)
IDS = ["abc", "acme", "a-b-c", "123", LONG_A, LONG_B, *LONGEST, "tenant-" + "9" * 43]
ENVS = ["dev", "prod", "staging123"]

DERIVED = {
    "namespace": (lambda env, i: naming.namespace(i), 63, r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),
    "service_account": (naming.service_account_id, 30, r"^[a-z][-a-z0-9]*[a-z0-9]$"),
    "bucket": (naming.bucket, 63, r"^[a-z0-9][-a-z0-9]*[a-z0-9]$"),
    "sql_instance": (lambda env, i: naming.sql_instance(env, i, "postgres-3"), 80, r"^[a-z][-a-z0-9]*[a-z0-9]$"),
    "identity_display": (lambda env, i: naming.identity_display_name(i), 20, r"^[a-zA-Z][-a-zA-Z0-9]{3,19}$"),
    "firestore": (naming.firestore_database, 63, r"^[a-z][-a-z0-9]{2,61}[a-z0-9]$"),
    "secret": (lambda env, i: naming.secret_id(env, i, "postgres-1-tenancy-app"), 255, r"^[-_a-zA-Z0-9]+$"),
    "helm_release": (lambda env, i: naming.helm_release(i, "neo4j"), 53, r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),
    "cluster": (naming.cluster, 40, r"^[a-z][-a-z0-9]*[a-z0-9]$"),
    "stack": (naming.stack_name, 100, r"^[a-z0-9.-]+$"),
}


@pytest.mark.parametrize("kind", sorted(DERIVED))
def test_names_fit_provider_limits_and_formats(kind):
    derive, limit, pattern = DERIVED[kind]
    for env, tid in itertools.product(ENVS, IDS):
        name = derive(env, tid)
        assert len(name) <= limit, f"{kind} for {env}/{tid}: '{name}' is {len(name)} > {limit}"
        assert re.match(pattern, name), f"{kind} for {env}/{tid}: '{name}' does not match {pattern}"


@pytest.mark.parametrize("kind", sorted(DERIVED))
def test_different_ids_never_collide(kind):
    derive, _, _ = DERIVED[kind]
    for env in ENVS:
        names = [derive(env, tid) for tid in IDS]
        assert len(set(names)) == len(IDS), f"{kind} collides in {env}: {names}"


def test_same_long_prefix_differs_by_hash():
    a, b = naming.service_account_id("prod", LONG_A), naming.service_account_id("prod", LONG_B)
    assert a != b
    assert a.split("--")[0] == b.split("--")[0]  # same readable head, different hash
    assert len(a) == len(b) == 30


def test_names_are_deterministic_and_readable_when_short():
    assert naming.namespace("acme") == "tenant-acme"
    assert naming.service_account_id("prod", "acme") == "t-prod-acme"
    assert naming.bucket("prod", "acme") == "prod-acme-uploads"
    assert naming.sql_instance("prod", "acme", "postgres-1") == "prod-acme-postgres-1"
    assert naming.identity_display_name("acme") == "t-acme"
    assert naming.stack_name("prod", "acme") == "prod.acme" and naming.stack_name("prod") == "prod"
    assert naming.service_account_id("prod", LONG_A) == naming.service_account_id("prod", LONG_A)


def test_a_shortened_name_never_equals_another_ids_full_name():
    # Shortened names contain '--'; ids may not, so no id's untruncated name can look like one.
    short = naming.identity_display_name(LONG_A)
    assert "--" in short
    assert all("--" not in naming.identity_display_name(i) for i in IDS if len(f"t-{i}") <= 20)


def test_stack_names_round_trip():
    assert naming.parse_stack_name("dev") == ("dev", None)
    assert naming.parse_stack_name("prod.acme-corp") == ("prod", "acme-corp")
    assert naming.parse_stack_name("organization/tenancy/prod.acme") == ("prod", "acme")
    with pytest.raises(ValueError, match="does not follow the naming convention"):
        naming.parse_stack_name("Prod")
    with pytest.raises(ValueError, match="ends with '.'"):
        naming.parse_stack_name("prod.")


# Resource types whose physical names share one namespace per kind, and the input that holds the name.
NAME_INPUTS = {
    "gcp:serviceaccount/account:Account": ("service account", "accountId"),
    "gcp:firestore/database:Database": ("Firestore database", "name"),
    "gcp:sql/databaseInstance:DatabaseInstance": ("Cloud SQL instance", "name"),
    "gcp:container/cluster:Cluster": ("GKE cluster", "name"),
    "gcp:container/nodePool:NodePool": ("node pool", "name"),
    "gcp:kms/keyRing:KeyRing": ("KMS key ring", "name"),
    "gcp:secretmanager/secret:Secret": ("secret", "secretId"),
    "gcp:storage/bucket:Bucket": ("bucket", "name"),
    "gcp:compute/network:Network": ("VPC network", "name"),
    "gcp:compute/subnetwork:Subnetwork": ("subnetwork", "name"),
    "gcp:compute/globalAddress:GlobalAddress": ("global address", "name"),
    "gcp:compute/router:Router": ("Cloud Router", "name"),
    "gcp:compute/routerNat:RouterNat": ("Cloud NAT", "name"),
    "gcp:compute/address:Address": ("address", "name"),
    "gcp:dns/managedZone:ManagedZone": ("DNS zone", "name"),
    "gcp:logging/projectSink:ProjectSink": ("log sink", "name"),
    "gcp:identityplatform/tenant:Tenant": ("Identity Platform tenant", "displayName"),
    "kubernetes:core/v1:Namespace": ("namespace", "metadata.name"),
}


def physical_names(stack: dict) -> set[tuple[str, str]]:
    out = set()
    for r in stack["resources"]:
        if r["type"] in NAME_INPUTS:
            kind, key = NAME_INPUTS[r["type"]]
            value = r["inputs"]
            for part in key.split("."):
                value = value[part]
            out.add((kind, value))
    return out


def _platform_facts(platform: dict) -> tuple[str, str]:
    project = next(r["inputs"]["project"] for r in platform["resources"] if r["type"] == "pulumi:providers:gcp")
    return project, platform["outputs"]["baseDomain"]


def _check_stacks_against_naming(data: dict) -> None:
    """Every physical name a stack gives is one naming.py derives: the platform-side stacks' (the global stack and
    its units) together exactly `platform_names`, each name made by one of them (Identity Platform tenants are the
    catalogue tenants'), a tenant's its `tenant_names`, plus, for a dedicated tenant, the fixed names of its own
    cluster and (in a project of its own) its own project."""
    from tests.conftest import stack_of
    platform = stack_of(data, "dev")
    sides = [s for s in data["stacks"] if s["kind"] != "tenant"]
    assert [s["name"] for s in sides] == ["dev", "dev.identity-1", "dev.cell-1", "dev.pool-1"]
    made_by = [{k for k in physical_names(s) if k[0] != "Identity Platform tenant"} for s in sides]
    made = set().union(*made_by)
    assert sum(map(len, made_by)) == len(made), "two platform-side stacks make the same name"
    assert made == set(naming.platform_names("dev", *_platform_facts(platform)))
    for stack in (s for s in data["stacks"] if s["kind"] == "tenant"):
        allowed = set(naming.tenant_names("dev", stack["tenant"]))
        if stack["model"] == "dedicated":
            own_project = stack["outputs"]["project"] != _platform_facts(platform)[0]
            allowed |= {k for k in naming.own_scope_names()
                        if own_project or k[0] in ("node pool", "namespace")}
        missing = physical_names(stack) - allowed
        assert not missing, f"{stack['name']} creates names naming.py does not derive: {sorted(missing)}"


def test_platform_and_tenant_names_are_what_the_stacks_create(sample_plan):
    # The reserved-id check compares tenant names with `platform_names`: a name a stack derives on its own,
    # without naming.py, would escape it. This keeps the lists and the programs in step.
    _, data, _ = sample_plan
    assert {s["tenant"] for s in data["stacks"] if s["kind"] == "tenant"} >= {"acme", "cyberdyne", "stark"}
    _check_stacks_against_naming(data)


LONG_NS = "l" * 44 + "-abcde"      # 50 characters: every derived name that has a limit is shortened
LONG_DEDICATED = "m" * 44 + "-vwxyz"
ISOLATED_PLAN = ("{model: namespace, node_isolation: dedicated, limits: {api_rate_limit: 1000, storage_gb: 50, cpu: 4, "
                 "memory_gb: 8, pods: 50, pvcs: 10, services: 10, backup_retention_days: 30}, "
                 "features: [core, comments, recommendations], databases: [postgres-1, postgres-2]}")
# Long ids, ids sharing a prefix, a namespace tenant with its own node pool, dedicated tenants in the platform
# project (one with read replicas and a log sink) and in a project created for it.
NAMES_CATALOG = f"""\
version: 1
plans:
  isolated: {ISOLATED_PLAN}
tenants:
  - {{id: {LONG_NS}, name: L, plan: isolated, admin_email: a@b.example, operator_group: ops@b.example}}
  - {{id: {LONG_DEDICATED}, name: M, plan: enterprise, admin_email: a@b.example, custom_domain: portal.m.example,
     dedicated: {{read_replicas: 2, log_sink: storage.googleapis.com/m-logs}}}}
  - {{id: stark, name: S, plan: isolated, admin_email: a@b.example}}
  - {{id: stark-labs, name: SL, plan: standard, admin_email: a@b.example}}
  - {{id: orbit, name: O, plan: enterprise, admin_email: a@b.example, features: [core]}}
  - {{id: created, name: C, plan: enterprise, admin_email: a@b.example, features: [core],
     dedicated: {{project: {{create: true, id: created-proj-123, folder_id: "123456789012",
                            billing_account: 01AB23-45CD67-89EF01}}}}}}
  - {{id: tiny, name: T, plan: free, admin_email: a@b.example}}
"""


@pytest.fixture(scope="module")
def names_plan(tmp_path_factory):
    from tenancy import plan as planmod
    from tenancy.catalog import load_catalog

    path = tmp_path_factory.mktemp("names") / "tenants.yaml"
    path.write_text(NAMES_CATALOG)
    return planmod.plan(load_catalog(path), "dev", workers=1).to_json()


def test_names_of_long_ids_and_tenants_in_the_platform_project_come_from_naming(names_plan):
    _check_stacks_against_naming(names_plan)
    from tests.conftest import stack_of
    made = physical_names(stack_of(names_plan, f"dev.{LONG_DEDICATED}"))
    prefix = naming.network_prefix("dev", LONG_DEDICATED)
    assert prefix == "dev-" + "m" * 28 + "--14da38" and naming.cluster("dev", LONG_DEDICATED) == prefix
    assert {("VPC network", f"{prefix}-vpc"), ("address", f"{prefix}-ingress"), ("log sink", f"tenancy-dev-{LONG_DEDICATED}"),
            ("Cloud SQL instance", f"dev-{LONG_DEDICATED}-postgres-1-r2"), ("KMS key ring", f"{prefix}-gke"),
            ("node pool", "workloads")} <= made
    assert ("node pool", naming.tenant_node_pool(LONG_NS)) in physical_names(stack_of(names_plan, f"dev.{LONG_NS}"))
    assert naming.tenant_node_pool(LONG_NS) == "t-" + "l" * 30 + "--0287f2"
    assert ("VPC network", "tenant-vpc") in physical_names(stack_of(names_plan, "dev.created"))


def test_the_policy_pack_passes_the_plan_of_long_and_prefix_sharing_ids(names_plan):
    # Shortened service account names and ids that prefix one another are the tenants' own, not another's.
    found = [(s["name"], v["policy"], v["message"]) for s in names_plan["stacks"] for v in s["violations"]]
    assert found == []


def test_no_platform_name_is_a_shortened_name():
    # platform_collision skips ids that appear in no platform name; that is sound only because shortened
    # tenant names carry '--' and no platform name does.
    for env in ("dev", "prod", "staging123"):
        for _, name in naming.platform_names(env, "tenancy-dev-482913"):
            assert "--" not in name, name


@pytest.mark.parametrize("tenant_id,reason", [
    ("pooled", "it would name the same service account as the platform's pooled application identity"),
    ("sql-migrator", "it would name the same service account as the platform's SQL migrator identity"),
    ("shared", "it would name the same GKE cluster as the platform's shared GKE cluster"),
    ("acme-pooled", "it could name the same bucket as the platform's pooled uploads bucket (<project>-<env>-pooled-uploads)"),
    ("tenancy-system", "it is the name of the platform's system namespace"),
    ("gke-nodes", "it is the name of the platform's GKE node service account"),
    ("directory", "it is the name of the platform's tenant directory"),
    ("acme", None),
    ("pooled-acme", None),
])
def test_platform_collision_reasons(tenant_id, reason):
    assert naming.platform_collision(tenant_id) == reason


def test_the_acme_pooled_bucket_clash_is_real():
    # Why ids ending in '-pooled' are refused: in platform project 'dev-acme' the shared bucket is the tenant's.
    assert naming.bucket("dev", "acme-dev-pooled") == naming.shared_bucket("dev", "dev-acme") == "dev-acme-dev-pooled-uploads"


def test_every_platform_collision_is_found_from_the_derivations():
    for env in ("dev", "prod"):
        platform = set(naming.platform_names(env))
        for tenant_id in ("pooled", "sql-migrator", "shared"):
            assert platform & set(naming.tenant_names(env, tenant_id)), tenant_id


def test_env_pattern_matches_the_whole_value():
    with pytest.raises(ValueError, match="environment 'dev\\n' must be 2-10 lowercase letters"):
        naming.check_env("dev\n")
    with pytest.raises(ValueError, match="does not follow the naming convention"):
        naming.parse_stack_name("dev\n.acme")
