"""Placement through the real platform program and the deployed record: it sticks across deploys, pins that
disagree are pending, `tenancy place` moves one tenant only and never leaves data behind; plan and PR comment."""

from __future__ import annotations

import dataclasses
import json

import pytest

from tenancy import cli, envconfig, prcomment, topology
from tenancy.catalog import load_catalog, parse_catalog
from tenancy.changes import changes_between
from tenancy.engine import OfflineEngine
from tenancy.fleet import capacity as fleet_capacity
from tenancy.operations import relocate
from tenancy.fleet.placement import PlacementError
from tenancy.lifecycle import Refused, deploy
from tenancy.lifecycle import record as rec
from tenancy.record_format import record_json
from tests.conftest import ROOT, stack_of, deployed_directory
from tests.sqlhelp import register, seed

BASE = """version: 1
tenants:
  - {id: bravo, name: Bravo, plan: free, admin_email: b@bravo.example}
  - {id: charlie, name: Charlie, plan: free, admin_email: c@charlie.example}
"""
WITH_ALPHA = BASE + "  - {id: alpha, name: Alpha, plan: free, admin_email: a@alpha.example}\n"


@pytest.fixture
def two_shards(monkeypatch):
    """The dev environment with two pool shards of two tenants each."""
    real = envconfig.load_stack_config
    monkeypatch.setattr(envconfig, "load_stack_config",
                        lambda env: {**real(env), "tenancy:poolShards": "2", "tenancy:poolShardCapacity": "2"})


def directory(engine) -> dict:
    return deployed_directory(engine)


def shards(engine) -> dict[str, str]:
    return {tid: e["placement"]["poolShard"] for tid, e in directory(engine).items()}


# The platform side of dev with two pool shards: its global stack, then its units, in the order they deploy.
PLATFORM = ["dev", "dev.identity-1", "dev.cell-1", "dev.pool-1", "dev.pool-2"]


def unit_record(engine, stack: str) -> dict:
    return json.loads(engine.outputs(stack)["deployedRecord"])


def test_deploys_keep_placed_tenants_where_the_record_says_whatever_tenants_yaml_says(two_shards, tmp_path):
    engine = OfflineEngine(tmp_path / "state", "dev")
    assert [(o.stack, o.status) for o in deploy.deploy(engine, parse_catalog(BASE), "dev")] == [
        (s, "ok") for s in PLATFORM]
    assert shards(engine) == {"bravo": "pool-1", "charlie": "pool-1"}
    # alpha sorts first: placed from scratch it would take pool-1 and push charlie to pool-2
    assert [(o.stack, o.status) for o in deploy.deploy(engine, parse_catalog(WITH_ALPHA), "dev")] == [
        (s, "ok") for s in PLATFORM]
    assert shards(engine) == {"alpha": "pool-2", "bravo": "pool-1", "charlie": "pool-1"}
    # each pool shard records the placements of its own tenants, the global stack and the cell none
    assert unit_record(engine, "dev.pool-1")["placements"] == {
        "bravo": {"identityShard": "identity-1", "poolShard": "pool-1"},
        "charlie": {"identityShard": "identity-1", "poolShard": "pool-1"}}
    assert unit_record(engine, "dev.pool-2")["placements"] == {"alpha": {"identityShard": "identity-1", "poolShard": "pool-2"}}
    assert unit_record(engine, "dev")["placements"] == {} and unit_record(engine, "dev.cell-1")["placements"] == {}
    assert rec.read(engine, "dev").catalog.placements == {
        "alpha": {"identityShard": "identity-1", "poolShard": "pool-2"},
        "bravo": {"identityShard": "identity-1", "poolShard": "pool-1"},
        "charlie": {"identityShard": "identity-1", "poolShard": "pool-1"}}
    entry = directory(engine)["alpha"]["placement"]
    assert entry["database"] == "dev-pool-2-postgres" and entry["prefix"] == "alpha/"
    # tenants.yaml reordered: nothing moves
    reordered = WITH_ALPHA.replace(BASE.split("\n", 2)[2], "") + BASE.split("\n", 2)[2]
    deploy.deploy(engine, parse_catalog(reordered), "dev")
    assert shards(engine) == {"alpha": "pool-2", "bravo": "pool-1", "charlie": "pool-1"}
    # a pin that disagrees with the deployment is pending, not applied
    pinned = parse_catalog(WITH_ALPHA.replace("admin_email: c@charlie.example}",
                                              "admin_email: c@charlie.example, placement: {pool_shard: pool-2}}"))
    result = deploy.rollout(engine, pinned, "dev")
    assert [(o.stack, o.status) for o in result.outcomes] == [(s, "ok") for s in PLATFORM], \
        "a pooled tenant is no stack of its own"
    assert [deploy.pending_line(p, "dev") for p in result.pending] == [
        "pending: tenant 'charlie' is pinned to pool-2 (placement.pool_shard) in tenants.yaml but deployed in pool-1; a "
        "deploy never moves a placed tenant; run: tenancy place charlie --pool-shard pool-2 --env dev"]
    assert shards(engine)["charlie"] == "pool-1"


def test_under_the_pulumi_cli_the_program_reads_the_deployed_placements_the_engine_hands_it(two_shards, tmp_path,
                                                                                           monkeypatch):
    import stacks
    from tenancy.envconfig import project_name
    from tenancy.recorder import ORGANIZATION, run_program

    (tmp_path / "tenants.yaml").write_text(WITH_ALPHA)
    (tmp_path / "placements.json").write_text(json.dumps({"alpha": {"poolShard": "pool-2"}}))
    # what a pool shard's StackReferences read: the global stack, the identity shard and cell 1, deployed
    engine = OfflineEngine(tmp_path / "state", "dev")
    for stack in PLATFORM[:3]:
        engine.up(stack, parse_catalog(WITH_ALPHA))
    refs = {}
    for stack in PLATFORM[:3]:
        state = json.loads((tmp_path / "state" / f"{stack}.json").read_text())
        refs[f"{ORGANIZATION}/{project_name()}/{stack}"] = (state["rawOutputs"], state["secretOutputs"])
    monkeypatch.setenv(stacks.CATALOG_ENV, str(tmp_path / "tenants.yaml"))
    monkeypatch.setenv(stacks.PLACEMENTS_ENV, str(tmp_path / "placements.json"))
    # placed from scratch alpha would take pool-1 (first by id) and charlie pool-2; the deployed placement keeps alpha
    # in pool-2, and each shard's program records its own tenants
    for stack, placed in (("dev.pool-1", {"bravo": "pool-1", "charlie": "pool-1"}), ("dev.pool-2", {"alpha": "pool-2"})):
        result = run_program(stacks._main_async, project=project_name(), stack=stack, config={}, stack_outputs=refs)
        assert json.loads(result.outputs["deployedRecord"])["placements"] == {
            t: {"identityShard": "identity-1", "poolShard": shard} for t, shard in placed.items()}, stack


def test_a_record_from_before_placement_puts_everyone_in_the_first_units(tmp_path):
    catalog = load_catalog(ROOT / "tenants.yaml")
    record = json.loads(record_json(catalog))
    del record["placements"]
    (tmp_path / "dev.json").write_text(json.dumps({"outputs": {"deployedRecord": json.dumps(record),
                                                               "gcpProject": "tenancy-dev-482913"}}))
    # such a record is a single platform stack's: refused until `tenancy migrate`, which reads it all the same
    with pytest.raises(rec.LayoutError, match=r"^environment 'dev' is deployed as one platform stack 'dev', the layout "
                                              r"of earlier versions: run `tenancy migrate --env dev` first"):
        rec.read(OfflineEngine(tmp_path, "dev"), "dev")
    deployed = rec.read(OfflineEngine(tmp_path, "dev"), "dev", one_platform_stack=True)
    assert deployed.catalog.placements["stark"] == {"cell": "cell-1", "dataProject": "tenancy-dev-482913"}
    assert deployed.catalog.placements["globex"] == {"poolShard": "pool-1"}
    assert "acme" not in deployed.catalog.placements and "cyberdyne" not in deployed.catalog.placements


def test_one_tenant_commands_carry_every_placement():
    placements = {"alpha": {"poolShard": "pool-2"}, "bravo": {"poolShard": "pool-1"}, "charlie": {"poolShard": "pool-1"}}
    deployed = rec.Deployed(dataclasses.replace(parse_catalog(WITH_ALPHA), placements=placements), {})
    suspended = rec.for_tenant(deployed, parse_catalog(WITH_ALPHA), "bravo", state="suspended")
    assert suspended.placements == placements and suspended.tenant("bravo").state.value == "suspended"
    moved = rec.for_tenant(deployed, parse_catalog(BASE), "alpha", placement={"poolShard": "pool-1"})
    assert dict(moved.placements) == {**placements, "alpha": {"poolShard": "pool-1"}}
    effective, pending = rec.for_deploy(parse_catalog(BASE), deployed)
    assert effective.placements == placements and [p.kind for p in pending] == ["removed"]


@pytest.mark.postgres
@pytest.fixture
def shard_dbs(pg_server, tenancy_db, registry):
    """pool-1 (bravo's and charlie's rows) and an empty pool-2, both recorded in the registry: no DSN is typed."""
    import uuid

    import psycopg

    from tenancy import db
    from tenancy.operations.stores import connection_record

    second = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{second}"')
    db.apply(pg_server.dsn(dbname=second))
    register(pg_server, tenancy_db, "bravo", "charlie")
    seed(pg_server, tenancy_db, "bravo", users=2)
    seed(pg_server, tenancy_db, "charlie", users=3)
    for name, dbname in (("pool-1", tenancy_db), ("pool-2", second)):
        registry.set_database(name, name, connection_record(pg_server.dsn(dbname=dbname)))
    yield {"pool-1": tenancy_db, "pool-2": second}
    with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{second}" WITH (FORCE)')


def test_place_moves_one_pooled_tenant_with_its_rows_found_through_the_registry(two_shards, tmp_path, pg_server,
                                                                                  shard_dbs, registry):
    from tenancy.lifecycle.tenant_data import Reach
    from tenancy.operations import place
    from tenancy.operations.protocol import Context
    from tests.test_lifecycle import TABLES, rows

    engine = OfflineEngine(tmp_path / "state", "dev")
    catalog = parse_catalog(WITH_ALPHA)
    deploy.deploy(engine, parse_catalog(BASE), "dev")
    deploy.deploy(engine, catalog, "dev")
    before = directory(engine)
    assert shards(engine) == {"alpha": "pool-2", "bravo": "pool-1", "charlie": "pool-1"}
    ctx = Context("dev", registry, engine)
    rows_only = Reach({}, skip=frozenset({"objects", "firestore"}))
    charlie = rows(pg_server, shard_dbs["pool-1"], "charlie")
    # a DSN override that reaches the wrong shard is refused before anything changes
    wrong = Reach({"pool-1": pg_server.dsn(dbname=shard_dbs["pool-2"])}, skip=rows_only.skip)
    with pytest.raises(Refused) as refused:
        place.place(ctx, catalog, "bravo", pool_shard="pool-2", reach=wrong)
    assert "pooled (source, pool-1, " in str(refused.value) and "does not hold tenant 'bravo'" in str(refused.value)
    assert "reach the same database" in str(refused.value) and str(refused.value).endswith("nothing was changed")
    with pytest.raises(PlacementError, match=r"^tenancy place: tenant 'charlie': placement.pool_shard: pool shard pool-2 "
                                             r"is full \(1 of 1 pooled tenants\); choose another pool shard"):
        place.place(ctx, catalog, "charlie", pool_shard="pool-2", reach=rows_only,
                    capacity=dataclasses.replace(fleet_capacity.load("dev"), pool_shard_capacity=1))
    assert directory(engine) == before, "refusals change nothing"
    assert registry.history("bravo") == [] and registry.history("charlie") == []
    out = place.place(ctx, catalog, "charlie", pool_shard="pool-2", reach=rows_only)
    assert (out.status, out.detail["from"], out.detail["to"]) == (
        "done", {"identityShard": "identity-1", "poolShard": "pool-1"}, {"identityShard": "identity-1", "poolShard": "pool-2"})
    assert rows(pg_server, shard_dbs["pool-2"], "charlie") == charlie, "every row of charlie moved"
    assert rows(pg_server, shard_dbs["pool-1"], "charlie") == {t: [] for t in TABLES}, "and none is left behind"
    assert rows(pg_server, shard_dbs["pool-1"], "bravo")["app.users"], "bravo untouched"
    after = directory(engine)
    assert after["charlie"]["placement"]["poolShard"] == "pool-2"
    assert after["charlie"]["placement"]["database"] == "dev-pool-2-postgres"
    assert {t: e for t, e in after.items() if t != "charlie"} == {t: e for t, e in before.items() if t != "charlie"}
    assert registry.tenant("charlie").stores["databases"] == {"pooled": "pool-2"}
    # the next deploy keeps it there
    deploy.deploy(engine, catalog, "dev")
    assert shards(engine) == {"alpha": "pool-2", "bravo": "pool-1", "charlie": "pool-2"}
    assert place.place(ctx, catalog, "charlie", pool_shard="pool-2", reach=rows_only).status == "nothing to do"


def test_place_refuses_cells_and_data_projects_of_a_namespace_tenant(monkeypatch, tmp_path):
    catalog = load_catalog(ROOT / "tenants.yaml")
    two_cells = dataclasses.replace(fleet_capacity.load("dev"), cells=2, data_projects=("tenancy-dev-482913", "data-proj-1"))
    deployer = OfflineEngine(tmp_path, "dev")
    for stack in topology.every_platform_stack("dev"):
        deployer.up(stack, catalog)
    engine = OfflineEngine(tmp_path, "dev")
    assert rec.read(engine, "dev").catalog.placements["stark"] == {
        "cell": "cell-1", "dataProject": "tenancy-dev-482913", "identityShard": "identity-1"}
    with pytest.raises(Refused, match=r"^tenant 'stark' runs in cell cell-1 \(cluster dev-shared\): its namespace "
                                      r"tenant-stark, workloads and the Neo4j volume are there, and moving them to cell-2 "
                                      r"means rebuilding its tenant stack in that cell's cluster, which this version does "
                                      r"not do; nothing was changed$"):
        relocate.resolve(catalog, rec.read(engine, "dev"), "dev", "stark", cell="cell-2", capacity=two_cells)
    with pytest.raises(Refused, match=r"^tenant 'stark' keeps its 3 Cloud SQL instance\(s\) in project tenancy-dev-482913; "
                                      r"moving them to data-proj-1 means new instances there and a data move"):
        relocate.resolve(catalog, rec.read(engine, "dev"), "dev", "stark", data_project="data-proj-1", capacity=two_cells)
    assert engine.calls == [], "nothing was deployed"


def test_place_command_line_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    state = tmp_path / "state"
    engine = OfflineEngine(state, "dev")
    deploy.deploy(engine, parse_catalog(BASE), "dev")
    capsys.readouterr()
    catalog = tmp_path / "tenants.yaml"
    catalog.write_text(WITH_ALPHA)
    base = ["place", "--tenants", str(catalog), "--engine", "offline", "--state", str(state)]
    cases = [
        (["bravo", "--cell", "cell-1"], "error: tenant 'bravo' is pooled (free): --cell does not apply; use --pool-shard"),
        (["bravo", "--pool-shard", "pool-3"], "error: tenancy place: tenant 'bravo': placement.pool_shard: pool-3 is not a "
                                              "pool shard of 'dev': stacks/Pulumi.dev.yaml declares pool-1 (tenancy:poolShards: "
                                              "1); use one of those or raise tenancy:poolShards"),
        (["alpha", "--pool-shard", "pool-1"], f"error: tenant 'alpha' has not been deployed in 'dev', so it is not placed yet: "
                                              f"pin it in {catalog} instead (placement: {{pool_shard: pool-1}}) and deploy"),
        (["bravo"], "error: give the unit to move the tenant to: --cell, --pool-shard or --data-project"),
    ]
    for args, message in cases:
        assert cli.main([*base, *args]) == 2, args
        assert capsys.readouterr().err.strip() == message
    assert cli.main([*base, "bravo", "--pool-shard", "pool-1"]) == 0
    assert capsys.readouterr().out.strip() == "tenant 'bravo' is already in pool-1; nothing to do"


# ------------------------------------------------------------------------------------- plan and PR comment

def test_plan_shows_each_stacks_placement_and_the_load(sample_plan):
    result, data, _ = sample_plan
    assert stack_of(data, "dev.stark")["placement"] == {"cell": "cell-1", "dataProject": "tenancy-dev-482913",
                                                        "identityShard": "identity-1", "cluster": "dev-shared",
                                                        "decided": "placed"}
    # a dedicated tenant takes a place in its home cell (its directory entry), but runs in its own cluster
    assert stack_of(data, "dev.acme")["placement"] == {"cell": "cell-1", "identityShard": "identity-1",
                                                       "cluster": "dev-acme", "decided": "placed"}
    platform = stack_of(data, "dev")["placement"]
    assert platform["pooled"] == {t: {"poolShard": "pool-1", "identityShard": "identity-1"}
                                  for t in ("globex", "hooli", "initech", "vandelay")}
    assert {u["unit"]: (u["used"], u["capacity"]) for u in platform["units"]} == {
        "cell-1": (5, 300), "pool-1": (4, 1000), "tenancy-dev-482913": (10, 1000)}
    from tenancy import plan as planmod
    lines = planmod.summary(result).splitlines()
    start = lines.index("placement (capacity: stacks/Pulumi.dev.yaml):")
    assert lines[start + 1:start + 13] == [
        "  dev.pied-piper   cell cell-1 (cluster dev-shared), Cloud SQL in tenancy-dev-482913",
        "  dev.stark        cell cell-1 (cluster dev-shared), Cloud SQL in tenancy-dev-482913",
        "  dev.wayne        cell cell-1 (cluster dev-shared), Cloud SQL in tenancy-dev-482913",
        "  dev.acme         own cluster dev-acme in acme-tenancy-prod",
        "  dev.cyberdyne    own cluster dev-cyberdyne in cyberdyne-saas",
        "  pooled globex    pool shard pool-1 (instance dev-pooled-postgres)",
        "  pooled hooli     pool shard pool-1 (instance dev-pooled-postgres)",
        "  pooled initech   pool shard pool-1 (instance dev-pooled-postgres)",
        "  pooled vandelay  pool shard pool-1 (instance dev-pooled-postgres)",
        "  cells: 5 of 300 tenants used in 1 (cell-1 5/300)",
        "  pool shards: 4 of 1,000 pooled tenants used in 1 (pool-1 4/1,000)",
        "  data projects: 10 of 1,000 Cloud SQL instances used in 1 (tenancy-dev-482913 10/1,000)",
    ]


def test_a_full_environment_stops_the_plan_with_the_capacity_to_add(monkeypatch):
    from tenancy import plan as planmod

    real = envconfig.load_stack_config
    # cell-1 is home to five tenants: the two dedicated ones take their places too, so a cell of four leaves wayne out
    monkeypatch.setattr(envconfig, "load_stack_config", lambda env: {**real(env), "tenancy:cellCapacity": "4"})
    with pytest.raises(PlacementError, match=r"^environment 'dev' is full: 1 new tenant\(s\) need a cell \(wayne\), and "
                                             r"cell-1 holds 4 of 4 tenants\. Add capacity in stacks/Pulumi\.dev\.yaml: raise "
                                             r"tenancy:cells from 1 to 2 \(each cell holds tenancy:cellCapacity = 4 "
                                             r"tenants\), or raise tenancy:cellCapacity$"):
        planmod.plan(load_catalog(ROOT / "tenants.yaml"), "dev", tenants=["stark"], workers=1)


def test_pr_comment_says_where_affected_tenants_go_and_when_placement_is_refused(monkeypatch):
    base = load_catalog(ROOT / "tenants.yaml")
    head = parse_catalog((ROOT / "tenants.yaml").read_text() + "\n  - {id: newco, name: NewCo, plan: standard, "
                         "admin_email: a@newco.example, placement: {cell: cell-1}}\n")
    changes = changes_between(base, head, "dev")
    # its identity tenant, its directory entry in its cell and its own stack; nothing in the global stack or the pool
    assert changes.reasons == {"dev.cell-1": ["tenant added: newco"], "dev.identity-1": ["tenant added: newco"],
                               "dev.newco": ["tenant added"]}
    from tenancy.fleet.placement import place
    placed = place(head, fleet_capacity.load("dev"))
    md = prcomment.render(base, head, changes, "dev", placement=placed)
    assert ("| `newco` | cell cell-1 (cluster dev-shared), Cloud SQL in tenancy-dev-482913 | pinned in tenants.yaml |"
            in md.splitlines())
    assert 'subgraph cell_1["namespace: cell cell-1 (cluster dev-shared)"]' in md
    refused = prcomment.render(base, head, changes, "dev", placement_refused="environment 'dev' is full: ...\nsecond")
    assert "**Placement refused** — this change cannot be deployed as it is:" in refused
    assert "- environment 'dev' is full: ..." in refused.splitlines() and "- second" in refused.splitlines()
    # a pin that changes is a change of the cells it moves the new tenant between (each holds its directory entry),
    # and of its own stack, which reads its cell
    from tests.test_cells import cells_config

    cells_config(monkeypatch, **{"tenancy:cells": "2"})
    repinned = parse_catalog((ROOT / "tenants.yaml").read_text() + "\n  - {id: newco, name: NewCo, plan: standard, "
                             "admin_email: a@newco.example, placement: {cell: cell-2}}\n")
    assert changes_between(head, repinned, "dev").reasons == {"dev.cell-1": ["tenant newco changed: placement"],
                                                              "dev.cell-2": ["tenant newco changed: placement"],
                                                              "dev.newco": ["cell changed: cell-1 → cell-2"]}


def test_plan_and_pr_comment_read_a_saved_deployed_record(tmp_path, capsys):
    catalog = load_catalog(ROOT / "tenants.yaml")
    record = tmp_path / "record.json"
    # as `pulumi stack output deployedRecord --json` prints it: a JSON string holding the record
    record.write_text(json.dumps(record_json(catalog, {"stark": {"cell": "cell-1", "dataProject": "tenancy-dev-482913"}})))
    out = tmp_path / "plan"
    assert cli.main(["plan", "--tenant", "stark", "--out", str(out), "--deployed-record", str(record)]) == 0
    assert "  dev.stark  cell cell-1 (cluster dev-shared), Cloud SQL in tenancy-dev-482913  [deployed]" in \
        capsys.readouterr().out.splitlines()
    assert stack_of(json.loads((out / "plan.json").read_text()), "dev.stark")["placement"]["decided"] == "deployed"
    bad = tmp_path / "bad.json"
    bad.write_text('{"catalog": {}, "placements": ["stark"]}')
    for path, message in ((bad, f"error: {bad}: its placements are not {{tenant: {{cell, poolShard, dataProject}}}}"),
                          (tmp_path / "none.json", f"error: {tmp_path / 'none.json'}: No such file or directory; save it "
                                                   f"with `pulumi stack output deployedRecord -s <env> > "
                                                   f"{tmp_path / 'none.json'}`")):
        assert cli.main(["pr-comment", "--base-catalog", str(ROOT / "tenants.yaml"), "--deployed-record", str(path)]) == 2
        assert capsys.readouterr().err.strip() == message
