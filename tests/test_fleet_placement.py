"""Capacity config and placement (tenancy/fleet): pins, stickiness, full environments; fleets of 10,000+ tenants."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest

from tenancy.catalog import load_catalog, parse_catalog, to_document, with_tenant
from tenancy.errors import CatalogError, ConfigError
from tenancy.fleet import capacity as fleet_capacity
from tenancy.fleet import sample
from tenancy.fleet.capacity import Capacity
from tenancy.fleet.placement import PlacementError, place
from tests.conftest import ROOT

PLATFORM_PROJECT = "tenancy-dev-482913"


def cap(**changes) -> Capacity:
    base = Capacity(environment="dev", cells=1, cell_capacity=300, pool_shards=1, pool_shard_capacity=2000,
                    data_projects=(PLATFORM_PROJECT,), data_project_instances=1000)
    return dataclasses.replace(base, **changes)


def loads(placement, key: str) -> dict[str, int]:
    return dict(placement.units[key].load)


# ------------------------------------------------------------------------------------------- capacity config

def test_committed_environments_declare_what_this_version_builds():
    assert fleet_capacity.load("dev") == cap(pool_shard_capacity=1000)
    prod = fleet_capacity.load("prod")
    assert (prod.cells, prod.pool_shards, prod.data_projects) == (1, 1, ("tenancy-prod-719304",))


# cells 2 and 3 are clusters with ranges of their own (cell-1 uses the environment's)
NETWORKS = {f"cell-{n}": {"networkCidr": f"10.{20 + n}.0.0/20", "podsCidr": f"10.{100 + 4 * n}.0.0/14",
                          "servicesCidr": f"10.{40 + n}.0.0/20", "masterCidr": f"172.16.{n}.0/28"} for n in (2, 3)}


def test_capacity_values_as_the_engine_and_the_stack_file_give_them():
    from_engine = Capacity.validate({"cells": "3", "cellCapacity": "250", "dataProjects": '["data-proj-1", "data-proj-2"]',
                                     "cellNetworks": json.dumps(NETWORKS)}, "dev", PLATFORM_PROJECT)
    from_yaml = Capacity.validate({"cells": 3, "cellCapacity": 250, "dataProjects": ["data-proj-1", "data-proj-2"],
                                   "cellNetworks": NETWORKS}, "dev", PLATFORM_PROJECT)
    assert from_engine == from_yaml
    assert from_engine.cell_names == ["cell-1", "cell-2", "cell-3"] and from_engine.cell_capacity == 250
    assert from_engine.cell_network("cell-3") == fleet_capacity.CellNetwork("10.23.0.0/20", "10.112.0.0/14",
                                                                            "10.43.0.0/20", "172.16.3.0/28")
    assert from_engine.cell_network("cell-1") is None, "cell-1 uses the environment's own ranges"
    assert from_engine.data_projects == (PLATFORM_PROJECT, "data-proj-1", "data-proj-2")
    assert (from_engine.pool_shards, from_engine.pool_shard_capacity, from_engine.data_project_instances) == (1, 1000, 1000)


def test_capacity_errors_name_the_file_the_key_and_the_fix():
    with pytest.raises(ConfigError) as exc:
        Capacity.validate({"cells": "0", "cellCapacity": "lots", "poolShards": True, "poolShardCapacity": "2000",
                           "dataProjects": '["Bad_Project", "tenancy-dev-482913", "data-proj-1", "data-proj-1"]'},
                          "dev", PLATFORM_PROJECT)
    assert str(exc.value).splitlines() == [
        "stacks/Pulumi.dev.yaml: tenancy:cells must be a whole number from 1 to 1,000, not '0'; set it with "
        "`pulumi config set tenancy:cells <n> -s dev`",
        "stacks/Pulumi.dev.yaml: tenancy:cellCapacity must be a whole number from 1 to 10,000, not 'lots'; set it with "
        "`pulumi config set tenancy:cellCapacity <n> -s dev`",
        "stacks/Pulumi.dev.yaml: tenancy:poolShards must be a whole number from 1 to 1,000, not 'true'; set it with "
        "`pulumi config set tenancy:poolShards <n> -s dev`",
        "stacks/Pulumi.dev.yaml: tenancy:dataProjects: 'Bad_Project' is not a GCP project id (6-30 characters: lowercase "
        "letters, digits, hyphens; starts with a letter)",
        "stacks/Pulumi.dev.yaml: tenancy:dataProjects: 'tenancy-dev-482913' is the platform project (tenancy:gcpProject), "
        "which is always the first data project; remove it from the list",
        "stacks/Pulumi.dev.yaml: tenancy:dataProjects: 'data-proj-1' is listed twice; list each project once",
    ]
    with pytest.raises(ConfigError, match=r"^stacks/Pulumi.prod.yaml: tenancy:dataProjects must be a list of GCP project "
                                          r"ids, e.g. \[acme-data-1, acme-data-2\]$"):
        Capacity.validate({"dataProjects": "{not json"}, "prod", "tenancy-prod-719304")


def test_a_plan_with_bad_capacity_config_stops_before_any_stack_runs(monkeypatch):
    from tenancy import envconfig
    from tenancy import plan as planmod

    real = envconfig.load_stack_config
    monkeypatch.setattr(envconfig, "load_stack_config", lambda env: {**real(env), "tenancy:cellCapacity": "0"})
    with pytest.raises(ConfigError, match=r"stacks/Pulumi.dev.yaml: tenancy:cellCapacity must be a whole number"):
        planmod.plan(load_catalog(ROOT / "tenants.yaml"), "dev", tenants=["stark"], workers=1)


# ------------------------------------------------------------------------------------------ catalogue pins

PINS = """version: 1
tenants:
  - id: globex
    name: Globex
    plan: free
    admin_email: a@globex.example
    placement: {cell: cell-2}
  - id: stark
    name: Stark
    plan: standard
    admin_email: a@stark.example
    placement: {data_project: Not_A_Project}
  - id: acme
    name: Acme
    plan: enterprise
    admin_email: a@acme.example
    placement: {data_project: acme-data-1}
  - id: hooli
    name: Hooli
    plan: standard
    admin_email: a@hooli.example
    placement: {cell: cell-0}
  - id: initech
    name: Initech
    plan: standard
    admin_email: a@initech.example
    placement: {pool_shard: pool-1}
  - id: cell-7
    name: Looks like a cell
    plan: free
    admin_email: a@cell.example
"""


def test_pins_are_checked_against_the_plan_and_the_unit_names():
    with pytest.raises(CatalogError) as exc:
        parse_catalog(PINS)
    assert [str(p) for p in exc.value.problems] == [
        "tenants.yaml:7: tenant 'globex': placement.cell: plan 'free' is pooled, and cell applies to namespace plans "
        "only; pin pool_shard instead",
        # a malformed pin is reported on its own (its block is not checked against the plan until it parses)
        "tenants.yaml:12: tenant 'stark': placement.data_project: 'Not_A_Project' is not a GCP project id (6-30 "
        "characters: lowercase letters, digits, hyphens; starts with a letter)",
        "tenants.yaml:17: tenant 'acme': placement.data_project: plan 'enterprise' is dedicated, and data_project applies "
        "to namespace plans only; a dedicated tenant has its own cluster and project; remove 'placement'",
        "tenants.yaml:22: tenant 'hooli': placement.cell: 'cell-0' is not a cell name; cells are named cell-1, cell-2, ...",
        "tenants.yaml:27: tenant 'initech': placement.pool_shard: plan 'standard' is namespace, and pool_shard applies "
        "to pooled plans only; pin cell or data_project instead",
        "tenants.yaml:28: tenants[5] (position 6): id: tenant id 'cell-7' is reserved: it has the shape of the name of a "
        "platform cell (a shared cluster); choose another id",
    ]


def test_pins_round_trip_and_a_plan_change_keeps_only_the_pins_its_model_has():
    text = PINS.split("  - id: acme")[0].replace("placement: {cell: cell-2}", "placement: {pool_shard: pool-2}") \
        .replace("placement: {data_project: Not_A_Project}", "placement: {cell: cell-2, data_project: data-proj-1}")
    catalog = parse_catalog(text)
    doc = to_document(catalog)
    assert [t.get("placement") for t in doc["tenants"]] == [{"pool_shard": "pool-2"}, {"cell": "cell-2", "data_project": "data-proj-1"}]
    moved = with_tenant(with_tenant(catalog, "globex", plan="standard"), "stark", plan="free")
    assert moved.tenant("globex").placement is None and moved.tenant("stark").placement is None
    kept = with_tenant(catalog, "stark", plan="enterprise")
    assert kept.tenant("stark").placement is None, "a dedicated tenant has no pins"


# ------------------------------------------------------------------------------------- placement, small

def test_the_committed_catalogue_is_placed_in_the_first_units():
    placed = place(load_catalog(ROOT / "tenants.yaml"), fleet_capacity.load("dev"))
    one = {"identityShard": "identity-1"}     # dev declares one identity shard: every tenant's user pool is there
    assert placed.to_json() == {
        "globex": {"poolShard": "pool-1", **one}, "hooli": {"poolShard": "pool-1", **one},
        "initech": {"poolShard": "pool-1", **one}, "vandelay": {"poolShard": "pool-1", **one},
        "pied-piper": {"cell": "cell-1", "dataProject": PLATFORM_PROJECT, **one},
        "stark": {"cell": "cell-1", "dataProject": PLATFORM_PROJECT, **one},
        "wayne": {"cell": "cell-1", "dataProject": PLATFORM_PROJECT, **one},
        # a dedicated tenant's own cluster and project hold its data; cell-1 is its home (directory entry, record)
        "acme": {"cell": "cell-1", **one}, "cyberdyne": {"cell": "cell-1", **one},
    }
    assert placed.decided["acme"] == "placed" and placed.decided["stark"] == "placed"
    # three standard tenants with three instances each, and the pool shard's instance; the dedicated tenants' are in
    # their own projects
    assert loads(placed, "data_project") == {PLATFORM_PROJECT: 10}
    assert loads(placed, "cell") == {"cell-1": 5} and loads(placed, "pool_shard") == {"pool-1": 4}


SMALL = """version: 1
tenants:
  - {id: alpha, name: A, plan: standard, admin_email: a@a.example}
  - {id: bravo, name: B, plan: standard, admin_email: b@b.example}
  - {id: charlie, name: C, plan: standard, admin_email: c@c.example}
  - id: delta
    name: D
    plan: standard
    admin_email: d@d.example
    placement: {cell: cell-1}
  - {id: echo, name: E, plan: free, admin_email: e@e.example, placement: {pool_shard: pool-2}}
"""


def test_pins_are_honoured_before_anyone_else_is_placed():
    placed = place(parse_catalog(SMALL), cap(cells=2, cell_capacity=2, pool_shards=2))
    assert placed.to_json()["delta"]["cell"] == "cell-1" and placed.decided["delta"] == "pinned"
    assert placed.to_json()["echo"] == {"poolShard": "pool-2", "identityShard": "identity-1"}
    # delta's pin takes one of cell-1's two slots, so of the others only alpha (first by id) fits there
    assert {t: p["cell"] for t, p in placed.to_json().items() if "cell" in p} == {
        "alpha": "cell-1", "bravo": "cell-2", "charlie": "cell-2", "delta": "cell-1"}


def test_a_pin_to_a_full_or_unknown_unit_is_refused_with_its_line_and_one_to_any_declared_unit_is_honoured(tmp_path):
    path = tmp_path / "tenants.yaml"
    path.write_text(SMALL.replace("placement: {cell: cell-1}", "placement: {cell: cell-2}")
                    .replace("{pool_shard: pool-2}", "{pool_shard: pool-9}"))
    catalog = load_catalog(path)
    crowded = dataclasses.replace(catalog, placements={t: {"cell": "cell-2", "dataProject": PLATFORM_PROJECT}
                                                       for t in ("alpha", "bravo")})
    with pytest.raises(PlacementError) as exc:
        place(crowded, cap(cells=2, cell_capacity=2, pool_shards=2))
    assert exc.value.problems == [
        f"{path}:10: tenant 'delta': placement.cell: cell cell-2 is full (2 of 2 tenants); choose another cell (or "
        "leave it to placement), or raise tenancy:cellCapacity in stacks/Pulumi.dev.yaml",
        f"{path}:11: tenant 'echo': placement.pool_shard: pool-9 is not a pool shard of 'dev': stacks/Pulumi.dev.yaml "
        "declares pool-1, pool-2 (tenancy:poolShards: 2); use one of those or raise tenancy:poolShards",
    ]
    assert exc.value.exit_code == 2
    # every declared unit is a stack of its own: a pin to the last one is honoured even while the first has room
    placed = place(catalog, cap(cells=2, cell_capacity=5, pool_shards=9))
    assert (placed.tenants["delta"].cell, placed.decided["delta"]) == ("cell-2", "pinned")
    assert (placed.tenants["echo"].pool_shard, placed.decided["echo"]) == ("pool-9", "pinned")
    assert loads(placed, "cell") == {"cell-1": 3, "cell-2": 1}


def test_a_full_environment_names_the_capacity_to_add():
    catalog = parse_catalog(SMALL.replace(", placement: {pool_shard: pool-2}", ""))
    with pytest.raises(PlacementError) as exc:
        place(catalog, cap(cell_capacity=3))
    assert str(exc.value) == (
        "environment 'dev' is full: 1 new tenant(s) need a cell (charlie), and cell-1 holds 3 of 3 tenants. Add "
        "capacity in stacks/Pulumi.dev.yaml: raise tenancy:cells from 1 to 2 (each cell holds tenancy:cellCapacity = 3 "
        "tenants), or raise tenancy:cellCapacity")
    # the cell it names is enough: a declared cell is a stack of its own and takes the tenant that waited
    placed = place(catalog, cap(cells=2, cell_capacity=3))
    assert placed.tenants["charlie"].cell == "cell-2" and loads(placed, "cell") == {"cell-1": 3, "cell-2": 1}
    with pytest.raises(PlacementError) as exc:
        place(catalog, cap(cells=1, cell_capacity=2, data_project_instances=10))
    assert exc.value.problems == [
        "environment 'dev' is full: 2 new tenant(s) need a cell (bravo, charlie), and cell-1 holds 2 of 2 tenants. Add "
        "capacity in stacks/Pulumi.dev.yaml: raise tenancy:cells from 1 to 2 (each cell holds tenancy:cellCapacity = 2 "
        "tenants), or raise tenancy:cellCapacity",
        # delta is pinned to cell-1; by id, alpha, bravo and charlie take the platform project's 9 free instances
        "environment 'dev' is full: 1 new tenant(s) need a data project (delta), and tenancy-dev-482913 holds 10 of 10 "
        "Cloud SQL instances (3 more needed). Add capacity in stacks/Pulumi.dev.yaml: add 1 project id(s) to "
        "tenancy:dataProjects (each holds tenancy:dataProjectInstances = 10 Cloud SQL instances), or raise "
        "tenancy:dataProjectInstances",
    ]


# --------------------------------------------------------------------------------------- fleets of 10,000+

FLEET = 10_000
# 9,000 pooled, 900 namespace (2,700 Cloud SQL instances), 100 dedicated in projects of their own
FLEET_CAPACITY = cap(cells=4, pool_shards=5, data_projects=(PLATFORM_PROJECT, "data-proj-1", "data-proj-2"))


@pytest.fixture(scope="module")
def fleet():
    catalog = sample.catalog(FLEET)
    return catalog, place(catalog, FLEET_CAPACITY)


def test_fleet_placement_is_deterministic_and_independent_of_catalogue_order(fleet):
    catalog, placed = fleet
    shuffled = list(catalog.tenants)
    random.Random(14).shuffle(shuffled)
    again = place(dataclasses.replace(catalog, tenants=tuple(shuffled)), FLEET_CAPACITY)
    backwards = place(dataclasses.replace(catalog, tenants=catalog.tenants[::-1]), FLEET_CAPACITY)
    assert again.to_json() == backwards.to_json() == placed.to_json()
    # every tenant has a unit: a pool shard, or a cell (a dedicated tenant's home), and an identity shard
    assert len(placed.to_json()) == 10_000
    assert placed.to_json()["t000000"] == {"cell": "cell-1", "identityShard": "identity-1"}     # enterprise


def test_fleet_units_fill_in_order_and_none_is_over_capacity(fleet):
    _, placed = fleet
    # 900 namespace and 100 dedicated tenants (a cell is their home too)
    assert loads(placed, "cell") == {"cell-1": 300, "cell-2": 300, "cell-3": 300, "cell-4": 100}
    assert loads(placed, "pool_shard") == {"pool-1": 2000, "pool-2": 2000, "pool-3": 2000, "pool-4": 2000, "pool-5": 1000}
    # the platform project also holds the five pool shards' instances (5 + 331 x 3); 333 tenants of 3 instances fill
    # a project
    assert loads(placed, "data_project") == {PLATFORM_PROJECT: 998, "data-proj-1": 999, "data-proj-2": 708}
    for u in placed.usage():
        assert u["used"] <= u["capacity"], u


def test_placed_tenants_never_move_when_others_are_added_removed_or_reordered(fleet):
    catalog, placed = fleet
    deployed = placed.to_json()
    rng = random.Random(7)
    removed = set(rng.sample(sorted(deployed), 1_500))
    # new ids sort before and among the existing ones: placed by id they would take earlier units first
    added = sample.catalog(1_200, prefix="a").tenants + sample.catalog(300, prefix="t", start=FLEET).tenants
    kept = [t for t in catalog.tenants if t.id not in removed]
    tenants = kept + list(added)
    rng.shuffle(tenants)
    later = dataclasses.replace(catalog, tenants=tuple(tenants), placements=deployed)
    after = place(later, FLEET_CAPACITY)
    now = after.to_json()
    assert all(now[t.id] == deployed[t.id] for t in kept if t.id in deployed), "a placed tenant moved"
    assert all(after.decided[t.id] == "deployed" for t in kept if t.id in deployed)
    assert {after.decided[t.id] for t in added} == {"placed"}, "a dedicated tenant is placed in a home cell too"
    for u in after.usage():
        assert u["used"] <= u["capacity"], u
    # the freed slots are reused first: some new namespace tenants land in cells emptied by the removals
    freed_cells = {deployed[t]["cell"] for t in removed if "cell" in deployed[t]}
    assert any(now[t.id].get("cell") in freed_cells - {"cell-4"} for t in added if t.model.value == "namespace")
    # without the deployed record, the same catalogue would be placed differently: stickiness is doing the work
    fresh = place(dataclasses.replace(later, placements={}), FLEET_CAPACITY).to_json()
    assert any(fresh[t.id] != deployed[t.id] for t in kept if t.id in deployed)


def test_a_full_fleet_is_refused_with_the_capacity_to_add(fleet):
    catalog, placed = fleet
    # 2,250 more pooled tenants, 225 namespace tenants and 25 dedicated ones: every kind of unit overflows
    extra = sample.catalog(2_500, prefix="z").tenants
    full = dataclasses.replace(catalog, tenants=catalog.tenants + extra, placements=placed.to_json())
    with pytest.raises(PlacementError) as exc:
        place(full, FLEET_CAPACITY)
    assert exc.value.problems == [
        # 200 free places in cell-4; by id, the first 200 namespace and dedicated newcomers take them
        "environment 'dev' is full: 50 new tenant(s) need a cell (z002000, z002001, z002002, z002003, z002004 and 45 "
        "more), and cell-1 .. cell-4 hold 1,200 of 1,200 tenants. Add capacity in stacks/Pulumi.dev.yaml: raise "
        "tenancy:cells from 4 to 5 (each cell holds tenancy:cellCapacity = 300 tenants), or raise tenancy:cellCapacity",
        # 1,000 free places in pool-5
        "environment 'dev' is full: 1,250 new tenant(s) need a pool shard (z001120, z001121, z001122, z001123, z001124 "
        "and 1,245 more), and pool-1 .. pool-5 hold 10,000 of 10,000 pooled tenants. Add capacity in "
        "stacks/Pulumi.dev.yaml: raise tenancy:poolShards from 5 to 6 (each pool shard holds tenancy:poolShardCapacity "
        "= 2,000 pooled tenants), or raise tenancy:poolShardCapacity",
        # 97 namespace tenants of 3 instances fit in data-proj-2's 292 free instances; the other projects have 2 and 1
        "environment 'dev' is full: 128 new tenant(s) need a data project (z001008, z001009, z001101, z001102, z001103 "
        "and 123 more), and tenancy-dev-482913, data-proj-1, data-proj-2 hold 2,996 of 3,000 Cloud SQL instances (384 "
        "more needed). Add capacity in stacks/Pulumi.dev.yaml: add 1 project id(s) to tenancy:dataProjects (each holds "
        "tenancy:dataProjectInstances = 1,000 Cloud SQL instances), or raise tenancy:dataProjectInstances",
    ]
    # the capacity it names is enough, and the deployed fleet stays where it is
    enough = place(full, dataclasses.replace(FLEET_CAPACITY, cells=5, pool_shards=6,
                                             data_projects=(*FLEET_CAPACITY.data_projects, "data-proj-3")))
    assert enough.units["cell"].load["cell-5"] == 50 and enough.units["pool_shard"].load["pool-6"] == 1_250
    assert enough.units["data_project"].load["data-proj-3"] == 384
    now = enough.to_json()
    assert all(now[tid] == p for tid, p in placed.to_json().items())


def test_pins_are_honoured_in_a_fleet_and_a_pin_to_a_full_cell_is_refused(fleet):
    catalog, placed = fleet
    pinned = {t.id: "cell-4" for t in catalog.tenants if t.model.value == "namespace"}
    pinned = dict(list(pinned.items())[:50])
    pooled = [t.id for t in catalog.tenants if t.model.value == "pooled"][-10:]
    doc_pins = {**{tid: {"cell": c} for tid, c in pinned.items()}, **{tid: {"pool_shard": "pool-5"} for tid in pooled}}
    from tenancy.catalog import PlacementPin
    tenants = tuple(dataclasses.replace(t, placement=PlacementPin(**doc_pins[t.id])) if t.id in doc_pins else t
                    for t in catalog.tenants)
    result = place(dataclasses.replace(catalog, tenants=tenants), FLEET_CAPACITY)
    assert all(result.tenants[tid].cell == "cell-4" and result.decided[tid] == "pinned" for tid in pinned)
    assert all(result.tenants[tid].pool_shard == "pool-5" for tid in pooled)
    # the 50 pinned take cell-4 first; the other 950 namespace and dedicated tenants fill cells 1-3, then cell-4
    assert result.units["cell"].load == {"cell-1": 300, "cell-2": 300, "cell-3": 300, "cell-4": 100}
    assert sum(result.decided[t.id] == "placed" and result.tenants[t.id].cell == "cell-4" for t in catalog.tenants) == 50
    # once the fleet is deployed, a new tenant pinned to a full cell is refused, not placed elsewhere
    newcomer = dataclasses.replace(sample.tenant("n000001", "standard"), placement=PlacementPin(cell="cell-1"))
    later = dataclasses.replace(catalog, tenants=catalog.tenants + (newcomer,), placements=placed.to_json())
    with pytest.raises(PlacementError) as exc:
        place(later, FLEET_CAPACITY)
    assert exc.value.problems == [
        "generated.yaml: tenant 'n000001': placement.cell: cell cell-1 is full (300 of 300 tenants); choose "
        "another cell (or leave it to placement), or raise tenancy:cellCapacity in stacks/Pulumi.dev.yaml"]


def test_deployed_tenants_stay_when_capacity_shrinks_but_a_cell_holding_tenants_cannot_go(fleet):
    catalog, placed = fleet
    deployed = dataclasses.replace(catalog, placements=placed.to_json())
    smaller = place(deployed, dataclasses.replace(FLEET_CAPACITY, cell_capacity=200))
    assert smaller.to_json() == placed.to_json(), "lowering a capacity moves nobody"
    assert smaller.units["cell"].load["cell-1"] == 300
    with pytest.raises(PlacementError) as exc:
        place(deployed, dataclasses.replace(FLEET_CAPACITY, cells=2))
    # cells fill by id with ten tenants of every hundred (1 dedicated, 9 namespace): cell-3 from t006000, cell-4 from
    # t009000
    assert exc.value.problems == [
        "cell cell-3 holds 300 deployed tenant(s) (t006000, t006001, t006002, t006003, t006004 and 295 more), but "
        "stacks/Pulumi.dev.yaml no longer declares it (it declares cell-1, cell-2): a cell that holds tenants cannot be "
        "removed; declare it again (tenancy:cells: 3 or more), or move its tenants first with `tenancy place`",
        "cell cell-4 holds 100 deployed tenant(s) (t009000, t009001, t009002, t009003, t009004 and 95 more), but "
        "stacks/Pulumi.dev.yaml no longer declares it (it declares cell-1, cell-2): a cell that holds tenants cannot be "
        "removed; declare it again (tenancy:cells: 4 or more), or move its tenants first with `tenancy place`"]


def test_validate_checks_the_catalogue_against_the_environments_capacity(tmp_path, capsys):
    from tenancy import cli

    path = tmp_path / "tenants.yaml"
    path.write_text(SMALL)          # echo is pinned to pool-2; dev declares one pool shard
    assert cli.main(["validate", "--tenants", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{path}:11: tenant 'echo': placement.pool_shard: pool-2 is not a pool shard of 'dev': "
        "stacks/Pulumi.dev.yaml declares pool-1 (tenancy:poolShards: 1); use one of those or raise tenancy:poolShards",
        "1 problem(s); nothing was planned or applied"]
    path.write_text(SMALL.replace(", placement: {pool_shard: pool-2}", ""))
    assert cli.main(["validate", "--tenants", str(path)]) == 0


MANY_PROBLEMS = """version: 1
tenants:
  - {id: alpha, name: Alpha, plan: standard, admin_email: not-an-email}
  - id: bravo
    name: Bravo
    plan: enterprise
    admin_email: b@bravo.example
    custom_domain: portal.dev.saas-example.com
    dedicated: {project: {id: tenancy-dev-482913}}
  - {id: charlie, name: Charlie, plan: standard, admin_email: c@charlie.example, placement: {cell: cell-7}}
  - {id: delta, name: Delta, plan: standard, admin_email: d@delta.example}
  - {id: echo, name: Echo, plan: standard, admin_email: e@echo.example}
  - {id: foxtrot, name: Foxtrot, plan: nope, admin_email: f@foxtrot.example}
"""


def test_validate_and_plan_report_the_catalogue_and_its_fit_to_the_environment_in_one_run(tmp_path, capsys, monkeypatch):
    """A bad field, a custom domain under the base domain, the platform's project, a pin to a cell that does not
    exist, a full environment and an unknown plan: one run, each problem at its line in the catalogue's format."""
    from tenancy import envconfig
    from tenancy import cli

    real = envconfig.load_stack_config
    monkeypatch.setattr(envconfig, "load_stack_config", lambda e: {**real(e), "tenancy:cellCapacity": "1"})
    path = tmp_path / "tenants.yaml"
    path.write_text(MANY_PROBLEMS)
    expected = [
        f"{path}:3: tenant 'alpha': admin_email: 'not-an-email' is not a valid email address",
        f"{path}:8: tenant 'bravo': custom_domain: custom domain 'portal.dev.saas-example.com' is under the platform's "
        "base domain 'dev.saas-example.com' (dev), where the platform routes tenant subdomains; use a domain the tenant "
        "owns, or its subdomain instead",
        f"{path}:9: tenant 'bravo': dedicated.project.id: project 'tenancy-dev-482913' is the platform's project in "
        "environment dev; name a project of the tenant's own, or remove 'project' to place the tenant in the platform "
        "project",
        f"{path}:10: tenant 'charlie': placement.cell: cell-7 is not a cell of 'dev': stacks/Pulumi.dev.yaml declares "
        "cell-1 (tenancy:cells: 1); use one of those or raise tenancy:cells",
        # bravo (first by id; a cell is a dedicated tenant's home too) takes cell-1's one place; delta and echo wait
        f"{path}:11: placement: environment 'dev' is full: 2 new tenant(s) need a cell (delta, echo), and cell-1 holds "
        "1 of 1 tenants. Add capacity in stacks/Pulumi.dev.yaml: raise tenancy:cells from 1 to 3 (each cell holds "
        "tenancy:cellCapacity = 1 tenants), or raise tenancy:cellCapacity",
        f"{path}:13: tenant 'foxtrot': plan: unknown plan 'nope'; use one of enterprise, free, standard or declare it "
        "under 'plans'",
        "6 problem(s); nothing was planned or applied",
    ]
    assert cli.main(["validate", "--tenants", str(path)]) == 2
    out = capsys.readouterr()
    assert (out.out, out.err.splitlines()) == ("", expected)
    assert cli.main(["plan", "--tenants", str(path), "--out", str(tmp_path / "plan")]) == 2
    out = capsys.readouterr()
    assert out.err.splitlines() == expected and not (tmp_path / "plan").exists()
