"""Rule `object-and-stack-size` (policy/sizes.py) on copies of the real plan: objects, data, Helm values and
stacks over their bounds fail; the committed catalogue's plan passes."""

from __future__ import annotations

import base64
import copy
import dataclasses
import json

import pytest
from pulumi_policy import StackValidationArgs

from components.directory import document
from policy import rules
from stacks.platform import directory_entry, pooled_app_values
from tenancy.envconfig import PlatformConfig, load_stack_config
from tenancy.fleet import capacity as fleet_capacity
from tenancy.fleet import sample
from tenancy.fleet.placement import place
from tenancy.policycheck import _policy_resources, evaluate_plan
from tests.conftest import stack_of

RULE = "object-and-stack-size"
CELL, POOL, IDENTITY = "dev.cell-1", "dev.pool-1", "dev.identity-1"


@pytest.fixture
def plan(sample_plan):
    return copy.deepcopy(sample_plan[1])


def size_violations(plan: dict) -> list[dict]:
    return [v for v in evaluate_plan(plan["stacks"]) if v["policy"] == RULE]


def resource(stack: dict, name: str) -> dict:
    return next(r for r in stack["resources"] if r["name"] == name)


def dev_config() -> PlatformConfig:
    raw = {k.split(":", 1)[1]: v for k, v in load_stack_config("dev").items() if k.startswith("tenancy:")}
    return PlatformConfig.validate({"gcp_project": raw["gcpProject"], "base_domain": raw["baseDomain"],
                                    "acme_email": raw["acmeEmail"], "environment": "dev"}, "dev")


def test_the_committed_catalogues_plan_is_within_every_bound(plan):
    assert size_violations(plan) == []
    # the directory is the cell's share and the pool shard's: nine tenants in all, far below 1 MiB
    for stack, name in ((CELL, "directory-configmap"), (POOL, "pool-directory-configmap")):
        configmap = resource(stack_of(plan, stack), name)
        assert 1_000 < len(configmap["inputs"]["data"]["tenants.json"]) < 20_000, stack


def test_a_tenant_directory_of_2300_tenants_is_over_the_configmap_data_limit(plan):
    """One directory of a generated fleet of 2,300 tenants (their real entries), as a single directory for the
    whole fleet would be: why each cell and pool shard publishes only its own tenants'."""
    fleet = sample.catalog(2_300)
    # (2,070 pooled tenants fill more than two pool shards of 1,000)
    placed = place(fleet, dataclasses.replace(fleet_capacity.load("dev"), pool_shards=3))
    cfg = dev_config()
    entries = {t.id: directory_entry(t, "dev", cfg, placed.tenants.get(t.id)) for t in fleet.tenants}
    text = document(entries, {t.id: f"t-{t.id}-0a1b2" for t in fleet.tenants})
    configmap = resource(stack_of(plan, CELL), "directory-configmap")
    configmap["inputs"]["data"]["tenants.json"] = text
    size = len(text.encode())
    assert size > 1024 * 1024
    assert size_violations(plan) == [{
        "policy": RULE, "urn": configmap["urn"], "enforcement": "mandatory",
        "message": f"ConfigMap tenancy-system/tenant-directory: its data is {size:,} bytes, over the 1,048,576-byte limit "
                   "of ConfigMap data: the API server refuses it; split it (one object per cell or shard, not per fleet) "
                   "or keep the data in a registry"}]


def test_a_full_pool_shard_of_the_shipped_capacity_publishes_a_directory_under_the_configmap_limit():
    """dev and prod ship pool shards of tenancy:poolShardCapacity tenants: full, its directory (compact, as the pool
    shard publishes it, with its tenants' real entries) stays under a ConfigMap's 1 MiB; twice as many do not."""
    capacity = fleet_capacity.load("dev")
    assert fleet_capacity.load("prod").pool_shard_capacity == capacity.pool_shard_capacity == 1000
    cfg = dev_config()

    def shard_directory(n: int) -> int:
        pooled = [t for t in sample.catalog(n * 100 // 90 + 100).tenants if t.model.value == "pooled"][:n]
        fleet = dataclasses.replace(sample.catalog(0), tenants=tuple(pooled))
        placed = place(fleet, dataclasses.replace(capacity, pool_shard_capacity=n))
        assert {p.pool_shard for p in placed.tenants.values()} == {"pool-1"}
        entries = {t.id: directory_entry(t, "dev", cfg, placed.tenants[t.id]) for t in pooled}
        # identity tenants' names as Identity Platform gives them (t-<id>-<5 characters>)
        return len(document(entries, {t.id: f"t-{t.id}-0a1b2" for t in pooled}, compact=True).encode())

    full = shard_directory(capacity.pool_shard_capacity)
    assert 600_000 < full < 1024 * 1024, full
    assert shard_directory(2 * capacity.pool_shard_capacity) > 1024 * 1024


def test_a_secret_counts_its_decoded_data_and_skips_masked_values(plan):
    tenant = stack_of(plan, "dev.stark")
    secret = next(r for r in tenant["resources"] if r["type"] == "kubernetes:core/v1:Secret")
    assert secret["inputs"]["stringData"] == "[secret]", "the plan masks secret values: nothing to measure"
    assert size_violations(plan) == []
    blob = base64.b64encode(b"x" * (1024 * 1024 + 1)).decode()
    secret["inputs"] = {**secret["inputs"], "data": {"big": blob}}
    secret["inputs"].pop("stringData", None)
    [v] = size_violations(plan)
    assert v["urn"] == secret["urn"] and v["message"].startswith(
        "Secret tenant-stark/neo4j-auth: its data is 1,048,577 bytes, over the 1,048,576-byte limit of Secret data")


def test_any_kubernetes_object_over_1_mib_fails(plan):
    tenant = stack_of(plan, "dev.stark")
    ingress = next(r for r in tenant["resources"] if r["type"] == "kubernetes:networking.k8s.io/v1:Ingress")
    ingress["inputs"]["metadata"]["annotations"]["padding"] = "x" * (1024 * 1024)
    [v] = size_violations(plan)
    size = len(json.dumps(ingress["inputs"], separators=(",", ":"), sort_keys=True).encode())
    assert v == {"policy": RULE, "urn": ingress["urn"], "enforcement": "mandatory",
                 "message": f"Ingress tenant-stark/app: its manifest is {size:,} bytes, over the 1,048,576-byte bound "
                            "of a Kubernetes object (etcd refuses objects of about 1.5 MiB); split it or keep the data in "
                            "a registry"}


def test_helm_values_of_a_large_pool_fail(plan):
    """The pooled application's real values for 10,000 pooled tenants."""
    pooled = [t for t in sample.catalog(11_200).tenants if t.model.value == "pooled"][:10_000]
    values = pooled_app_values("dev", dev_config(), pooled, "dev-pooled-tenancy-app")
    release = resource(stack_of(plan, POOL), "pooled-app-release")
    release["inputs"]["values"] = values
    [v] = size_violations(plan)
    size = len(json.dumps(values, separators=(",", ":"), sort_keys=True).encode())
    assert v["urn"] == release["urn"] and v["message"] == (
        f"Helm release app: its values are {size:,} bytes, over 1,048,576 bytes: Helm keeps each release revision in "
        "one Secret, limited to 1 MiB; keep per-tenant data out of the values (a registry, or one release per cell)")


def test_a_stack_over_the_resource_bound_fails_against_the_stack(plan):
    # an identity shard grows by one resource per tenant: the stack the bound is for
    shard = stack_of(plan, IDENTITY)
    template = resource(shard, "identity-globex")
    for i in range(2_001 - len(shard["resources"])):
        extra = copy.deepcopy(template)
        extra["urn"] = template["urn"].replace("identity-globex", f"identity-extra{i}")
        shard["resources"].append(extra)
    assert len(shard["resources"]) == 2_001
    assert size_violations(plan) == [{
        "policy": RULE, "urn": f"urn:pulumi:{IDENTITY}::tenancy::pulumi:pulumi:Stack::tenancy-{IDENTITY}",
        "enforcement": "mandatory",
        "message": f"stack {IDENTITY} has 2,001 resources, over the bound of 2,000 per stack (policy config "
                   "maxResourcesPerStack): every preview and update of it reads and diffs them all; split it (cells, "
                   "pool shards, identity shards)"}]
    shard["resources"].pop()
    assert size_violations(plan) == []


def test_the_stack_form_runs_in_a_real_preview_with_its_configured_bounds(plan):
    policy = {p.name: p for p in rules.STACK_POLICIES}[RULE]
    assert policy.enforcement_level.value == "mandatory"
    resources = _policy_resources(stack_of(plan, POOL))
    found: list[tuple[str, str | None]] = []
    policy.validate(StackValidationArgs(resources, {"maxResourcesPerStack": 50, "maxObjectBytes": 20_000}),
                    lambda message, urn=None: found.append((message, urn)))
    assert [urn.rsplit("::", 1)[-1] for _, urn in found] == ["pooled-sql-sql", f"tenancy-{POOL}"]
    assert found[0][0].startswith("ConfigMap tenancy-system/tenancy-sql-") and "over the 20,000-byte limit" in found[0][0]
    assert found[1][0].startswith(f"stack {POOL} has {len(resources)} resources, over the bound of 50 per stack")
