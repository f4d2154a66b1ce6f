"""Tier moves in the delivery workflow: the reviewed decisions file (moves.yaml) and the steps `tenancy moves --plan`
gives the deploy job, from a real offline deployment of the committed catalogue and a real registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tenancy import delivery
from tenancy.catalog import load_catalog, parse_catalog
from tenancy.errors import CatalogError
from tenancy.lifecycle import record as rec
from tests.conftest import ROOT

STAMP = "20250131T120000Z"


def run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "tenancy", *args], capture_output=True, text=True, cwd=cwd)


def head_catalog_text() -> str:
    """The committed catalogue asking for three tier moves: pied-piper standard → free (a downgrade with a graph, its
    databases in europe-west4), globex free → standard (an upgrade), cyberdyne enterprise → premium (a downgrade the
    committed moves.yaml decides nothing for)."""
    text = (ROOT / "tenants.yaml").read_text()
    for old, new in (
            ("  - id: pied-piper\n    name: Pied Piper\n    plan: standard", "  - id: pied-piper\n    name: Pied Piper\n    plan: free"),
            ("    limits:\n      cpu: 8\n      memory_gb: 16\n", ""),
            ("  - id: globex\n    name: Globex Corporation\n    plan: free", "  - id: globex\n    name: Globex Corporation\n    plan: standard"),
            ("  - id: cyberdyne\n    name: Cyberdyne Systems\n    plan: enterprise",
             "  - id: cyberdyne\n    name: Cyberdyne Systems\n    plan: premium"),
            ("    dedicated:\n      project:\n        id: cyberdyne-saas            # an existing project the tenant provides\n"
             "      private_endpoint: true\n", "")):
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def write_moves(tmp_path: Path, text: str, name: str = "moves.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ------------------------------------------------------------------------------------------------- the file

def test_the_committed_moves_file_loads_and_fits_the_catalogue():
    moves = delivery.load(ROOT / "moves.yaml")
    moves.check(load_catalog(ROOT / "tenants.yaml"))
    assert moves.spec.export_to == "gs://saas-example-tenancy-archive-{env}/tier-moves"
    assert [(e.from_plan, e.to, e.discard) for e in moves.spec.moves] == [
        ("standard", "free", ("postgres-2", "postgres-3", "graph")),
        ("standard", "basic", ("postgres-2", "postgres-3", "graph")),
        ("standard", "premium", ("postgres-2", "graph"))]
    assert all(e.keep_source == 7 and e.method == "auto" and e.dump_graph for e in moves.spec.moves)


BAD_FILES = [
    ("version: 1\nexport_to: /var/archive\n", [
        "moves.yaml:2: export_to: '/var/archive' is not a gs:// destination; a CI runner's disk does not outlive the job: "
        "give the archive bucket, e.g. gs://acme-tenancy-archive/tier-moves"]),
    ("version: 1\nmoves:\n  - from: standard\n    to: free\n    export_to: gs://A_B/x\n", [
        "moves.yaml:5: moves.0.export_to: 'gs://A_B/x': 'A_B' is not a bucket name (3-63 lowercase letters, digits, "
        "'-', '_' or '.')"]),
    ("version: 1\nmoves:\n  - {from: standard, to: free, export_to: 'gs://ok-bucket/a/../b'}\n", [
        "moves.yaml:3: moves.0.export_to: 'gs://ok-bucket/a/../b': the prefix may hold letters, digits, '.', '_', '-', "
        "'=' and {env} between single slashes"]),
    ("version: 1\nexport_to: gs://ok-bucket/{tenant}\n", [
        "moves.yaml:2: export_to: 'gs://ok-bucket/{tenant}': {env} is the only placeholder"]),
    ("version: 1\nmoves:\n  - {from: standard, to: free, discard: [postgres-2, neo4j]}\n", [
        "moves.yaml:3: moves.0.discard: neo4j: not a store; use postgres-1, postgres-2, postgres-3, objects, firestore, "
        "graph"]),
    ("version: 1\nmoves:\n  - {to: free}\n  - {tenant: stark, from: standard, to: free}\n", [
        "moves.yaml:3: moves.0: give either `tenant` (one tenant's move) or `from` (every move from that plan), with `to`",
        "moves.yaml:4: moves.1: give either `tenant` (one tenant's move) or `from` (every move from that plan), with `to`"]),
    ("version: 1\nmoves:\n  - from: standard\n    to: free\n    keep: 7\n    keep_source: -1\n", [
        "moves.yaml:6: moves.0.keep_source: Input should be greater than or equal to 0",
        "moves.yaml:5: moves.0.keep: unknown key; an entry has tenant, from, to, export_to, discard, keep_source, method, "
        "dump_graph"]),
    ("version: 1\nmoves:\n  - {from: standard, to: free, method: fast}\n", [
        "moves.yaml:3: moves.0.method: Input should be 'auto', 'online' or 'copy'"]),
    ("moves: []\n", ["moves.yaml:1: version: Field required"]),
    ("version: 1\narchive: gs://x-y-z\n", ["moves.yaml:2: archive: unknown key; the file has version, export_to and "
                                            "moves"]),
    ("version: 1\nmoves:\n  - {from: standard, to: free}\n  from: x\n", None),   # a YAML syntax error
    ("version: 1\nversion: 1\n", ["moves.yaml:2: (syntax): YAML: duplicate key 'version' (first at line 1); keep one; "
                                  "fix the YAML at this line"]),
    ("- one\n", ["moves.yaml:1: (file): expected a mapping with `version: 1` and `moves:`"]),
]


@pytest.mark.parametrize("text,expected", BAD_FILES)
def test_a_bad_moves_file_is_refused_with_its_line(tmp_path, text, expected):
    """One line per problem, file:line first; the command exits 2 without a traceback and plans nothing."""
    path = write_moves(tmp_path, text)
    with pytest.raises(CatalogError) as exc:
        delivery.load(path)
    lines = [str(p).replace(str(path), "moves.yaml") for p in exc.value.problems]
    if expected is None:
        assert len(lines) == 1 and lines[0].startswith("moves.yaml:4: (syntax): YAML: ") and "fix the YAML" in lines[0]
    else:
        assert lines == expected
    res = run_cli("moves", "--plan", str(path), "--base-catalog", str(ROOT / "tenants.yaml"))
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.splitlines()[:len(lines)] == [str(p) for p in exc.value.problems]
    assert "Traceback" not in res.stderr


def test_entries_are_checked_against_the_catalogue(tmp_path):
    path = write_moves(tmp_path, "version: 1\nmoves:\n"
                       "  - {from: standard, to: free, discard: [graph]}\n"
                       "  - {from: standard, to: free}\n"
                       "  - {tenant: starc, to: free}\n"
                       "  - {from: standard, to: gold}\n"
                       "  - {from: standard, to: enterprise}\n"
                       "  - {from: free, to: standard, discard: [postgres-2]}\n")
    with pytest.raises(CatalogError) as exc:
        delivery.load(path).check(load_catalog(ROOT / "tenants.yaml"))
    assert [str(p).replace(str(path), "moves.yaml") for p in exc.value.problems] == [
        "moves.yaml:4: moves[1] standard → free: moves: a second entry for the same move (first at line 3); keep one",
        "moves.yaml:5: moves[2] tenant 'starc': tenant: 'starc' is not in tenants.yaml; remove the entry or fix the id",
        "moves.yaml:6: moves[3] standard → gold: to: 'gold' is not a plan (basic, enterprise, free, premium, standard)",
        "moves.yaml:7: moves[4] standard → enterprise: to: standard → enterprise is not a tier move (namespace → "
        "dedicated): tier moves go into or out of the pool",
        "moves.yaml:8: moves[5] free → standard: discard: a move to 'standard' (namespace) takes every store with it and "
        "lets nothing go; remove `discard`"]


def test_a_missing_moves_file_says_where_to_create_it(tmp_path):
    res = run_cli("moves", "--plan", str(tmp_path / "moves.yaml"), "--base-catalog", str(ROOT / "tenants.yaml"))
    assert res.returncode == 2
    assert res.stderr.splitlines()[0] == (f"{tmp_path / 'moves.yaml'}: (file): not found; create it beside tenants.yaml "
                                          "(README, CI and delivery) with `version: 1`")


def test_what_a_downgrade_must_let_go_comes_from_the_data_layout():
    """stores.yaml: the pool holds users, itineraries, comments and likes for every pooled plan here, API requests
    only with api-access (premium); audit events never; the graph never."""
    from tenancy.stores.layout import stores_for

    catalog = load_catalog(ROOT / "tenants.yaml")
    stark = catalog.tenant("stark")
    own = stores_for(stark, "dev", "p")

    def pooled(plan):
        return stores_for(parse_catalog((ROOT / "tenants.yaml").read_text().replace(
            "  - id: globex\n    name: Globex Corporation\n    plan: free",
            f"  - id: globex\n    name: Globex Corporation\n    plan: {plan}")).tenant("globex"), "dev", "p")

    assert delivery.required_discards(own, pooled("free")) == ["graph", "postgres-2", "postgres-3"]
    assert delivery.required_discards(own, pooled("basic")) == ["graph", "postgres-2", "postgres-3"]
    assert delivery.required_discards(own, pooled("premium")) == ["graph", "postgres-2"]
    assert delivery.required_discards(pooled("free"), own) == [], "an upgrade lets nothing go"


# ------------------------------------------------------------------------------------------------ the steps

@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """The committed catalogue deployed offline (platform and tenant stacks), once for this module."""
    from tenancy.engine import OfflineEngine
    from tenancy.lifecycle import deploy

    state = tmp_path_factory.mktemp("deployed")
    engine = OfflineEngine(state, "dev")
    outcomes = deploy.deploy(engine, load_catalog(ROOT / "tenants.yaml"), "dev", mode="up")
    assert {o.status for o in outcomes} == {"ok"}, [(o.stack, o.status, o.message) for o in outcomes]
    return state


@pytest.fixture
def env(deployment, registry, tmp_path):
    """The deployment, its registry synced from it (every database's Cloud SQL instance), and a head catalogue."""
    from tenancy.engine import OfflineEngine
    from tenancy.operations.sync import sync

    engine = OfflineEngine(deployment, "dev")
    sync(registry, rec.read(engine, "dev"), "dev", engine)
    head = tmp_path / "tenants.yaml"
    head.write_text(head_catalog_text())
    return {"engine": engine, "registry": registry, "head": head, "state": deployment}


def facts_of(env, tenants_path="tenants.yaml"):
    engine, registry = env["engine"], env["registry"]
    return delivery.Facts("dev", rec.read(engine, "dev"), engine.outputs("dev")["region"],
                          delivery.registry_databases(registry), registry.unfinished(), tenants_path)


PROJECT = "tenancy-dev-482913"
POOL = f"{PROJECT}:europe-west1:dev-pooled-postgres"


def test_each_pending_tier_move_becomes_one_command_with_its_decisions(env):
    steps = delivery.steps(load_catalog(env["head"]), delivery.load(ROOT / "moves.yaml"), facts_of(env), STAMP)
    by = {s.tenant: s for s in steps}
    assert [s.tenant for s in steps] == ["globex", "pied-piper", "cyberdyne"], "the catalogue's order"

    down = by["pied-piper"]
    assert (down.kind, down.status, down.transition) == ("move", "run", "standard → free")
    assert down.entry == f"{ROOT / 'moves.yaml'}:21"
    assert down.argv == [
        "upgrade", "pied-piper", "--to", "free", "--env", "dev", "--keep-source", "7", "--method", "auto",
        "--export-to", f"gs://saas-example-tenancy-archive-dev/tier-moves/pied-piper/standard-to-free-{STAMP}",
        "--discard", "graph", "--discard", "postgres-2", "--discard", "postgres-3",
        "--kubeconfig", ".tenancy/kube/dev-shared.yaml"]
    # its databases live in its own region; the pool's where the platform is; the graph runs in the shared cluster
    assert down.instances == sorted([POOL, *(f"{PROJECT}:europe-west4:dev-pied-piper-postgres-{i}" for i in (1, 2, 3))])
    assert down.cluster == {"name": "dev-shared", "location": "europe-west1", "project": PROJECT,
                            "kubeconfig": ".tenancy/kube/dev-shared.yaml"}

    up = by["globex"]
    assert (up.status, up.entry) == ("run", None)
    assert up.argv == ["upgrade", "globex", "--to", "standard", "--env", "dev", "--keep-source", "7", "--method", "auto"]
    assert up.instances == [POOL], "the pool only: the tenant's own databases are made by the move"
    assert up.cluster is None

    refused = by["cyberdyne"]
    assert (refused.status, refused.argv, refused.instances) == ("failed", [], [])
    assert refused.message == (
        "tenant 'cyberdyne': the downgrade enterprise → premium needs discard: [graph, postgres-2], which "
        f"{ROOT / 'moves.yaml'} does not decide; nothing was changed. Add under `moves:` (a reviewed decision to let "
        "these go, archived first): - {from: enterprise, to: premium, discard: [graph, postgres-2]}")


def test_a_tenant_entry_wins_whole_and_a_dedicated_graph_runs_in_its_own_cluster(env, tmp_path):
    moves = write_moves(tmp_path, "version: 1\n"
                        "moves:\n"
                        "  - {from: enterprise, to: premium, discard: [postgres-2], export_to: gs://never-used/x}\n"
                        "  - tenant: cyberdyne\n"
                        "    to: premium\n"
                        "    export_to: gs://cyberdyne-exit-archive/{env}\n"
                        "    discard: [graph, postgres-2, postgres-3]\n"
                        "    keep_source: 30\n"
                        "    method: copy\n")
    [s] = [s for s in delivery.steps(load_catalog(env["head"]), delivery.load(moves), facts_of(env), STAMP)
           if s.tenant == "cyberdyne"]
    assert (s.status, s.entry) == ("run", f"{moves}:4")
    assert s.argv == [
        "upgrade", "cyberdyne", "--to", "premium", "--env", "dev", "--keep-source", "30", "--method", "copy",
        "--export-to", f"gs://cyberdyne-exit-archive/dev/cyberdyne/enterprise-to-premium-{STAMP}",
        "--discard", "graph", "--discard", "postgres-2", "--discard", "postgres-3",
        "--kubeconfig", ".tenancy/kube/dev-cyberdyne.yaml"]
    assert s.cluster == {"name": "dev-cyberdyne", "location": "europe-west1", "project": "cyberdyne-saas",
                         "kubeconfig": ".tenancy/kube/dev-cyberdyne.yaml"}
    assert s.instances == sorted([POOL, *(f"cyberdyne-saas:europe-west1:dev-cyberdyne-postgres-{i}" for i in (1, 2, 3))])


def test_a_decision_that_falls_short_names_its_entry_and_what_to_add(env, tmp_path):
    moves = write_moves(tmp_path, "version: 1\nmoves:\n  - {from: standard, to: free, discard: [graph]}\n"
                        "  - {tenant: cyberdyne, to: premium, dump_graph: false, discard: [graph, postgres-2]}\n")
    steps = {s.tenant: s for s in delivery.steps(load_catalog(env["head"]), delivery.load(moves), facts_of(env), STAMP)}
    assert steps["pied-piper"].status == "failed"
    assert steps["pied-piper"].message == (
        f"tenant 'pied-piper': the downgrade standard → free needs an archive (export_to) and discard: [postgres-2, "
        f"postgres-3], which {moves} does not decide; nothing was changed. Make the entry at {moves}:3: - {{from: "
        "standard, to: free, export_to: gs://ARCHIVE-BUCKET/tier-moves, discard: [graph, postgres-2, postgres-3]}")
    assert steps["cyberdyne"].status == "failed"
    assert steps["cyberdyne"].message.endswith(
        f"Make the entry at {moves}:4: - {{tenant: cyberdyne, to: premium, export_to: gs://ARCHIVE-BUCKET/tier-moves, "
        "discard: [graph, postgres-2]}")


def test_a_graph_let_go_without_a_dump_needs_no_cluster(env, tmp_path):
    moves = write_moves(tmp_path, "version: 1\nexport_to: gs://archive-bucket\nmoves:\n"
                        "  - {from: standard, to: free, discard: [postgres-2, postgres-3, graph], dump_graph: false}\n")
    [s] = [s for s in delivery.steps(load_catalog(env["head"]), delivery.load(moves), facts_of(env), STAMP)
           if s.tenant == "pied-piper"]
    assert s.status == "run" and s.cluster is None and "--kubeconfig" not in s.argv
    assert s.argv[s.argv.index("--export-to") + 1] == f"gs://archive-bucket/pied-piper/standard-to-free-{STAMP}"


def unfinished(registry, kind, tenant, args, command, abort=None):
    """An operation that started and stopped (its process killed): unfinished, its lease free to resume."""
    from tenancy.operations.lease import Lease, Spec

    lease = Lease.take(registry, Spec(kind, tenant, args, command, abort,
                                      settings={"from_plan": "standard", "to_plan": args.get("to_plan")}))
    lease.pause("running", "killed")
    lease._close()
    return lease.op_id


def test_unfinished_operations_are_resumed_first_and_never_two_commands_for_a_tenant(env):
    registry = env["registry"]
    killed = unfinished(registry, "downgrade", "pied-piper", {"to_plan": "free"},
                        "tenancy upgrade pied-piper --to free --env dev --export-to gs://old-archive/pp/1 "
                        "--discard graph,postgres-2,postgres-3 --kubeconfig /home/op/.kube/config",
                        "tenancy upgrade pied-piper --to free --env dev --abort")
    suspending = unfinished(registry, "suspend", "globex", {}, "tenancy suspend --env dev globex")
    laptop = unfinished(registry, "offboard", "wayne", {}, "tenancy offboard wayne --env dev --export-to ./exports/wayne",
                        "tenancy offboard wayne --env dev --abort")
    dsn = unfinished(registry, "place", "hooli", {"to": {"poolShard": "pool-2"}},
                     "tenancy place hooli --pool-shard pool-2 --db pool-2=***")
    rows = unfinished(registry, "data-move", "initech", {"tables": []},
                      "tenancy data move initech --source '***' --target '***'")
    steps = delivery.steps(load_catalog(env["head"]), delivery.load(ROOT / "moves.yaml"), facts_of(env), STAMP)
    assert [(s.tenant, s.kind, s.status) for s in steps] == [
        ("pied-piper", "resume", "run"), ("globex", "resume", "run"), ("wayne", "resume", "left"),
        ("hooli", "resume", "left"), ("initech", "resume", "left"), ("globex", "move", "left"),
        ("cyberdyne", "move", "failed")]
    resume = steps[0]
    assert resume.operation == killed and resume.transition == "standard → free"
    # the recorded command, with this job's credentials for the graph's cluster in place of the operator's file
    assert resume.argv == ["upgrade", "pied-piper", "--to", "free", "--env", "dev", "--export-to", "gs://old-archive/pp/1",
                           "--discard", "graph,postgres-2,postgres-3", "--kubeconfig", ".tenancy/kube/dev-shared.yaml"]
    assert resume.cluster["name"] == "dev-shared" and POOL in resume.instances
    assert steps[1].argv == ["suspend", "--env", "dev", "globex"] and steps[1].operation == suspending
    assert steps[2].operation == laptop and steps[2].message == (
        f"offboard of 'wayne' ({laptop}, running) is not the deploy job's to resume (started with --export-to "
        "./exports/wayne, not a gs:// archive); resume it where it started: `tenancy offboard wayne --env dev "
        "--export-to ./exports/wayne`, or abort it: `tenancy offboard wayne --env dev --abort`")
    assert steps[3].operation == dsn and f"({dsn}, running) is not the deploy job's to resume (started with --db)" \
        in steps[3].message
    assert steps[4].operation == rows and steps[4].message == (
        f"data-move of 'initech' ({rows}, running) is not the deploy job's to resume (recorded as `tenancy data "
        "move`); resume it where it started: `tenancy data move initech --source '***' --target '***'`")
    assert steps[5].message == (f"tenant 'globex' has an unfinished suspend ({suspending}); its move to 'standard' runs "
                                "at a deploy after that operation is done")
    assert all(not set(s.argv) & set(delivery.NOT_IN_CI) for s in steps)


def test_the_command_line_prints_the_steps_and_fails_on_a_refused_item(env, tmp_path):
    from tests.conftest import ROOT as root

    args = ["moves", "--env", "dev", "--tenants", str(env["head"]), "--plan", str(root / "moves.yaml"),
            "--engine", "offline", "--state", str(env["state"]), "--registry", env["registry"].dsn,
            "--archive-stamp", STAMP]
    res = run_cli(*args)
    assert res.returncode == 1, res.stderr
    data = json.loads(res.stdout)
    assert data["environment"] == "dev" and data["archive_stamp"] == STAMP
    assert [(s["tenant"], s["status"]) for s in data["steps"]] == [
        ("globex", "run"), ("pied-piper", "run"), ("cyberdyne", "failed")]
    assert data["steps"][1]["command"] == (
        f"tenancy upgrade pied-piper --to free --env dev --tenants {env['head']} --keep-source 7 --method auto "
        f"--export-to gs://saas-example-tenancy-archive-dev/tier-moves/pied-piper/standard-to-free-{STAMP} "
        "--discard graph --discard postgres-2 --discard postgres-3 --kubeconfig .tenancy/kube/dev-shared.yaml")
    assert res.stderr.splitlines() == [f"refused: {data['steps'][2]['message']}"]
    # A registry out of reach (the Auth Proxy's socket is not there): one line, no traceback, nothing run.
    sockets = tempfile.mkdtemp(prefix="sq", dir="/tmp")     # short: a socket's path has at most 107 bytes
    res = subprocess.run([sys.executable, "-m", "tenancy", *[a for a in args if a not in ("--registry", env["registry"].dsn)]],
                         capture_output=True, text=True, cwd=ROOT, env={**os.environ, "TENANCY_CLOUDSQL_DIR": sockets})
    os.rmdir(sockets)
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.startswith(f"error: cannot reach the registry 'host={sockets}/{PROJECT}:europe-west1:dev-registry "
                                 "dbname=app'") and res.stderr.count("\n") == 1


def test_without_a_registry_every_item_is_refused(env, monkeypatch, capsys):
    """A deployment whose global stack exports no registry yet (deployed before it existed): no operation can take
    a tenant's lease, so nothing is offered to run."""
    from tenancy import cli
    from tenancy.cli import common

    monkeypatch.setattr(common, "registry_from_outputs", lambda engine, e: None)
    monkeypatch.delenv("TENANCY_REGISTRY", raising=False)
    code = cli.main(["moves", "--env", "dev", "--tenants", str(env["head"]), "--plan", str(ROOT / "moves.yaml"),
                     "--engine", "offline", "--state", str(env["state"]), "--archive-stamp", STAMP])
    out, err = capsys.readouterr()
    assert code == 1
    data = json.loads(out)
    assert [s["status"] for s in data["steps"]] == ["failed"] * 3
    assert data["steps"][0]["message"] == (
        f"free → standard (an upgrade: every store moves; no entry in {ROOT / 'moves.yaml'}, defaults apply); but the "
        "environment's registry is not reachable (no --registry, no TENANCY_REGISTRY, no `registry` output of the global "
        "stack): every operation takes the tenant's lease there")
    assert len(err.splitlines()) == 3


def test_the_plan_options_need_a_moves_file():
    bad = run_cli("moves", "--plan", str(ROOT / "moves.yaml"), "--archive-stamp", "a/b")
    assert bad.returncode == 2 and bad.stderr.strip() == ("error: --archive-stamp 'a/b': up to 40 letters, digits, '.', "
                                                          "'_' or '-'")
    assert run_cli("moves", "--base-catalog", "x.yaml").stderr.strip() == \
        "error: --base-catalog and --archive-stamp go with --plan FILE (the moves file)"


def test_a_pull_request_sees_each_move_its_decision_and_command_offline(env):
    res = run_cli("moves", "--env", "prod", "--tenants", str(env["head"]), "--plan", str(ROOT / "moves.yaml"),
                  "--base-catalog", str(ROOT / "tenants.yaml"), "--archive-stamp", STAMP)
    assert res.returncode == 1
    steps = json.loads(res.stdout)["steps"]
    assert [(s["tenant"], s["transition"], s["status"]) for s in steps] == [
        ("globex", "free → standard", "run"), ("pied-piper", "standard → free", "run"),
        ("cyberdyne", "enterprise → premium", "failed")]
    assert steps[1]["command"].endswith(
        f"--export-to gs://saas-example-tenancy-archive-prod/tier-moves/pied-piper/standard-to-free-{STAMP} --discard "
        "graph --discard postgres-2 --discard postgres-3 --kubeconfig .tenancy/kube/CLUSTER.yaml")
    assert steps[1]["instances"] == [] and steps[1]["entry"] == f"{ROOT / 'moves.yaml'}:21"


def test_every_downgrade_runs_with_an_archive_or_not_at_all(env):
    """Whatever the catalogue asks, a downgrade the job runs carries a gs:// archive and lets go only of stores
    moves.yaml names; one it cannot decide is refused before anything changes."""
    catalog = load_catalog(ROOT / "tenants.yaml")
    own = [t for t in catalog.tenants if t.has_stack]
    pooled_plans = [n for n, p in catalog.plans.items() if p.model.value == "pooled"]
    text = (ROOT / "tenants.yaml").read_text()
    checked = 0
    for t in own:
        for plan in pooled_plans:
            head = parse_catalog(_downgraded(text, t.id, plan), str(env["head"]))
            [s] = [s for s in delivery.steps(head, delivery.load(ROOT / "moves.yaml"), facts_of(env), STAMP)
                   if s.tenant == t.id]
            if s.status == "run":
                archive = s.argv[s.argv.index("--export-to") + 1]
                assert archive.startswith("gs://saas-example-tenancy-archive-dev/tier-moves/"), s.argv
                assert "graph" not in " ".join(s.argv) or "--kubeconfig" in s.argv
            else:
                assert s.status == "failed" and "nothing was changed" in s.message and s.argv == []
            checked += 1
    assert checked == len(own) * len(pooled_plans) >= 9


def _downgraded(text: str, tenant: str, plan: str) -> str:
    import yaml

    doc = yaml.safe_load(text)
    for t in doc["tenants"]:
        if t["id"] == tenant:
            t["plan"] = plan
            for key in ("limits", "kms_key", "custom_domain", "dedicated", "region"):
                t.pop(key, None)
    return yaml.safe_dump(doc, sort_keys=False)
