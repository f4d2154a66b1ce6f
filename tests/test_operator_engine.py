"""`--engine operator`: rollouts as Stack objects through the official kubernetes client, against a recording
API server (tests/kubefake.py). Asserts the exact objects and merge patches sent, waiting on status, the
stateful-delete guard, and the catalogue a deploy holds travelling to the workspaces."""

from __future__ import annotations

import json

import pytest

from tenancy.catalog import load_catalog, to_document, with_tenant
from tenancy.engine import EngineError, OfflineEngine, StackMissing
from tenancy.lifecycle import deploy
from tenancy.operator import overlay as ov
from tenancy.operator.engine import NotAdopted, OperatorEngine, merge_patch, preview_name
from tenancy.operator.settings import OperatorSettings
from tenancy.operator.stacks import FleetStack, object_name, platform_config, stack_object
from tests.conftest import ROOT, deployed_offline
from tests.kubefake import FakeKube

OLD = "1" * 40
NEW = "2" * 40
# prod's stacks in the order a rollout runs them: the global stack, its unit stacks, the tenants' stacks
UNITS = ["prod.identity-1", "prod.cell-1", "prod.pool-1"]
STACKS = ["prod", *UNITS, "prod.pied-piper", "prod.stark", "prod.wayne", "prod.acme", "prod.cyberdyne"]
PATH = "/apis/pulumi.com/v1/namespaces/pulumi-operator/stacks"
# What each stack reads (tenancy/topology.py), which its Stack object waits for
READS = {"prod.identity-1": ("prod",), "prod.cell-1": ("prod", "prod.identity-1"),
         "prod.pool-1": ("prod", "prod.identity-1", "prod.cell-1")}


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(ROOT / "tenants.yaml")


@pytest.fixture(scope="module")
def deployed_outputs(catalog, tmp_path_factory):
    """Every prod stack's outputs as a deploy of the committed catalogue leaves them (the offline engine): what the
    operator reports in each Stack object's status once its update succeeds."""
    offline = deployed_offline(catalog, tmp_path_factory.mktemp("state"), "prod")
    assert offline.stacks() == sorted(STACKS)
    return {object_name(s): offline.outputs(s) for s in STACKS}


@pytest.fixture(scope="module")
def settings():
    return OperatorSettings.load("prod")


def never_deployed(stack):
    raise StackMissing(f"stack '{stack}' does not exist")


def engine_for(fake, settings, catalog, commit, **kw):
    sleeps = []
    kw.setdefault("outputs_fallback", never_deployed)
    e = OperatorEngine(fake.api_client(), settings, commit, committed=lambda c: catalog, sleep=sleeps.append, **kw)
    e.sleeps = sleeps
    return e


def expected(settings, stack, commit, preview=False):
    env, _, rest = stack.partition(".")
    tenant = None
    if stack in READS:
        # a unit stack runs as its unit's deployer and reads its settings from stacks/Pulumi.prod.yaml: no config
        fs = FleetStack(stack, rest.split("-")[0], after=READS[stack], deployer=f"deployer-{rest}")
    elif rest:
        tenant = rest
        model = load_catalog(ROOT / "tenants.yaml").tenant(tenant).model.value
        # the prod catalogue's dedicated tenants have projects of their own: each runs as its own deployer; a
        # namespace tenant runs as its cell's, after the cell whose outputs it reads
        fs = FleetStack(stack, "tenant", tenant, model,
                        after=(env,) if model == "dedicated" else (env, f"{env}.cell-1"),
                        deployer=f"deployer-{tenant}" if model == "dedicated" else "deployer-cell-1")
    else:
        fs = FleetStack(stack, "platform")
    obj = stack_object(fs, settings, commit, config=platform_config(env) if not rest else None, preview=preview)
    if preview:
        obj["metadata"]["name"] = preview_name(stack)
        obj["metadata"]["labels"]["tenancy.io/preview"] = "true"
        obj["spec"].pop("prerequisites", None)
    return obj


def rollout(fake, outputs, settings, catalog, commit, **kw):
    """A deploy of `catalog` at `commit`; each stack's update reports `outputs` (deployed_outputs)."""
    fake.outputs.update(outputs)
    engine = engine_for(fake, settings, catalog, commit)
    return deploy.deploy(engine, catalog, "prod", mode="up", parallel=1, **kw), engine


def test_first_rollout_creates_a_stack_object_per_stack_after_a_preview(catalog, settings, deployed_outputs):
    fake = FakeKube()
    outcomes, engine = rollout(fake, deployed_outputs, settings, catalog, OLD)
    assert [(o.stack, o.status) for o in outcomes] == [(s, "ok") for s in STACKS]
    writes = [(r.method, r.path, r.query, r.content_type) for r in fake.writes()]
    want = []
    for stack in STACKS:
        name, twin = stack.replace(".", "-"), preview_name(stack)
        want += [("POST", PATH, {"fieldManager": "tenancy"}, "application/json"),
                 ("DELETE", f"{PATH}/{twin}", {}, "application/json"),
                 ("POST", PATH, {"fieldManager": "tenancy"}, "application/json")]
    assert writes == want
    posts = [r.body for r in fake.writes() if r.method == "POST"]
    for i, stack in enumerate(STACKS):
        assert posts[2 * i] == expected(settings, stack, OLD, preview=True), stack
        assert posts[2 * i + 1] == expected(settings, stack, OLD), stack
    assert posts[0]["spec"]["preview"] is True and "preview" not in posts[1]["spec"]
    assert sorted(n for _, n in fake.objects) == sorted(s.replace(".", "-") for s in STACKS), "preview twins are deleted"
    assert engine.sleeps == [10.0] * (2 * len(STACKS)), "each object is read again after one poll interval"
    # the next rollout starts from the deployed record the Stack objects report: the global stack's, merged with
    # each cell's and pool shard's
    from tenancy.lifecycle import record

    deployed = record.read(engine, "prod")
    assert to_document(deployed.catalog)["tenants"] == sorted(to_document(catalog)["tenants"], key=lambda t: t["id"])
    assert sorted(deployed.directory) == sorted(t.id for t in catalog.tenants if t.in_directory)


def test_a_rollout_patches_only_the_commit(catalog, settings, deployed_outputs):
    fake = FakeKube()
    rollout(fake, deployed_outputs, settings, catalog, OLD)
    fake.requests.clear()
    outcomes, _ = rollout(fake, deployed_outputs, settings, catalog, NEW)
    assert {o.status for o in outcomes} == {"ok"}
    patches = [r for r in fake.writes() if r.method == "PATCH"]
    assert [(r.path, r.query, r.content_type, r.body) for r in patches] == [
        (f"{PATH}/{s.replace('.', '-')}", {"fieldManager": "tenancy"}, "application/merge-patch+json", {"spec": {"commit": NEW}})
        for s in STACKS]
    assert all(fake.objects[("pulumi-operator", s.replace(".", "-"))]["metadata"]["generation"] == 2 for s in STACKS)
    # the same commit again: nothing to patch, the operator's last result stands
    fake.requests.clear()
    engine = engine_for(fake, settings, catalog, NEW)
    assert engine.up("prod.stark", catalog).stack == "prod.stark"
    assert fake.writes() == [] and [r.method for r in fake.requests] == ["GET", "GET"]


def test_a_failed_update_is_reported_with_the_operators_message(catalog, settings, deployed_outputs):
    fake = FakeKube()
    rollout(fake, deployed_outputs, settings, catalog, OLD)
    fake.outcomes["prod-stark"] = ("failed", "error: googleapi: Error 403: quota exceeded")
    outcomes, _ = rollout(fake, deployed_outputs, settings, catalog, NEW)
    by = {o.stack: o for o in outcomes}
    assert by["prod.stark"].status == "failed"
    assert by["prod.stark"].message == ("update of 'prod.stark' failed on the operator (Stack prod-stark, commit "
                                        "222222222222): error: googleapi: Error 403: quota exceeded")
    assert {o.status for s, o in by.items() if s != "prod.stark"} == {"ok"}


def test_a_failed_preview_stops_the_update(catalog, settings, deployed_outputs):
    fake = FakeKube()
    rollout(fake, deployed_outputs, settings, catalog, OLD)
    fake.outcomes[preview_name("prod.wayne")] = ("failed", "error: resource postgres-1-instance is protected and cannot be replaced")
    fake.requests.clear()
    outcomes, _ = rollout(fake, deployed_outputs, settings, catalog, NEW)
    wayne = next(o for o in outcomes if o.stack == "prod.wayne")
    assert wayne.status == "failed" and wayne.message.startswith("preview of 'prod.wayne' failed on the operator")
    assert "cannot be replaced" in wayne.message
    assert not [r for r in fake.writes() if r.method == "PATCH" and r.name == "prod-wayne"], "the update was never sent"
    assert ("pulumi-operator", "prod-wayne--pv") not in fake.objects, "the twin is deleted even when its preview failed"
    assert fake.objects[("pulumi-operator", "prod-wayne")]["spec"]["commit"] == OLD


def test_the_offline_preview_refuses_a_stateful_replace_before_anything_is_sent(catalog, settings, deployed_outputs, tmp_path):
    fake = FakeKube()
    fake.outputs.update(deployed_outputs)
    offline = OfflineEngine(tmp_path / "state", "prod")
    first = engine_for(fake, settings, catalog, OLD, preview="offline", offline=offline)
    assert {o.status for o in deploy.deploy(first, catalog, "prod", mode="up", parallel=1)} == {"ok"}
    assert offline.stacks() == sorted(STACKS), "the offline record follows the rollout"
    moved = with_tenant(catalog, "stark", region="us-east1")
    fake.requests.clear()
    engine = engine_for(fake, settings, moved, NEW, preview="offline", offline=offline)
    [o] = deploy.deploy(engine, moved, "prod", mode="up", tenants=["stark"])
    assert o.status == "refused" and o.message.startswith("would replace gcp:")
    assert o.message.endswith("nothing was changed (review it, then --allow-destroy)")
    assert fake.writes() == [], "no twin, no patch: the offline preview decided"


def test_the_catalogue_a_deploy_holds_reaches_the_workspaces(catalog, settings, deployed_outputs):
    """globex's move out of the pool is pending: the platform-side objects carry its deployed entry."""
    fake = FakeKube()
    rollout(fake, deployed_outputs, settings, catalog, OLD)
    desired = with_tenant(catalog, "globex", plan="standard")       # what tenants.yaml says at the new commit
    fake.requests.clear()
    engine = engine_for(fake, settings, desired, NEW)
    result = deploy.rollout(engine, desired, "prod", mode="up", parallel=1)
    assert [p.tenant for p in result.pending] == ["globex"]
    assert "prod.globex" not in [o.stack for o in result.outcomes]
    assert not [r for r in fake.writes() if "globex" in r.path], "the held tenant's stack is not created"
    # every platform-side stack places the whole catalogue, so the global stack and each unit stack (pool-1 holds
    # globex) build the same held catalogue
    platform_side = {object_name(s) for s in ["prod", *UNITS]}
    patches = {r.name: r.body for r in fake.writes() if r.method == "PATCH" and r.name in platform_side}
    assert set(patches) == platform_side
    envs = [p["spec"]["workspaceTemplate"]["spec"]["env"] for p in patches.values()]
    assert all(e == envs[0] for e in envs)
    [env] = envs[0]
    assert env["name"] == "TENANCY_CATALOG_OVERLAY"
    data = json.loads(env["value"])
    assert data["tenants"] == {"globex": next(t for t in to_document(catalog)["tenants"] if t["id"] == "globex")}
    # what the program does with it: tenants.yaml at the commit, changed back to the deployed entry
    assert to_document(ov.apply(desired, data)) == to_document(catalog)
    tenant_patches = [r.body for r in fake.writes() if r.method == "PATCH" and r.name not in platform_side]
    assert len(tenant_patches) == 5 and all(b == {"spec": {"commit": NEW}} for b in tenant_patches), \
        "tenant stacks need no overlay"


def test_overlay_round_trips_removed_and_reordered_tenants(catalog):
    committed = load_catalog(ROOT / "tenants.yaml")
    doc = to_document(committed)
    doc["tenants"] = [t for t in doc["tenants"] if t["id"] != "hooli"]
    import yaml

    from tenancy.catalog import parse_catalog

    without_hooli = parse_catalog(yaml.safe_dump(doc, sort_keys=False))
    d = ov.difference(committed, without_hooli)       # the deployment still holds hooli, the file dropped it
    assert set(d) == {"tenants", "order"} and list(d["tenants"]) == ["hooli"]
    assert to_document(ov.apply(without_hooli, d)) == to_document(committed)
    assert ov.difference(committed, committed) is None
    assert ov.difference(without_hooli, committed) == {"tenants": {"hooli": None}}


def test_waiting_stops_at_a_stall_and_at_the_timeout(catalog, settings):
    fake = FakeKube()
    fake.outcomes["prod-stark"] = ("stalled", "failed to fetch https://github.com/saas-example/tenancy.git: not found")
    engine = engine_for(fake, settings, catalog, OLD, preview="stacks")
    with pytest.raises(EngineError, match=r"update of 'prod.stark' stalled on the operator \(Stack prod-stark\): "
                                          r"SourceUnavailable: failed to fetch"):
        engine.up("prod.stark", catalog)
    fake.frozen.add("prod-wayne")
    now = [0.0]

    def sleep(seconds):
        now[0] += seconds

    slow = OperatorEngine(fake.api_client(), settings, OLD, committed=lambda c: catalog, sleep=sleep, clock=lambda: now[0],
                          poll_seconds=30, timeout_seconds=120)
    with pytest.raises(EngineError, match=r"update of 'prod.wayne' did not finish within 120s \(Stack prod-wayne: "
                                          r"waiting for the operator\); the operator keeps reconciling it"):
        slow.up("prod.wayne", catalog)
    assert now[0] == 120


def test_outputs_come_from_the_stack_status_or_the_state_backend(catalog, settings):
    fake = FakeKube()
    fake.outputs["prod-stark"] = {"bucket": "prod-stark-uploads", "kubeconfig": "[secret]"}
    engine = engine_for(fake, settings, catalog, OLD)
    assert engine.up("prod.stark", catalog).outputs == {"bucket": "prod-stark-uploads", "kubeconfig": "[secret]"}
    assert engine.outputs("prod.stark") == {"bucket": "prod-stark-uploads", "kubeconfig": "[secret]"}
    read = []
    fallback = engine_for(fake, settings, catalog, OLD, outputs_fallback=lambda s: read.append(s) or {"from": "backend"})
    assert fallback.outputs("prod.wayne") == {"from": "backend"} and read == ["prod.wayne"]
    alone = OperatorEngine(fake.api_client(), settings, OLD, committed=lambda c: catalog)
    with pytest.raises(NotAdopted, match="stack 'prod.wayne' has no Stack object in namespace pulumi-operator yet"):
        alone.outputs("prod.wayne")
    assert NotAdopted.exit_code == 2


def test_destroys_are_refused_and_api_errors_are_one_line(catalog, settings):
    fake = FakeKube()
    engine = engine_for(fake, settings, catalog, OLD)
    with pytest.raises(EngineError, match="the operator engine does not destroy stacks \\('prod.acme'\\)"):
        engine.destroy("prod.acme", catalog, release=["urn:x"])
    assert fake.requests == []
    fake.errors["prod-stark"] = (403, 'stacks.pulumi.com "prod-stark" is forbidden: User "ci" cannot get resource "stacks"')
    with pytest.raises(EngineError) as exc:
        engine.up("prod.stark", catalog)
    assert str(exc.value) == ('Kubernetes API: read Stack prod-stark: 403 stacks.pulumi.com "prod-stark" is forbidden: '
                              'User "ci" cannot get resource "stacks"')


def test_merge_patch_is_the_exact_difference():
    live = {"commit": "a", "config": {"x": "1", "y": "2"}, "env": [{"name": "A"}], "keep": True}
    want = {"commit": "b", "config": {"x": "1", "z": "3"}, "env": [], "keep": True}
    assert merge_patch(live, want) == {"commit": "b", "config": {"y": None, "z": "3"}, "env": []}
    assert merge_patch({"a": {"b": 1}, "other": 1}, {"a": {"b": 1}}, remove=False) == {}


def test_the_program_applies_the_overlay_it_is_given(monkeypatch, catalog):
    """What a workspace does with TENANCY_CATALOG_OVERLAY: a platform-side program builds the held catalogue (here
    pool-1, which holds globex's directory entry and record)."""
    import stacks
    from tenancy.envconfig import project_name
    from tenancy.offline import run_stack
    from tenancy.plan import _exports, _platform_config
    from tenancy.recorder import ORGANIZATION, run_program

    # what pool-1's program reads of the stacks deployed before it (the committed catalogue)
    prefix = f"{ORGANIZATION}/{project_name()}/"
    refs = {}
    for stack in ("dev", "dev.identity-1", "dev.cell-1"):
        result, _ = run_stack(stack, catalog, _platform_config("dev") if stack == "dev" else {}, refs)
        refs[prefix + stack] = _exports(result)
    held = with_tenant(catalog, "globex", plan="basic")
    monkeypatch.setenv("TENANCY_CATALOG_OVERLAY", ov.encode(ov.difference(held, catalog)))
    monkeypatch.delenv("TENANCY_CATALOG", raising=False)
    # a unit stack has no config of its own
    result = run_program(stacks._main_async, project=project_name(), stack="dev.pool-1", config={}, stack_outputs=refs)
    directory = json.loads(result.outputs["tenantDirectory"])
    assert directory["globex"]["plan"] == "basic" and directory["initech"]["plan"] == "basic"
    record = json.loads(result.outputs["deployedRecord"])
    assert next(t for t in record["catalog"]["tenants"] if t["id"] == "globex")["plan"] == "basic"
    # without the overlay, the same program builds tenants.yaml as committed
    monkeypatch.delenv("TENANCY_CATALOG_OVERLAY")
    plain = run_program(stacks._main_async, project=project_name(), stack="dev.pool-1", config={}, stack_outputs=refs)
    assert json.loads(plain.outputs["tenantDirectory"])["globex"]["plan"] == catalog.tenant("globex").plan_name != "basic"


def test_the_command_needs_the_operator_settings_and_credentials():
    import os
    import subprocess
    import sys

    run = lambda *a, **env: subprocess.run([sys.executable, "-m", "tenancy", "up", "--engine", "operator", *a], cwd=ROOT,
                                           capture_output=True, text=True, env={**os.environ, **env})
    res = run("--env", "dev")
    assert res.returncode == 2 and res.stderr.startswith("error: stacks/Pulumi.dev.yaml: tenancy:operatorDeployer is required")
    res = run("--env", "prod", KUBECONFIG=str(ROOT / "no-such-kubeconfig"), KUBERNETES_SERVICE_HOST="")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip() == ("error: no Kubernetes credentials for the operator's cluster: Invalid kube-config file. "
                                  "No configuration found.; run `gcloud container clusters get-credentials <cluster>` or "
                                  "pass --kube-context")


def test_prune_deletes_only_the_stack_objects_of_stacks_that_are_gone(catalog, settings, deployed_outputs):
    fake = FakeKube()
    outcomes, engine = rollout(fake, deployed_outputs, settings, catalog, NEW)
    assert [o.status for o in outcomes] == ["ok"] * len(STACKS)
    # another environment's object and a foreign object in the namespace are never touched
    fake.objects[("pulumi-operator", "dev-acme")] = {"metadata": {"name": "dev-acme", "labels": {
        "app.kubernetes.io/managed-by": "tenancy", "tenancy.io/environment": "dev"},
        "annotations": {"tenancy.io/stack": "dev.acme"}}, "spec": {}}
    fake.objects[("pulumi-operator", "other")] = {"metadata": {"name": "other", "labels": {}}, "spec": {}}
    keep = [s for s in STACKS if s != "prod.acme"]
    fake.requests.clear()
    assert engine.prune(keep, dry_run=True) == [("prod-acme", "prod.acme")]
    assert fake.writes() == []
    assert engine.prune(keep) == [("prod-acme", "prod.acme")]
    assert [(r.method, r.path) for r in fake.writes()] == [("DELETE", f"{PATH}/prod-acme")]
    assert ("pulumi-operator", "prod-acme") not in fake.objects and ("pulumi-operator", "dev-acme") in fake.objects
    assert engine.prune(keep) == []                      # a re-run finds nothing
    # an object that would destroy its stack on deletion stops the prune before anything is deleted
    fake.objects[("pulumi-operator", "prod-wayne")]["spec"]["destroyOnFinalize"] = True
    fake.requests.clear()
    with pytest.raises(EngineError) as exc:
        engine.prune([s for s in keep if s not in ("prod.wayne", "prod.stark")])
    assert str(exc.value).startswith("Stack prod-wayne (prod.wayne) has destroyOnFinalize set")
    assert fake.writes() == []
