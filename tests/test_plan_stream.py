"""The streaming plan: workers write each stack's manifests and plan.json entry as it finishes, the parent keeps
light records; the global stack, then its identity shard, cell and pool shard, then the tenant stacks. Its output is
compared byte for byte with the plan computed every stack in memory, in this process, one stack after another
(each fed the exports of the stacks before it), with one json.dumps at the end."""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path

import pytest
import yaml

from tenancy import plan as planmod
from tenancy import planwrite
from tenancy.catalog import load_catalog
from tenancy.errors import PlanError
from tenancy.policycheck import evaluate_cross_stack, evaluate_plan, plan_view, stack_of_urn
from tests.conftest import ROOT
from tests.test_policy_isolation import _exact_conditions, add, res, sa

# The committed catalogue's platform-side stacks, in the order they are planned (each reads those before it).
PLATFORM_SIDE = [("dev", "platform"), ("dev.identity-1", "identity"), ("dev.cell-1", "cell"), ("dev.pool-1", "pool")]
TENANT_STACKS = ["dev.pied-piper", "dev.stark", "dev.wayne", "dev.acme", "dev.cyberdyne"]


def reference_plan(catalog, env: str, out: Path) -> None:
    """The plan computed without workers or streaming: every stack program in this process, one after another, each
    given the exports of every stack run before it; every stack held in memory, the plan-wide rules over every
    stack's resources, plan.json as one json.dumps, manifests with yaml.safe_dump."""
    from tenancy.envconfig import project_name
    from tenancy.fleet import capacity, placement, report

    placed = placement.place(catalog, capacity.load(env))
    refs: dict[str, tuple[dict, list[str]]] = {}
    stacks = []
    for name, kind, tenant, model in ([(n, k, None, None) for n, k in PLATFORM_SIDE]
                                      + [(f"{env}.{t.id}", "tenant", t.id, t.model.value) for t in catalog.stack_tenants]):
        result, seconds = planmod.run_stack(name, catalog, planmod._platform_config(env) if name == env else {}, refs)
        stacks.append(planmod._to_stack_plan(name, kind, tenant, model, result, seconds))
        refs[f"organization/{project_name()}/{name}"] = planmod._exports(result)
    assert [s.name for s in stacks] == [n for n, _ in PLATFORM_SIDE] + TENANT_STACKS
    by_name = {s.name: s for s in stacks}
    for v in evaluate_plan([s.to_json() for s in stacks]):
        (by_name.get(stack_of_urn(v["urn"])) or stacks[0]).violations.append(v)
    for s in stacks:
        s.placement = report.stack_json(placed, catalog, s.kind, s.tenant)
    result = planmod.PlanResult(environment=env, stacks=stacks)
    out.mkdir(parents=True)
    (out / "plan.json").write_text(json.dumps(result.to_json(), indent=1, sort_keys=False) + "\n")
    for s in stacks:
        for fname, manifest in planmod.manifests(s).items():
            (out / "manifests" / s.name).mkdir(parents=True, exist_ok=True)
            (out / "manifests" / s.name / fname).write_text(yaml.safe_dump(manifest, sort_keys=False, default_flow_style=False))


def tree(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "plan"
    reference_plan(load_catalog(ROOT / "tenants.yaml"), "dev", out)
    return tree(out)


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    """A streaming plan with two workers: (result, output directory, run_stack calls, progress messages)."""
    base = tmp_path_factory.mktemp("streamed")
    calls = base / "calls.jsonl"
    mp = pytest.MonkeyPatch()
    original = planmod.run_stack

    def spy(stack, catalog, config, outputs, tenant_facing_only=False):
        start = time.monotonic()
        got = original(stack, catalog, config, outputs, tenant_facing_only)
        with open(calls, "a") as f:
            f.write(json.dumps({"pid": os.getpid(), "stack": stack, "tenant_facing_only": tenant_facing_only,
                                "start": start, "end": time.monotonic()}) + "\n")
        return got

    mp.setattr(planmod, "run_stack", spy)
    said: list[str] = []
    try:
        result = planmod.plan(load_catalog(ROOT / "tenants.yaml"), "dev", workers=2, out=base / "plan", progress=said.append)
    finally:
        mp.undo()
    return result, base / "plan", [json.loads(line) for line in calls.read_text().splitlines()], said


def test_streamed_plan_json_and_manifests_are_those_of_the_in_memory_plan(streamed, reference):
    result, out, _, _ = streamed
    got = tree(out)
    assert list(got) == list(reference), "the same files: plan.json and manifests/<stack>/*.yaml"
    assert got["plan.json"] == reference["plan.json"]
    assert [name for name in got if got[name] != reference[name]] == []
    assert result.plan_file == out / "plan.json"
    assert not (out / planwrite.STAGING).exists(), "the staging directory is gone"
    data = json.loads(got["plan.json"])
    assert [(s["name"], s["kind"]) for s in data["stacks"]] == PLATFORM_SIDE + [(t, "tenant") for t in TENANT_STACKS]
    assert {tuple(s) for s in data["stacks"]} == {("name", "kind", "tenant", "model", "resources", "outputs", "violations",
                                                   "placement")}


def test_one_worker_streams_the_same_bytes(tmp_path, streamed):
    _, out, _, _ = streamed
    result = planmod.plan(load_catalog(ROOT / "tenants.yaml"), "dev", workers=1, out=tmp_path / "one")
    assert tree(tmp_path / "one") == tree(out)
    assert [s.name for s in result.stacks] == [s.name for s in streamed[0].stacks]


def test_manifests_are_written_per_stack_by_the_workers(streamed):
    result, out, calls, _ = streamed
    parent = os.getpid()
    data = json.loads((out / "plan.json").read_text())
    for s in data["stacks"]:
        objects = [r for r in s["resources"] if r["type"].startswith("kubernetes:")
                   and not r["type"].startswith(planwrite.K8S_NOT_OBJECTS)]
        files = sorted((out / "manifests" / s["name"]).glob("*.yaml"))
        assert len(files) == len(objects), s["name"]
        assert (len(files) > 0) is (s["name"] not in ("dev", "dev.identity-1")), s["name"]   # those hold no Kubernetes object
    # each stack is planned once, and written where it ran: the global stack and each stage of one unit stack in
    # this process, the first tenant stack here too (so that the workers forked next start with its modules
    # imported), the others in workers
    assert sorted(c["stack"] for c in calls) == sorted(s["name"] for s in data["stacks"])
    assert not [c for c in calls if c["tenant_facing_only"]], "every unit is planned in full"
    assert [c["stack"] for c in calls if c["pid"] == parent] == [n for n, _ in PLATFORM_SIDE] + ["dev.pied-piper"]
    assert all(c["pid"] != parent for c in calls if c["stack"] in TENANT_STACKS[1:])


def test_each_stage_is_planned_after_the_stacks_it_reads(streamed):
    _, _, calls, said = streamed
    assert said == ["planning global stack dev (10 tenants)", "planning 1 identity stack(s)", "planning 1 cell stack(s)",
                    "planning 1 pool stack(s)", "planning 5 tenant stack(s) with 2 worker(s)"]
    runs = {c["stack"]: c for c in calls}
    stages = [["dev"], ["dev.identity-1"], ["dev.cell-1"], ["dev.pool-1"], TENANT_STACKS]
    for before, after in zip(stages, stages[1:]):
        assert max(runs[s]["end"] for s in before) <= min(runs[s]["start"] for s in after), (before, after)


def test_light_records_hold_no_resources(streamed):
    result, out, _, _ = streamed
    data = json.loads((out / "plan.json").read_text())
    for s, entry in zip(result.stacks, data["stacks"]):
        assert s.resources is None, s.name
        assert s.resource_count == len(entry["resources"]) > 0
        assert (s.violations, s.reasons, s.placement) == (entry["violations"], entry.get("reasons", []), entry["placement"])
        assert all(entry["outputs"][k] == v for k, v in s.outputs.items())
        assert all(len(json.dumps(v)) <= planmod.LIGHT_OUTPUT_BYTES for v in s.outputs.values())
    platform = result.stacks[0]
    assert platform.name == "dev" and platform.outputs["gcpProject"] == "tenancy-dev-482913"
    cell = result.stacks[2]
    assert cell.name == "dev.cell-1" and cell.outputs["clusterName"] == "dev-shared"
    # the cell's directory share is larger than a light record keeps: plan.json has it
    assert len(data["stacks"][2]["outputs"]["tenantDirectory"]) > planmod.LIGHT_OUTPUT_BYTES
    assert "tenantDirectory" not in cell.outputs
    with pytest.raises(PlanError, match="stack 'dev' was streamed to plan.json; its resources are read from there"):
        platform.to_json()
    with pytest.raises(PlanError, match="this plan was written to .*plan.json as it ran"):
        planmod.write(result, out / "again")
    lines = planmod.summary(result).splitlines()
    assert lines[1].split()[:5] == ["dev", "platform", "-", "-", str(platform.resource_count)]
    assert lines[3].split()[:5] == ["dev.cell-1", "cell", "-", "-", str(cell.resource_count)]
    assert lines[10].startswith(f"9 stack(s), {sum(len(e['resources']) for e in data['stacks'])} resources, 0 mandatory")


def test_a_failing_stack_program_in_a_worker_is_a_plan_error(tmp_path, monkeypatch):
    import stacks.tenant as tenant_stack

    original = tenant_stack.build

    def build(env, tenant, *args, **kwargs):
        if tenant.id == "stark":
            raise ValueError("boom")
        return original(env, tenant, *args, **kwargs)

    monkeypatch.setattr(tenant_stack, "build", build)   # the forked workers run this module as patched
    out = tmp_path / "plan"
    (out / "manifests" / "dev.old").mkdir(parents=True)
    (out / "plan.json").write_text('{"previous": true}\n')
    with pytest.raises(PlanError, match=r"^stack 'dev.stark': the program failed: ValueError: boom$"):
        planmod.plan(load_catalog(ROOT / "tenants.yaml"), "dev", workers=2, out=out)
    assert (out / "plan.json").read_text() == '{"previous": true}\n', "a failed plan leaves the previous one"
    assert sorted(p.name for p in out.iterdir()) == ["manifests", "plan.json"]
    assert [p.name for p in (out / "manifests").iterdir()] == ["dev.old"]


def test_the_cli_streams_and_reports_counts(tmp_path):
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "tenancy", "plan", "--tenant", "stark", "--tenant", "globex",
                          "--out", str(tmp_path / "p"), "--json"], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    data = json.loads((tmp_path / "p" / "plan.json").read_text())
    assert report["planFile"] == str(tmp_path / "p" / "plan.json")
    assert [(s["name"], s["resources"]) for s in report["stacks"]] == [(s["name"], len(s["resources"])) for s in data["stacks"]]
    # globex is pooled: its share of the platform is its pool shard's stack (the global stack, identity shard and
    # cell it reads run for their outputs only)
    assert [s["name"] for s in report["stacks"]] == ["dev.pool-1", "dev.stark"]
    assert sorted(p.name for p in (tmp_path / "p" / "manifests").iterdir()) == ["dev.pool-1", "dev.stark"]


# ------------------------------------------------------------------------------------ plan-wide rules

@pytest.fixture
def broken(sample_plan):
    """The real plan with a break of every cross-stack rule planted, and an oversized ConfigMap."""
    plan = _exact_conditions(copy.deepcopy(sample_plan[1]))
    res(plan, "dev.wayne", "uploads-bucket")["inputs"]["name"] = "dev-stark-uploads"          # unique-physical-names
    res(plan, "dev.stark", "uploads-storage-objectAdmin")["inputs"]["member"] = sa(plan, "dev.wayne")   # iam-tenant-scope
    piper = res(plan, "dev.pied-piper", "ingress")["inputs"]["spec"]["rules"][0]["host"]
    res(plan, "dev.stark", "ingress")["inputs"]["spec"]["rules"][0]["host"] = piper             # ingress-host-claims
    add(plan, "dev.wayne", "kubernetes:core/v1:Namespace", "stark-ns",                          # no-shared-tenant-stores
        copy.deepcopy(res(plan, "dev.stark", "namespace-ns")["inputs"]), like="namespace-ns")
    add(plan, "dev.acme", "kubernetes:core/v1:ConfigMap", "huge",                               # object-and-stack-size
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "huge", "namespace": "tenant-acme"},
         "data": {"blob": "x" * (1 << 20)}}, like="namespace-ns")
    return plan


def test_plan_views_give_the_cross_stack_rules_what_the_full_stacks_give(broken):
    full = evaluate_cross_stack(broken["stacks"])
    views = [plan_view(s) for s in broken["stacks"]]
    assert evaluate_cross_stack(views) == full
    assert {v["policy"] for v in full} == {"no-shared-tenant-stores", "unique-physical-names", "ingress-host-claims",
                                           "iam-tenant-scope"}
    kept = sum(len(v["resources"]) for v in views)
    assert kept < sum(len(s["resources"]) for s in broken["stacks"]) and \
        len(json.dumps(views)) * 3 < len(json.dumps(broken["stacks"])), "a view is a small part of its stack"


def test_plan_wide_violations_land_as_evaluate_plan_puts_them(broken):
    """_plan_wide_violations (views + each stack's own part) and the whole-plan evaluation agree, order included."""
    stacks = [planmod.StackPlan(s["name"], s["kind"], s["tenant"], s["model"], s["resources"], s["outputs"])
              for s in broken["stacks"]]
    planned = [planmod._planned(s) for s in stacks]
    planmod._plan_wide_violations(planned)
    expected: dict[str, list] = {s["name"]: [] for s in broken["stacks"]}
    for v in evaluate_plan(broken["stacks"]):
        name = stack_of_urn(v["urn"])
        expected[name if name in expected else "dev"].append(v)
    assert {s.name: s.violations for s in stacks} == expected
    assert [v["policy"] for v in expected["dev.acme"]] == ["object-and-stack-size"]
    assert {v["policy"] for v in expected["dev.stark"]} >= {"iam-tenant-scope", "ingress-host-claims"}


def test_a_streaming_plan_spills_views_and_finds_the_same_breaks(broken, tmp_path, monkeypatch):
    """Streaming, the parent keeps each stack's view as a file (its memory does not grow with the fleet's
    resources); the plan-wide rules read them back one stack at a time, ownership built once, and find the
    same violations as over the whole plan in memory."""
    from policy import rules

    def planned_stacks():
        return [planmod.StackPlan(s["name"], s["kind"], s["tenant"], s["model"], copy.deepcopy(s["resources"]), s["outputs"])
                for s in broken["stacks"]]

    in_memory = planned_stacks()
    planmod._plan_wide_violations([planmod._planned(s) for s in in_memory])
    writer = planwrite.PlanWriter.open(tmp_path / "plan")
    monkeypatch.setattr(planmod, "_WRITER", writer)
    spilled = [planmod._planned(s) for s in planned_stacks()]
    monkeypatch.setattr(planmod, "_WRITER", None)
    assert [p.view for p in spilled] == [tmp_path / "plan" / planwrite.STAGING / "views" / f"{s['name']}.marshal"
                                         for s in broken["stacks"]]
    assert all(p.stack.resources is None for p in spilled), "no resources in the parent"
    builds = []
    real = rules.ownership.build_ownership
    monkeypatch.setattr(rules.ownership, "build_ownership", lambda stacks: builds.append(1) or real(stacks))
    planmod._plan_wide_violations(spilled)
    assert len(builds) == 3, "iam-tenant-scope, deployer-scope and unique-physical-names each ask for the ownership"
    assert {p.stack.name: p.stack.violations for p in spilled} == {s.name: s.violations for s in in_memory}
    found = {v["policy"] for p in spilled for v in p.stack.violations}
    assert found == {"no-shared-tenant-stores", "unique-physical-names", "ingress-host-claims", "iam-tenant-scope",
                     "object-and-stack-size"}
    writer.abort()
    assert not (tmp_path / "plan" / planwrite.STAGING).exists(), "the spilled views go with the staging directory"


def test_plan_stacks_build_the_ownership_once(broken):
    from policy import rules
    from tenancy.policycheck import PlanStacks

    stacks = PlanStacks([plan_view(s) for s in broken["stacks"]])
    first = rules.build_ownership(stacks)
    assert rules.build_ownership(stacks) is first and stacks.ownership is first
    assert {"stark", "wayne", "pied-piper", "acme", "cyberdyne"} <= first.tenants and first.names
    listed = [(t, list(r)) for t, r in stacks]
    assert rules.build_ownership(listed) is not first and rules.build_ownership(listed).names == first.names


# --------------------------------------------------------------------------------------------- writing

def test_manifests_are_written_as_safe_dump_writes_them():
    """planwrite.manifest_yaml (libyaml, or PyYAML remembering long scalars) against yaml.safe_dump."""
    sql = (ROOT / "sql" / "001_tenancy.sql").read_text()
    texts = [sql, sql + "  trailing\t", "ünïcödé " * 60, "'quoted' \"double\" " * 40, "word " * 200, "a\n\nb\n" * 100,
             "\x07 bell " * 50, " leading space " * 30, "", "123", "true", "null", "- dash", "a: b # c", "~", "0o17",
             "line\nbreak", "x" * 300, "key with spaces: and colon", "\ttab", "trailing ", "é", "{braces}", "[list]"]
    docs = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "m", "labels": {"a": t[:60]}},
             "data": {"f.sql": t, "g": [t, {"deeper": t}], "n": 3, "b": True, "none": None, "empty": {}, "nil": []},
             "plain": t} for t in texts]
    docs += [{"k" * 200: "long key"}, {"multi\nline": 1}, {"x": 1.5, "y": -0.0, "z": 10 ** 20}]
    routed = {planwrite._libyaml_writes_it_alike(d) for d in docs}
    assert routed == {True, False}, "both writers are exercised"
    for doc in docs * 2:       # the second time partly from what was remembered
        expected = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)
        assert planwrite.manifest_yaml(doc) == expected
        assert yaml.dump(doc, Dumper=planwrite.ManifestDumper, sort_keys=False, default_flow_style=False) == expected
        assert yaml.dump(doc, Dumper=planwrite.ManifestDumper, sort_keys=False, default_flow_style=False, width=40) == \
            yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=40)


def test_an_empty_plan_and_changes_are_written_as_json_dumps_writes_them(tmp_path):
    result = planmod.PlanResult(environment="dev", stacks=[], removed={"dev.x": "gone"}, unchanged=["dev"],
                                changed_since="HEAD")
    path = planmod.write(result, tmp_path)
    assert path.read_text() == json.dumps(result.to_json(), indent=1) + "\n"
    assert json.loads(path.read_text())["changes"] == {"since": "HEAD", "removed": {"dev.x": "gone"}, "unchanged": ["dev"]}


def test_a_cells_layout_plan_streams_only_its_stacks(tmp_path, monkeypatch):
    """Unit stacks stream like the others; those run only for their outputs are not part of the output."""
    from tenancy.catalog import parse_catalog
    from tests.test_cells import SMALL, cells_config

    cells_config(monkeypatch, **{"tenancy:identityShards": "2"})
    catalog = parse_catalog(SMALL)
    memory = planmod.plan(catalog, "dev", workers=1)
    planmod.write(memory, tmp_path / "memory")
    streamed = planmod.plan(catalog, "dev", workers=2, out=tmp_path / "streamed")
    assert tree(tmp_path / "streamed") == tree(tmp_path / "memory")
    assert [s.name for s in streamed.stacks] == [s.name for s in memory.stacks] == [
        "dev", "dev.identity-1", "dev.identity-2", "dev.cell-1", "dev.pool-1", "dev.delta", "dev.echo"]
    assert all(s.resources is None for s in streamed.stacks)
    one = planmod.plan(catalog, "dev", tenants=["delta"], workers=1, out=tmp_path / "one")
    assert [s.name for s in one.stacks] == ["dev.delta"]
    assert [s["name"] for s in json.loads((tmp_path / "one" / "plan.json").read_text())["stacks"]] == ["dev.delta"]
    assert sorted(p.name for p in (tmp_path / "one" / "manifests").iterdir()) == ["dev.delta"], \
        "the global stack and the cell ran for their outputs only"
