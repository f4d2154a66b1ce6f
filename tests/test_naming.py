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
    "gcp:kms/keyRing:KeyRing": ("KMS key ring", "name"),
    "gcp:secretmanager/secret:Secret": ("secret", "secretId"),
    "gcp:storage/bucket:Bucket": ("bucket", "name"),
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


def test_platform_names_are_exactly_what_the_platform_stack_creates(sample_plan):
    # The reserved-id check compares tenant names with `platform_names`: a name the platform stack derives
    # on its own, without naming.py, would escape it. This keeps the list and the program in step.
    from tests.conftest import stack_of
    _, data, _ = sample_plan
    platform = stack_of(data, "dev")
    project = next(r["inputs"]["project"] for r in platform["resources"] if r["type"] == "pulumi:providers:gcp")
    assert physical_names(platform) == set(naming.platform_names("dev", project))


def test_tenant_names_cover_every_name_a_tenant_stack_creates(sample_plan):
    _, data, _ = sample_plan
    tenant_stacks = [s for s in data["stacks"] if s["kind"] == "tenant"]
    assert {s["tenant"] for s in tenant_stacks} >= {"acme", "cyberdyne", "stark"}
    for stack in tenant_stacks:
        made = {key for key in physical_names(stack) if key[0] != "namespace" or key[1] not in naming.PLATFORM_K8S_NAMESPACES}
        missing = made - set(naming.tenant_names("dev", stack["tenant"]))
        assert not missing, f"{stack['name']} creates names naming.tenant_names does not know: {sorted(missing)}"


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
