"""The environment's stacks (stacks/cells.py): bounded stacks and objects at 10,000 tenants, identity shards a tier
change never touches, and the migration of an environment deployed as one platform stack (earlier versions)
through the offline engine."""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path

import pytest

from policy.sizes import MAX_OBJECT_BYTES, MAX_STACK_RESOURCES
from tenancy import envconfig, naming
from tenancy.catalog import BUILTIN_PLANS, parse_catalog
from tenancy.changes import changes_between
from tenancy.engine import STATEFUL_TYPES, EngineError, OfflineEngine
from tenancy.fleet import capacity as fleet_capacity
from tenancy.operations import migrate as mig
from tenancy.fleet import sample
from tenancy.fleet.placement import PlacementError, place
from tenancy.lifecycle import deploy
from tenancy.offline import run_stack
from tenancy.plan import _to_stack_plan
from tenancy.recorder import ORGANIZATION

REAL = envconfig.load_stack_config


def cells_config(monkeypatch, env: str = "dev", **extra: str) -> None:
    """`env` with `cells` cells with ranges of their own, and the other keys given."""
    cells = int(extra.get("tenancy:cells", "1"))
    networks = {f"cell-{n}": {"networkCidr": f"172.{17 + n // 16}.{(n % 16) * 16}.0/20", "podsCidr": f"10.{150 + n}.0.0/16",
                              "servicesCidr": f"100.{64 + n // 16}.{(n % 16) * 16}.0/20",
                              "masterCidr": f"192.168.{n}.0/28"}
                for n in range(2, cells + 1)}
    monkeypatch.setattr(envconfig, "load_stack_config", lambda e: {
        **REAL(e), "tenancy:cellNetworks": json.dumps(networks), **extra})


# -------------------------------------------------------------------------------------------- 10,000 tenants

FLEET = {"tenancy:cells": "4", "tenancy:cellCapacity": "300", "tenancy:poolShards": "10",
         "tenancy:poolShardCapacity": "1000", "tenancy:identityShards": "8",
         "tenancy:dataProjects": json.dumps(["prod-data-1", "prod-data-2", "prod-data-3"])}


@pytest.fixture(scope="module")
def fleet():
    """10,000 generated tenants (90% pooled, 9% namespace, 1% dedicated) placed in the cells layout of prod."""
    mp = pytest.MonkeyPatch()
    cells_config(mp, **FLEET)
    catalog = sample.catalog(10_000)
    capacity = fleet_capacity.load("prod")
    mp.undo()
    return catalog, capacity, place(catalog, capacity)


def _ref(stack: str) -> str:
    return f"{ORGANIZATION}/tenancy/{stack}"


def _run(stack: str, catalog, refs: dict) -> dict:
    """A stack program under the recorder, with its policy violations (the real pack), as a plan.json entry."""
    config = REAL("prod") if naming.stack_kind(stack)[0] == naming.ENV_STACK else {}
    result, seconds = run_stack(stack, catalog, config, refs)
    plan = _to_stack_plan(stack, naming.stack_kind(stack)[0], None, None, result, seconds)
    return {**plan.to_json(), "raw": result.raw_outputs, "secret": list(result.secret_outputs)}


def _identity_names(placement, shard: str | None = None) -> dict:
    return {tid: f"{naming.identity_display_name(tid)}-x1" for tid, p in placement.tenants.items()
            if shard is None or p.identity_shard == shard}


def _largest(placement, key: str) -> tuple[str, int]:
    counts: dict[str, int] = {}
    for p in placement.tenants.values():
        if getattr(p, key):
            counts[getattr(p, key)] = counts.get(getattr(p, key), 0) + 1
    return max(counts.items(), key=lambda kv: kv[1])


def _objects(stack: dict) -> list[tuple[str, int]]:
    """(urn, bytes) of every Kubernetes object (a ConfigMap's data as the API server counts it) and Helm values
    document of a stack."""
    from policy.sizes import data_size, serialized_size

    out = []
    for r in stack["resources"]:
        i = r["inputs"]
        if r["type"].startswith("kubernetes:helm.sh/"):
            out.append((r["urn"], serialized_size(i.get("values") or {})))
        elif r["type"].startswith("kubernetes:") and "kind" in i:
            out.append((r["urn"], serialized_size(i)))
            if i["kind"] == "ConfigMap":
                out.append((r["urn"] + "#data", data_size(i)))
    return out


def test_every_stack_of_a_10000_tenant_fleet_is_bounded_and_every_object_under_1_mib(fleet, monkeypatch):
    cells_config(monkeypatch, **FLEET)
    catalog, capacity, placement = fleet
    glob = _run("prod", catalog, {})
    refs = {_ref("prod"): (glob["raw"], glob["secret"])}
    shard, n_identity = _largest(placement, "identity_shard")
    cell, n_cell = _largest(placement, "cell")
    pool, n_pool = _largest(placement, "pool_shard")
    # placement spreads the fleet over every unit and fills cells and shards one after another
    assert (n_cell, n_pool) == (300, 1000) and 1000 < n_identity < 1500
    identity = _run(naming.unit_stack("prod", shard), catalog, refs)
    for s in capacity.identity_shard_names:
        refs[_ref(naming.unit_stack("prod", s))] = ({"identityTenants": json.dumps(_identity_names(placement, s))}, [])
    cell_plan = _run(naming.unit_stack("prod", cell), catalog, refs)
    refs[_ref("prod.cell-1")] = (cell_plan["raw"] if cell == "cell-1" else
                                 _run("prod.cell-1", catalog, refs)["raw"], cell_plan["secret"])
    pool_plan = _run(naming.unit_stack("prod", pool), catalog, refs)
    sizes = {}
    for plan in (glob, identity, cell_plan, pool_plan):
        assert plan["violations"] == [], plan["name"]        # the object-and-stack-size rule among them
        sizes[plan["name"]] = len(plan["resources"])
        assert sizes[plan["name"]] <= MAX_STACK_RESOURCES
        assert [(u, n) for u, n in _objects(plan) if n >= MAX_OBJECT_BYTES] == []
    # the global stack holds nothing per tenant: beside its own few resources, each unit's deploying identity (its
    # component, account, Workload Identity binding and project roles; tenancy/operator/deployers.py)
    from tenancy.operator.deployers import environment_deployers
    units = [d for d in environment_deployers("prod", catalog, "tenancy-prod-719304",
                                              "deployer@tenancy-prod-719304.iam.gserviceaccount.com",
                                              [*capacity.identity_shard_names, *capacity.cell_names,
                                               *capacity.pool_shard_names]) if d.account_id and not d.own_project]
    assert len(units) == 8 + 4 + 10
    in_deployers = [r for r in glob["resources"] if "tenancy:operator:Deployer" in r["urn"].split("::")[2]]
    assert len(in_deployers) == sum(3 + len(d.grants) for d in units)
    assert sizes["prod"] - len(in_deployers) < 40
    # the others grow with their own unit's tenants only
    assert sizes[naming.unit_stack("prod", shard)] == n_identity + 2       # its tenants, the component, the provider
    directory = next(r for r in cell_plan["resources"] if r["urn"].endswith("::directory-configmap"))
    assert len(json.loads(directory["inputs"]["data"]["tenants.json"])) == 300
    pooled_dir = next(r for r in pool_plan["resources"] if r["urn"].endswith("::pool-directory-configmap"))
    entries = json.loads(pooled_dir["inputs"]["data"]["tenants.json"])
    assert len(pooled_dir["inputs"]["data"]["tenants.json"]) < 0.8 * MAX_OBJECT_BYTES   # room to spare at 1,000
    assert len(entries) == 1000 and {e["placement"]["poolShard"] for e in entries.values()} == {pool}
    assert {e["placement"]["stack"] for e in entries.values()} == {f"prod.{pool}"}
    # a pool shard's resources do not grow with its tenants (they are rows, entries and values); a cell's grow
    # by one DNS record per tenant at most: the other units of each kind hold fewer tenants than these
    assert sizes[naming.unit_stack("prod", pool)] < 100 and sizes[naming.unit_stack("prod", cell)] < 100 + n_cell


def test_placement_of_10000_tenants_is_deterministic_and_sticky_with_identity_shards(fleet):
    catalog, capacity, placement = fleet
    shuffled = dataclasses.replace(catalog, tenants=tuple(reversed(catalog.tenants)))
    assert place(shuffled, capacity).tenants == placement.tenants
    deployed = dataclasses.replace(catalog, placements=placement.to_json())
    # 200 new tenants whose ids sort first, and 100 placed ones removed: nobody placed moves
    more = sample.catalog(200, prefix="a")
    grown = dataclasses.replace(deployed, tenants=more.tenants + catalog.tenants[100:])
    again = place(grown, capacity).tenants
    assert all(again[t] == placement.tenants[t] for t in placement.tenants if t in again)
    # fewer identity shards later: deployed tenants keep theirs, new ones hash over what is declared
    fewer = dataclasses.replace(capacity, identity_shards=4)
    with pytest.raises(PlacementError) as exc:
        place(deployed, fewer)
    assert "identity shards are never removed: raise tenancy:identityShards back to at least 8" in str(exc.value)
    more_shards = dataclasses.replace(capacity, identity_shards=16)
    kept = place(deployed, more_shards).tenants
    assert all(kept[t].identity_shard == placement.tenants[t].identity_shard for t in kept)


def test_a_full_cell_layout_refuses_new_namespace_tenants_naming_the_capacity_to_add(fleet):
    catalog, capacity, _ = fleet
    with pytest.raises(PlacementError) as exc:
        # 900 namespace tenants and 100 dedicated ones (a cell is their home too) in 3 cells of 333
        place(catalog, dataclasses.replace(capacity, cells=3, cell_capacity=333))
    assert str(exc.value).startswith("environment 'prod' is full: 1 new tenant(s) need a cell (t009909), and cell-1, "
                                     "cell-2, cell-3 hold 999 of 999 tenants")
    assert "raise tenancy:cells from 3 to 4" in str(exc.value)


def test_unit_stacks_refuse_undeclared_units_and_the_layout_of_earlier_versions(monkeypatch):
    from tenancy.errors import ConfigError

    with pytest.raises(ConfigError) as exc:
        monkeypatch.setattr(envconfig, "load_stack_config", lambda e: {**REAL(e), "tenancy:layout": "single"})
        fleet_capacity.load("dev")
    assert str(exc.value) == ("stacks/Pulumi.dev.yaml: tenancy:layout is 'single', but every environment is now a "
                              "global stack plus cells, pool shards and identity shards: remove the key (an environment "
                              "deployed as one platform stack then moves with `tenancy migrate --env dev`)")
    monkeypatch.setattr(envconfig, "load_stack_config", lambda e: {**REAL(e), "tenancy:layout": "cells"})
    assert fleet_capacity.load("dev").cell_names == ["cell-1"]      # a config of an earlier version still reads
    with pytest.raises(ValueError):
        naming.unit_stack("dev", "shard-1")
    assert naming.platform_collision("identity-3") == "it has the shape of the name of a platform identity shard " \
                                                      "(Identity Platform tenants)"


def test_cell_networks_are_required_for_later_cells_and_must_not_overlap():
    from tenancy.errors import ConfigError

    with pytest.raises(ConfigError) as exc:
        fleet_capacity.Capacity.validate({"cells": 3, "cellNetworks": {
            "cell-2": {"networkCidr": "10.50.0.0/20", "podsCidr": "10.50.0.0/14", "servicesCidr": "10.60.0.0/20",
                       "masterCidr": "172.16.9.0/28"}}}, "dev", "tenancy-dev-482913")
    lines = str(exc.value).splitlines()
    assert lines[0].startswith("stacks/Pulumi.dev.yaml: tenancy:cellNetworks has no ranges for cell-3")
    assert lines[1] == ("stacks/Pulumi.dev.yaml: tenancy:cellNetworks.cell-2.podsCidr 10.50.0.0/14 overlaps "
                        "cell-2.networkCidr; every cell's ranges must be distinct")
    with pytest.raises(ConfigError) as exc:
        fleet_capacity.Capacity.validate({"layout": "cellular"}, "dev", "tenancy-dev-482913")
    assert str(exc.value).startswith("stacks/Pulumi.dev.yaml: tenancy:layout is 'cellular', but every environment is")


# ------------------------------------------------------------------------------------- deployments, offline

SMALL = """version: 1
tenants:
  - {id: bravo, name: Bravo, plan: free, admin_email: b@bravo.example}
  - {id: charlie, name: Charlie, plan: free, admin_email: c@charlie.example}
  - {id: delta, name: Delta, plan: standard, admin_email: d@delta.example}
  - {id: echo, name: Echo, plan: enterprise, admin_email: e@echo.example}
"""


def _up_cells(engine: OfflineEngine, catalog) -> None:
    from tenancy.topology import unit_stacks

    capacity = fleet_capacity.load("dev")
    for stack in ["dev", *sorted(unit_stacks("dev", capacity), key=mig._order),
                  *(naming.stack_name("dev", t.id) for t in catalog.stack_tenants)]:
        engine.up(stack, catalog)


def test_a_tier_change_touches_the_tenants_units_and_no_identity_stack(monkeypatch, tmp_path):
    cells_config(monkeypatch, **{"tenancy:identityShards": "3"})
    engine = OfflineEngine(tmp_path / "state", "dev")
    old = parse_catalog(SMALL)
    _up_cells(engine, old)
    new = parse_catalog(SMALL.replace("{id: bravo, name: Bravo, plan: free", "{id: bravo, name: Bravo, plan: standard"))
    touched = set(changes_between(old, new, "dev").reasons)
    assert touched == {"dev.pool-1", "dev.cell-1", "dev.bravo"}
    for shard in ("identity-1", "identity-2", "identity-3"):
        assert engine.preview(f"dev.{shard}", new).changes == []
    pool = engine.preview("dev.pool-1", new)
    # bravo leaves the pool's directory, Helm values and registrations (a new SQL Job): no stateful resource goes
    assert pool.destructive() == [] and any(c.urn.endswith("::pool-directory-configmap") and c.op == "update"
                                            for c in pool.changes)
    cell = engine.preview("dev.cell-1", new)
    assert [c.op for c in cell.changes if "directory" in c.urn] == ["update"]
    # adding a tenant touches its identity shard and its unit, nothing else
    added = parse_catalog(SMALL + "  - {id: foxtrot, name: Foxtrot, plan: free, admin_email: f@foxtrot.example}\n")
    shard = fleet_capacity.load("dev").identity_shard_of("foxtrot")
    assert set(changes_between(old, added, "dev").reasons) == {"dev.pool-1", f"dev.{shard}"}


def test_a_pin_that_places_a_new_namespace_tenant_in_another_cell_replans_its_stack(monkeypatch):
    """A namespace tenant's stack reads its cell: a pin that moves a tenant not yet deployed to another cell
    changes what its stack reads, and both cells' directories."""
    cells_config(monkeypatch, **{"tenancy:cells": "2"})
    old = parse_catalog(SMALL)
    pinned = parse_catalog(SMALL.replace("admin_email: d@delta.example}", "admin_email: d@delta.example, "
                                                                         "placement: {cell: cell-2}}"))
    reasons = changes_between(old, pinned, "dev").reasons
    assert reasons["dev.delta"] == ["cell changed: cell-1 → cell-2"]
    assert reasons["dev.cell-1"] == reasons["dev.cell-2"] == ["tenant delta changed: placement"]
    assert set(reasons) == {"dev.delta", "dev.cell-1", "dev.cell-2"}
    # once deployed, a pin never moves it (tenancy place does): nothing to replan for its stack
    deployed = dataclasses.replace(old, placements={"delta": {"cell": "cell-1", "dataProject": "tenancy-dev-482913",
                                                              "identityShard": "identity-1"}})
    held = dataclasses.replace(pinned, placements=deployed.placements)
    assert "dev.delta" not in changes_between(deployed, held, "dev").reasons


class _Interrupted(Exception):
    pass


ONE_PLATFORM_STACK = Path(__file__).parent / "fixtures" / "one-platform-stack"


def _one_platform_stack(state: Path) -> None:
    """The offline state of SMALL deployed by an earlier version as one platform stack `dev` (cell 1, pool
    shard 1 and every Identity Platform tenant in it), with the stacks of delta and echo that read it."""
    state.mkdir(parents=True)
    for f in ONE_PLATFORM_STACK.glob("*.json.gz"):
        (state / f.name[:-3]).write_bytes(gzip.decompress(f.read_bytes()))


class _FlakyEngine(OfflineEngine):
    """Dies after `ok` state moves (a kill between two CLI calls)."""

    ok = 10 ** 6

    def state_move(self, source, dest, urns):
        if self.ok == 0:
            raise _Interrupted(dest)
        self.ok -= 1
        super().state_move(source, dest, urns)


def _everything(engine: OfflineEngine) -> dict[str, str]:
    """Every platform-side resource (providers aside: each stack has its own) by its URN without the stack ->
    the stack holding it."""
    out = {}
    for stack in engine.stacks():
        if naming.stack_kind(stack)[0] == naming.TENANT_STACK:
            continue
        for urn, type_ in engine.resources(stack).items():
            if type_.startswith("pulumi:providers:") or type_ == "pulumi:pulumi:StackReference":
                continue
            key = urn.split("::", 1)[1]
            assert key not in out, f"{key} in {out.get(key)} and {stack}"
            out[key] = stack
    return out


def test_migration_from_one_platform_stack_moves_state_and_recreates_nothing(monkeypatch, tmp_path):
    from tenancy.lifecycle.record import LayoutError

    _one_platform_stack(tmp_path / "state")
    engine = _FlakyEngine(tmp_path / "state", "dev")
    catalog = parse_catalog(SMALL)
    before = _everything(engine)
    assert len(before) == 94 and set(before.values()) == {"dev"}
    stateful = {k: s for k, s in before.items() if any(k.split("::")[1].endswith(t) for t in STATEFUL_TYPES)}
    # until it is migrated, no deploy runs: this version's programs would remove what moves to the unit stacks
    with pytest.raises(LayoutError) as exc:
        deploy.deploy(engine, catalog, "dev")
    assert str(exc.value) == ("environment 'dev' is deployed as one platform stack 'dev', the layout of earlier "
                              "versions: run `tenancy migrate --env dev` first (it moves the state into the cell, "
                              "pool-shard and identity-shard stacks and recreates nothing); nothing was changed")
    assert not [c for c in engine.calls if c[0] in ("up", "state-move")] and _everything(engine) == before

    cells_config(monkeypatch, **{"tenancy:identityShards": "2"})
    engine.ok = 1                                    # killed after the first move
    said: list[str] = []
    with pytest.raises(_Interrupted):
        mig.migrate(engine, "dev", said.append)
    engine.ok = 10 ** 6
    result = mig.migrate(engine, "dev", said.append)
    after = _everything(engine)
    # nothing lost and nothing recreated: every resource is where it was or in its new stack; the one new
    # resource is pool shard 1's directory (its tenants' entries, in its namespace)
    assert set(before) <= set(after)
    assert [k.rsplit("::", 1)[1] for k in set(after) - set(before)] == ["pool-directory-configmap"]
    assert after[next(iter(set(after) - set(before)))] == "dev.pool-1"
    where = {k.rsplit("::", 1)[1]: s for k, s in after.items()}
    assert where["pooled-db-instance"] == "dev.pool-1" and where["shared-cluster"] == "dev.cell-1"
    assert where["edge-zone"] == "dev" and where["identity-config"] == "dev" and where["platform-vpc"] == "dev"
    shards = {s for k, s in after.items() if "identityplatform/tenant:Tenant" in k}
    assert shards == {"dev.identity-1", "dev.identity-2"}
    assert {k for k in stateful} <= set(after)
    moves = [c for c in engine.calls if c[0] == "state-move"]
    # identity-1 moved before the kill; the re-run moved only what was left
    assert [m[1].split(":")[0] for m in moves] == ["dev->dev.identity-1", "dev->dev.identity-2", "dev->dev.cell-1",
                                                   "dev->dev.pool-1"]
    # nothing stateful replaced or deleted; the one delete is the k8s provider the cluster's move left behind in the
    # global stack; the pool's SQL Job is replaced (its registrations now name the tenants' unit stacks)
    assert [c for p in result.previews for c in p.destructive()] == []
    assert {(c.op, c.type) for p in result.previews for c in p.changes if c.op == "delete"} == \
        {("delete", "pulumi:providers:kubernetes")}
    assert {c.urn.rsplit("::", 1)[1] for p in result.previews for c in p.changes if c.op == "replace"} == \
        {"pooled-sql-sql", "pooled-sql-ca", "pooled-sql-job"}
    assert said[-1] == "preview dev: 1 delete"
    # the platform stack is now the global stack; a re-run moves nothing
    # the global stack records no tenant (none is offboarded); each unit records its own
    assert engine.outputs("dev")["layout"] == "cells"
    assert json.loads(engine.outputs("dev")["deployedRecord"])["catalog"]["tenants"] == []
    assert [t["id"] for t in json.loads(engine.outputs("dev.pool-1")["deployedRecord"])["catalog"]["tenants"]] == \
        ["bravo", "charlie"]
    assert [t["id"] for t in json.loads(engine.outputs("dev.cell-1")["deployedRecord"])["catalog"]["tenants"]] == \
        ["delta", "echo"]
    calls = len(engine.calls)
    again: list[str] = []
    mig.migrate(engine, "dev", again.append)
    assert again == ["environment 'dev' is already a global stack with unit stacks: nothing to move"]
    assert not [c for c in engine.calls[calls:] if c[0] in ("state-move", "up")]
    # and every stack previews clean
    for stack in engine.stacks():
        assert [c for c in engine.preview(stack, catalog).changes if c.op in ("delete", "replace")] == []


def test_migration_stops_before_moving_when_a_resource_has_no_stack(monkeypatch, tmp_path):
    _one_platform_stack(tmp_path / "state")
    engine = OfflineEngine(tmp_path / "state", "dev")
    state = json.loads((tmp_path / "state" / "dev.json").read_text())
    state["resources"]["urn:pulumi:dev::tenancy::gcp:storage/bucket:Bucket::stray"] = {
        "type": "gcp:storage/bucket:Bucket", "inputs": {}, "protect": True}
    (tmp_path / "state" / "dev.json").write_text(json.dumps(state))
    cells_config(monkeypatch)
    with pytest.raises(mig.MigrationError) as exc:
        mig.migrate(engine, "dev")
    assert str(exc.value) == ("1 resource(s) of 'dev' are declared by no stack of this version, so a migration "
                              "would delete them: stray; nothing was moved")
    assert not [c for c in engine.calls if c[0] == "state-move"]


def test_the_automation_engine_runs_state_move_through_the_cli_in_batches(tmp_path):
    from tenancy.engine import STATE_MOVE_BATCH, AutomationEngine

    ran: list[list[str]] = []

    class FakeStack:
        def _run_pulumi_cmd_sync(self, args):
            ran.append(args)

    engine = AutomationEngine(tmp_path, None)
    engine._stack = lambda name, catalog: FakeStack()
    urns = [f"urn:pulumi:dev::tenancy::gcp:identityplatform/tenant:Tenant::identity-t{i}" for i in range(450)]
    engine.state_move("dev", "dev.identity-1", urns)
    assert [len(a) for a in ran] == [7 + STATE_MOVE_BATCH, 7 + STATE_MOVE_BATCH, 7 + 50]
    assert ran[0][:7] == ["state", "move", "--source", "dev", "--dest", "dev.identity-1", "--yes"]
    assert [u for a in ran for u in a[7:]] == urns


def test_migrate_command_line(monkeypatch, tmp_path, capsys):
    from tenancy import cli

    _one_platform_stack(tmp_path / "state")
    (tmp_path / "tenants.yaml").write_text(SMALL)
    engine_args = ["--env", "dev", "--engine", "offline", "--state", str(tmp_path / "state"),
                   "--tenants", str(tmp_path / "tenants.yaml")]
    args = ["migrate", *engine_args]
    assert cli.main(["up", *engine_args]) == 2        # every other command waits for the migration
    assert "run `tenancy migrate --env dev` first" in capsys.readouterr().err
    assert cli.main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out[:3]] == ["dev.cell-1", "dev.identity-1", "dev.pool-1"]
    assert out[1] == "dev.identity-1: 4 resource(s) would move"        # one identity tenant per tenant
    assert not [p for p in (tmp_path / "state").glob("dev.cell-1.json")]
    assert cli.main(args) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("global stack dev: keeps ")
    assert cli.main(args) == 0
    assert capsys.readouterr().out.splitlines() == ["environment 'dev' is a global stack with unit stacks"]


def test_deploys_and_one_tenant_commands_run_only_the_tenants_units(monkeypatch, tmp_path, pg_server, registry):
    import uuid

    import psycopg

    from tenancy import db
    from tenancy.lifecycle import record as rec
    from tenancy.operations import suspend as suspending
    from tenancy.operations.protocol import Context
    from tenancy.operations.stores import connection_record
    from tests.sqlhelp import register

    # charlie's pool shard and delta's three databases, recorded in the registry
    names = {"pool-2": f"t_{uuid.uuid4().hex[:12]}", **{f"delta/postgres-{i}": f"t_{uuid.uuid4().hex[:12]}" for i in (1, 2, 3)}}
    with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
        for dbname in names.values():
            c.execute(f'CREATE DATABASE "{dbname}"')
    for name, dbname in names.items():
        db.apply(pg_server.dsn(dbname=dbname))
        register(pg_server, dbname, "charlie" if name == "pool-2" else "delta")
        registry.set_database(name, name if name.startswith("pool") else "tenant:delta",
                              connection_record(pg_server.dsn(dbname=dbname)))

    cells_config(monkeypatch, **{"tenancy:identityShards": "2", "tenancy:poolShards": "2",
                                 "tenancy:poolShardCapacity": "1"})
    engine = OfflineEngine(tmp_path / "state", "dev")
    catalog = parse_catalog(SMALL)
    outcomes = deploy.deploy(engine, catalog, "dev")
    assert [(o.stack, o.status) for o in outcomes] == [
        ("dev", "ok"), ("dev.identity-1", "ok"), ("dev.identity-2", "ok"), ("dev.cell-1", "ok"), ("dev.pool-1", "ok"),
        ("dev.pool-2", "ok"), ("dev.delta", "ok"), ("dev.echo", "ok")]
    deployed = rec.read(engine, "dev")
    assert sorted(t.id for t in deployed.catalog.tenants) == ["bravo", "charlie", "delta", "echo"]
    assert {t: p.get("poolShard") or p.get("cell") for t, p in deployed.catalog.placements.items()} == {
        "bravo": "pool-1", "charlie": "pool-2", "delta": "cell-1", "echo": "cell-1"}
    assert deployed.directory["charlie"]["placement"]["stack"] == "dev.pool-2"
    assert deployed.directory["charlie"]["placement"]["namespace"] == "pooled-2"

    # suspending a pooled tenant runs its pool shard only: no other shard, cell, identity or global stack
    engine.calls.clear()
    suspending.set_state(Context("dev", registry, engine), catalog, "charlie", resume=False)
    assert [c for c in engine.calls if c[0] == "up"] == [("up", "dev.pool-2")]
    after = rec.read(engine, "dev")
    assert after.catalog.tenant("charlie").state.value == "suspended"
    assert after.catalog.tenant("bravo") == deployed.catalog.tenant("bravo")
    # a namespace tenant: its own stack and its cell
    engine.calls.clear()
    suspending.set_state(Context("dev", registry, engine), catalog, "delta", resume=False)
    assert [c for c in engine.calls if c[0] == "up"] == [("up", "dev.delta"), ("up", "dev.cell-1")]
    assert rec.read(engine, "dev").directory["delta"]["state"] == "suspended"
    # a deploy keeps both suspended (held at the record) and places nobody elsewhere
    result = deploy.rollout(engine, catalog, "dev")
    assert "dev.charlie" not in {o.stack for o in result.outcomes}
    assert {p.tenant: p.kind for p in result.pending}["charlie"] == "state"
    again = rec.read(engine, "dev")
    assert again.catalog.placements == after.catalog.placements | {"delta": again.catalog.placements["delta"]}
    assert again.catalog.tenant("charlie").state.value == "suspended"
    assert {t.id: t.state for t in registry.tenants()} == {"charlie": "suspended", "delta": "suspended"}
    with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
        for dbname in names.values():
            c.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def _deployers_cover(stacks) -> None:
    """What each unit's and tenant's stack declares is what its scope's deployer has roles for: every Google Cloud
    resource type is a service of its scope (tenancy/operator/deployers.py), and every project role it grants in
    the platform project is one the deployer may grant."""
    from tenancy.operator import deployers as dep

    for s in stacks:
        kind = naming.stack_kind(s.name)[0]
        if kind == naming.ENV_STACK:
            continue
        scope = dep.SERVICES[naming.CELL_STACK if kind == naming.TENANT_STACK else kind]   # tenants: their cell's
        types = {r["type"] for r in s.resources if r["type"].startswith(("gcp:", "kubernetes:"))}
        uncovered = {t for t in types if not any(t.startswith(service) for service in scope)}
        assert not uncovered, f"{s.name}: its deployer has no role for {sorted(uncovered)}"
        granted = {r["inputs"]["role"] for r in s.resources if r["type"] == "gcp:projects/iAMMember:IAMMember"}
        assert granted <= set(dep.GRANTABLE_ROLES), s.name


def test_plan_of_a_cells_layout_environment(monkeypatch):
    from tenancy.plan import plan

    cells_config(monkeypatch, **{"tenancy:identityShards": "2"})
    catalog = parse_catalog(SMALL)
    full = plan(catalog, "dev", workers=1)
    assert [(s.name, s.kind) for s in full.stacks] == [
        ("dev", "platform"), ("dev.identity-1", "identity"), ("dev.identity-2", "identity"), ("dev.cell-1", "cell"),
        ("dev.pool-1", "pool"), ("dev.delta", "tenant"), ("dev.echo", "tenant")]
    assert full.mandatory_violations == 0
    # one namespace tenant: its stack only (the global stack, identity shards and its cell run for their outputs)
    assert [s.name for s in plan(catalog, "dev", tenants=["delta"], workers=1).stacks] == ["dev.delta"]
    # one pooled tenant: its pool shard
    assert [s.name for s in plan(catalog, "dev", tenants=["bravo"], workers=1).stacks] == ["dev.pool-1"]
    _deployers_cover(full.stacks)
    cell = next(s for s in full.stacks if s.name == "dev.cell-1")
    record = json.loads(cell.outputs["deployedRecord"])
    assert [t["id"] for t in record["catalog"]["tenants"]] == ["delta", "echo"]
    assert set(record["placements"]["echo"]) == {"cell", "identityShard"}      # dedicated: its home cell


def test_a_pooled_tenants_stores_are_its_pool_shards(monkeypatch, tmp_path):
    """What moves, exports and is deleted with a pooled tenant in pool-2 is pool-2's: its directory entry, and the
    stores a tier move or an offboard reads (tenancy/topology.pool_shard_of)."""
    from tenancy.lifecycle import record as rec
    from tenancy import topology
    from tenancy.stores.layout import stores_for

    cells_config(monkeypatch, **{"tenancy:poolShards": "2", "tenancy:poolShardCapacity": "1"})
    engine = OfflineEngine(tmp_path / "state", "dev")
    catalog = parse_catalog(SMALL)
    deploy.deploy(engine, catalog, "dev")
    deployed = rec.read(engine, "dev")
    assert topology.pool_shard_of("dev", deployed.catalog, "charlie") == "pool-2"
    assert topology.pool_shard_of("dev", deployed.catalog, "delta") is None
    stores = stores_for(deployed.catalog.tenant("charlie"), "dev", "tenancy-dev-482913", pool_shard="pool-2")
    assert (stores.bucket, stores.firestore_database, stores.namespace) == (
        "tenancy-dev-482913-dev-pool-2-uploads", "dev-pool-2", "pooled-2")
    assert deployed.directory["charlie"]["stores"] == stores.to_json()
    pool2 = json.loads(engine.outputs("dev.pool-2")["tenantDirectory"])
    assert list(pool2) == ["charlie"] and pool2["charlie"]["placement"]["database"] == "dev-pool-2-postgres"
    # moved to standard, charlie's platform share goes from pool-2 to a cell; nothing else is touched
    moved = rec.for_tenant(deployed, catalog, "charlie", plan="standard")
    assert topology.tenant_platform_stacks("dev", deployed.catalog, moved, "charlie") == ["dev.cell-1", "dev.pool-2"]
    gone = rec.for_tenant(deployed, catalog, "charlie", state="offboarded")
    shard = fleet_capacity.load("dev").identity_shard_of("charlie")
    assert topology.tenant_platform_stacks("dev", deployed.catalog, gone, "charlie") == ["dev", f"dev.{shard}", "dev.pool-2"]


def test_operator_stack_objects_of_a_cells_layout_wait_for_what_they_read(monkeypatch):
    from tenancy.catalog import load_catalog
    from tenancy.operator import schema
    from tenancy.operator.settings import OperatorSettings
    from tenancy.operator.stacks import fleet_objects
    from tests.conftest import ROOT

    cells_config(monkeypatch, env="prod", **{"tenancy:identityShards": "2"})
    sha = "0123456789abcdef0123456789abcdef01234567"
    objects = {o["metadata"]["annotations"]["tenancy.io/stack"]: o
               for o in fleet_objects(load_catalog(ROOT / "tenants.yaml"), OperatorSettings.load("prod"), sha)}
    assert list(objects)[:5] == ["prod", "prod.identity-1", "prod.identity-2", "prod.cell-1", "prod.pool-1"]
    for stack, obj in objects.items():
        assert schema.problems(obj) == [], stack
        assert obj["spec"]["destroyOnFinalize"] is False
    waits = {s: [p["name"] for p in o["spec"].get("prerequisites", [])] for s, o in objects.items()}
    assert waits["prod.identity-1"] == ["prod"]
    assert waits["prod.cell-1"] == ["prod", "prod-identity-1", "prod-identity-2"]
    assert waits["prod.pool-1"] == ["prod", "prod-identity-1", "prod-identity-2", "prod-cell-1"]
    namespace = next(s for s, o in objects.items() if o["metadata"]["labels"].get("tenancy.io/model") == "namespace")
    dedicated = next(s for s, o in objects.items() if o["metadata"]["labels"].get("tenancy.io/model") == "dedicated")
    assert waits[namespace] == ["prod", "prod-cell-1"] and waits[dedicated] == ["prod"]
    assert objects["prod.cell-1"]["metadata"]["labels"]["tenancy.io/stack-kind"] == "cell"
    # each unit runs as its own deployer, a namespace tenant as its cell's, a dedicated tenant (its own project) as its own
    runs_as = {s: o["spec"]["serviceAccountName"] for s, o in objects.items()}
    assert {s: runs_as[s] for s in list(objects)[:5]} == {
        "prod": "tenancy-deployer", "prod.identity-1": "deployer-identity-1", "prod.identity-2": "deployer-identity-2",
        "prod.cell-1": "deployer-cell-1", "prod.pool-1": "deployer-pool-1"}
    assert runs_as[namespace] == "deployer-cell-1" and runs_as[dedicated] == f"deployer-{dedicated.split('.')[1]}"
