"""The plan's caches (tenancy/plancache.py): a one-tenant plan writes the same plan.json with
and without them, runs only the stack it plans once they are warm, never keeps a secret value, and recomputes an
entry whenever one of its inputs changes."""

from __future__ import annotations

import dataclasses
import json

import pytest

from tenancy import envconfig, naming, plancache
from tenancy import plan as planmod
from tenancy.catalog import Catalog, State, load_catalog
from tenancy.errors import CatalogError
from tenancy.fleet import capacity as fleet_capacity
from tenancy.fleet import sample
from tenancy.fleet.placement import place
from tenancy.offline import run_stack
from tenancy.recorder import ORGANIZATION, SECRET
from tests.test_cells import REAL, cells_config

ENV = "prod"
# Two of everything: a namespace tenant in cell-2 and a pooled one in pool-2 read the units a one-tenant plan
# takes from the cache (the global stack; cell-2, or cell 1 for a pool shard).
CAPACITY = {"tenancy:cells": "2", "tenancy:cellCapacity": "2", "tenancy:poolShards": "2", "tenancy:poolShardCapacity": "3",
            "tenancy:identityShards": "2"}


def _catalog() -> Catalog:
    """A dedicated tenant, three namespace tenants, five pooled (one offboarded): the second namespace tenant lands
    in cell-2, the last pooled ones in pool-2."""
    tenants = [sample.tenant("ded-a", "enterprise"), *(sample.tenant(f"ns-{c}", "standard") for c in "abc"),
               *(sample.tenant(f"po-{c}", "free") for c in "abcde")]
    tenants[-1] = dataclasses.replace(tenants[-1], state=State.OFFBOARDED)
    return Catalog(path="tenants.yaml", plans=dict(sample.BUILTIN_PLANS), tenants=tuple(tenants))


@pytest.fixture
def cells(monkeypatch):
    cells_config(monkeypatch, ENV, **CAPACITY)
    catalog = _catalog()
    return catalog, place(catalog, fleet_capacity.load(ENV))


@pytest.fixture
def runs(monkeypatch):
    """Every stack program run, as (stack, tenants in its catalogue, tenant-facing only)."""
    seen: list[tuple[str, int, bool]] = []

    def spy(stack, catalog, config, outputs, tenant_facing_only=False):
        seen.append((stack, len(catalog.tenants), tenant_facing_only))
        return run_stack(stack, catalog, config, outputs, tenant_facing_only)

    monkeypatch.setattr(planmod, "run_stack", spy)
    monkeypatch.setattr(plancache, "run_stack", spy)
    return seen


def _ref(stack: str) -> str:
    return f"{ORGANIZATION}/tenancy/{stack}"


def _plan_json(catalog, placed, tenant: str, out) -> bytes:
    planmod.plan(catalog, ENV, tenants=[tenant], workers=1, out=out, placed=placed)
    return (out / "plan.json").read_bytes()


def test_the_fixture_puts_tenants_where_the_cache_matters(cells):
    _, placed = cells
    assert placed.tenants["ns-b"].cell == "cell-2" and placed.tenants["po-d"].pool_shard == "pool-2"


@pytest.mark.parametrize("tenant, planned, reads", [
    ("ns-b", "prod.ns-b", ["prod.cell-2"]),         # a namespace tenant: its stack, reading its cell
    ("po-d", "prod.pool-2", ["prod.cell-1"]),       # a pooled tenant: its pool shard, reading cell 1
    ("ded-a", "prod.ded-a", []),                    # a dedicated tenant: its stack, reading the global stack only
])
def test_a_one_tenant_plan_is_byte_identical_with_and_without_the_cache(cells, runs, monkeypatch, tmp_path, tenant,
                                                                        planned, reads):
    catalog, placed = cells
    n = len(catalog.tenants)
    monkeypatch.setenv(plancache.SWITCH, "0")
    without = _plan_json(catalog, placed, tenant, tmp_path / "without")
    # without the cache: the global stack and the cells read run with the whole catalogue, as they always did
    assert runs == [("prod", n, False), *((c, n, True) for c in reads), (planned, n, False)]
    assert not list(plancache.CACHE_DIR.iterdir())
    monkeypatch.setenv(plancache.SWITCH, "1")
    runs.clear()
    cold = _plan_json(catalog, placed, tenant, tmp_path / "cold")
    # cold: the units read run once, from their key's inputs alone (an empty catalogue), and are written
    assert runs == [("prod", 0, False), *((c, 0, True) for c in reads), (planned, n, False)]
    runs.clear()
    warm = _plan_json(catalog, placed, tenant, tmp_path / "warm")
    assert runs == [(planned, n, False)]          # warm: the planned stack alone
    assert cold == without and warm == without
    stack = json.loads(without)["stacks"][0]
    assert stack["name"] == planned and stack["resources"]


def test_a_cached_export_is_never_a_secret_value(cells, tmp_path):
    catalog, placed = cells
    _plan_json(catalog, placed, "ns-b", tmp_path / "p")
    glob = plancache.unit_exports(ENV, "prod", {})
    real, _ = run_stack("prod.cell-2", catalog, {}, {_ref("prod"): glob}, tenant_facing_only=True)
    assert real.secret_outputs == ["kubeconfig"] and len(real.raw_outputs["kubeconfig"]) > 100
    files = {p.name: p.read_text() for p in plancache.CACHE_DIR.iterdir()}
    assert sorted(files) == ["unit-prod.cell-2.json", "unit-prod.json"]
    cell = json.loads(files["unit-prod.cell-2.json"])
    assert cell["outputs"]["kubeconfig"] == SECRET and cell["secretOutputs"] == ["kubeconfig"]
    for text in files.values():
        assert real.raw_outputs["kubeconfig"] not in text and json.dumps(real.raw_outputs["kubeconfig"]) not in text


def test_the_outputs_cached_do_not_depend_on_the_catalogue(cells):
    """A unit's cached exports are computed with an empty catalogue: what it exports to its readers must be the same
    with a whole fleet, and what is made of the catalogue (the deployed record) is left out."""
    catalog, _ = cells
    config = envconfig.load_stack_config(ENV)
    full, _ = run_stack("prod", catalog, config, {})
    empty, _ = run_stack("prod", plancache.EMPTY, config, {})
    assert full.raw_outputs["deployedRecord"] != empty.raw_outputs["deployedRecord"]
    glob = plancache.facing((full.raw_outputs, list(full.secret_outputs)))
    assert glob == plancache.facing((empty.raw_outputs, list(empty.secret_outputs)))
    assert "deployedRecord" not in glob[0] and {"networkId", "baseDomain", "operatorNamespace"} <= set(glob[0])
    refs = {_ref("prod"): glob}
    for cell in ("prod.cell-1", "prod.cell-2"):
        with_tenants, _ = run_stack(cell, catalog, {}, refs, tenant_facing_only=True)
        without, _ = run_stack(cell, plancache.EMPTY, {}, refs, tenant_facing_only=True)
        assert with_tenants.raw_outputs == without.raw_outputs, cell


def test_a_change_of_a_units_input_recomputes_its_exports(cells, runs, monkeypatch):
    glob = plancache.unit_exports(ENV, "prod", {})
    cell = plancache.unit_exports(ENV, "prod.cell-2", {_ref("prod"): glob})
    assert [r[0] for r in runs] == ["prod", "prod.cell-2"]
    runs.clear()
    # the same inputs: read back, equal, nothing runs
    assert plancache.unit_exports(ENV, "prod", {}) == glob
    assert plancache.unit_exports(ENV, "prod.cell-2", {_ref("prod"): glob}) == cell
    assert runs == []
    # the environment's config: the global stack's exports follow it, and the cell that reads them runs again
    cells_config(monkeypatch, ENV, **CAPACITY, **{"tenancy:baseDomain": "other-example.com"})
    moved = plancache.unit_exports(ENV, "prod", {})
    assert moved[0]["baseDomain"] == "other-example.com" and glob[0]["baseDomain"] == "saas-example.com"
    assert plancache.unit_exports(ENV, "prod.cell-2", {_ref("prod"): moved})[0]["clusterName"] == cell[0]["clusterName"]
    assert [r[0] for r in runs] == ["prod", "prod.cell-2"]
    runs.clear()
    # what a cell reads of the global stack, alone
    changed = ({**moved[0], "networkId": "projects/x/global/networks/other"}, moved[1])
    plancache.unit_exports(ENV, "prod.cell-2", {_ref("prod"): changed})
    assert [r[0] for r in runs] == ["prod.cell-2"]
    runs.clear()
    # the code (or the packages): every entry
    monkeypatch.setattr(plancache, "code_key", lambda: "another version of the code")
    plancache.unit_exports(ENV, "prod", {})
    assert [r[0] for r in runs] == ["prod"]


def test_the_code_key_follows_every_file_of_the_code_and_the_packages(tmp_path, monkeypatch):
    for name in ("Pulumi.yaml", "constraints.txt", "stacks/Pulumi.prod.yaml", "tenancy/plan.py", "policy/rules.py",
                 "components/cluster.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(f"# {name}\n")
    monkeypatch.setattr(plancache, "ROOT", tmp_path)

    def key() -> str:
        plancache.code_key.cache_clear()
        return plancache.code_key()

    keys = {key()}
    for name in ("constraints.txt", "stacks/Pulumi.prod.yaml", "tenancy/plan.py", "policy/rules.py", "components/cluster.py"):
        (tmp_path / name).write_text((tmp_path / name).read_text() + "# changed\n")
        keys.add(key())
    (tmp_path / "tenancy" / "new.py").write_text("")
    keys.add(key())
    monkeypatch.setattr(plancache.metadata, "version", lambda package: "0.0.0-other")
    keys.add(key())
    plancache.code_key.cache_clear()
    assert len(keys) == 8


def test_the_checked_catalogue_is_cached_by_its_files_bytes(cells, tmp_path, monkeypatch):
    path = tmp_path / "tenants.yaml"
    path.write_text("version: 1\ntenants:\n- {id: alpha, name: Alpha, plan: free, admin_email: a@alpha.example}\n")
    record = tmp_path / "record.json"
    record.write_text(json.dumps({"catalog": {}, "placements": {"alpha": {"poolShard": "pool-2"}}}))
    calls = []

    def check():
        calls.append(1)
        catalog = load_catalog(path)
        placements = json.loads(record.read_text())["placements"]
        catalog = dataclasses.replace(catalog, placements=placements)
        return catalog, place(catalog, fleet_capacity.load(ENV))

    def checked():
        return plancache.checked_catalog(str(path), ENV, str(record), check)

    first = checked()
    second = checked()
    assert len(calls) == 1 and second[0] == first[0] and second[1].tenants == first[1].tenants
    assert second[1].tenants["alpha"].pool_shard == "pool-2"
    # a new tenant in the file
    path.write_text(path.read_text() + "- {id: bravo, name: Bravo, plan: free, admin_email: b@bravo.example}\n")
    assert [t.id for t in checked()[0].tenants] == ["alpha", "bravo"] and len(calls) == 2
    # another deployed placement
    record.write_text(json.dumps({"catalog": {}, "placements": {"alpha": {"poolShard": "pool-1"}}}))
    assert checked()[1].tenants["alpha"].pool_shard == "pool-1" and len(calls) == 3
    # the environment's capacity
    cells_config(monkeypatch, ENV, **{**CAPACITY, "tenancy:poolShards": "3"})
    assert checked()[1].capacity.pool_shards == 3 and len(calls) == 4
    checked()
    assert len(calls) == 4
    # a bad file is read, and reported, every time: never from the cache
    path.write_text("version: 1\ntenants:\n- {id: Alpha!, name: Alpha, plan: free, admin_email: a@alpha.example}\n")
    for _ in range(2):
        with pytest.raises(CatalogError, match="Alpha!"):
            checked()
    assert len(calls) == 6
    # switched off: checked every time
    monkeypatch.setenv(plancache.SWITCH, "0")
    path.write_text("version: 1\ntenants: []\n")
    checked()
    checked()
    assert len(calls) == 8


def test_tenancy_plan_reads_the_checked_catalogue_once_and_reports_a_bad_one(cells, tmp_path, monkeypatch, capsys):
    from tenancy import cli
    from tenancy.cli import plan_commands

    path = tmp_path / "tenants.yaml"
    path.write_text("version: 1\ntenants:\n" + "".join(
        f"- {{id: {t}, name: {t}, plan: {p}, admin_email: a@{t}.example}}\n"
        for t, p in (("ns-a", "standard"), ("ns-b", "standard"), ("po-a", "free"))))
    calls = []
    original = plan_commands.checked_catalog

    def spy(args, deployed=False):
        calls.append(args.tenants)
        return original(args, deployed)

    monkeypatch.setattr(plan_commands, "checked_catalog", spy)
    argv = ["plan", "--env", ENV, "--tenants", str(path), "--tenant", "po-a", "--out", str(tmp_path / "out")]
    assert cli.main(argv) == 0
    first = (tmp_path / "out" / "plan.json").read_bytes()
    assert cli.main(argv) == 0 and len(calls) == 1
    assert (tmp_path / "out" / "plan.json").read_bytes() == first
    assert [s["name"] for s in json.loads(first)["stacks"]] == [naming.unit_stack(ENV, "pool-1")]
    path.write_text(path.read_text().replace("plan: free", "plan: fre"))
    capsys.readouterr()
    assert cli.main(argv) == 2 and len(calls) == 2
    assert "tenant 'po-a'" in capsys.readouterr().err


def test_a_plan_of_the_global_stack_runs_it_with_the_catalogue(cells, runs, tmp_path):
    """A plan that plans the global stack (a whole plan) takes nothing from the unit cache."""
    catalog, placed = cells
    planmod.plan(catalog, ENV, workers=1, out=tmp_path / "all", placed=placed)
    assert ("prod", len(catalog.tenants), False) in runs
    assert not any(n == 0 for _, n, _ in runs)
    assert not list(plancache.CACHE_DIR.iterdir())
