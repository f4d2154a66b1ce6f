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
