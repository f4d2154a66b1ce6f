"""Deploy orchestration with the offline engine, and the Automation API engine's exact CLI arguments."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from pulumi.automation import CommandResult, PulumiCommand
from semver import VersionInfo

from tenancy.lifecycle import deploy
from tenancy.catalog import load_catalog, with_tenant
from tenancy.engine import AutomationEngine, OfflineEngine
from tests.conftest import ROOT, catalog_repo_at

SAMPLE_STACKS = ["dev.pied-piper", "dev.stark", "dev.wayne", "dev.acme", "dev.cyberdyne"]
# dev as shipped: the global stack, then one identity shard, one cell and one pool shard, in the order they deploy
PLATFORM_STACKS = ["dev", "dev.identity-1", "dev.cell-1", "dev.pool-1"]


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(ROOT / "tenants.yaml")


class Watching(OfflineEngine):
    """The offline engine, recording how many tenant operations overlap."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.active = 0
        self.max_active = 0
        self.guard = threading.Lock()

    def preview(self, stack, catalog):
        with self.guard:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            time.sleep(0.2 if "." in stack else 0)
            return super().preview(stack, catalog)
        finally:
            with self.guard:
                self.active -= 1


def test_platform_first_then_tenants_in_parallel(tmp_path, catalog):
    engine = Watching(tmp_path / "state", "dev")
    outcomes = deploy.deploy(engine, catalog, "dev", mode="up", parallel=3)
    assert [o.stack for o in outcomes] == [*PLATFORM_STACKS, *SAMPLE_STACKS]
    assert all(o.status == "ok" for o in outcomes), [o.line() for o in outcomes]
    # the platform-side stacks one after the other, each previewed then updated, before any tenant stack
    assert engine.calls[:8] == [(op, s) for s in PLATFORM_STACKS for op in ("preview", "up")]
    assert {s for op, s in engine.calls[8:]} == set(SAMPLE_STACKS)
    assert engine.max_active >= 2, "tenant stacks run in parallel"
    assert sorted(engine.stacks()) == sorted([*PLATFORM_STACKS, *SAMPLE_STACKS])
    again = deploy.deploy(engine, catalog, "dev", mode="preview")
    assert all(o.result.changes == [] for o in again), "a second run finds nothing to change"
    assert [o.line() for o in again] == [f"{s}: ok: no changes" for s in [*PLATFORM_STACKS, *SAMPLE_STACKS]]


def test_a_stateful_replace_is_refused_without_allow_destroy(tmp_path, catalog):
    engine = OfflineEngine(tmp_path / "state", "dev")
    deploy.deploy(engine, catalog, "dev", mode="up")
    moved = with_tenant(catalog, "pied-piper", region="europe-west1")   # databases and bucket would be replaced
    before = (tmp_path / "state" / "dev.pied-piper.json").read_text()
    outcomes = {o.stack: o for o in deploy.deploy(engine, moved, "dev", mode="up", tenants=["pied-piper"])}
    refused = outcomes["dev.pied-piper"]
    assert refused.status == "refused"
    assert refused.message.startswith("would replace gcp:storage/bucket:Bucket uploads-bucket; ")
    for db in ("postgres-1", "postgres-2", "postgres-3"):
        assert f"replace gcp:sql/databaseInstance:DatabaseInstance {db}-instance" in refused.message
    assert refused.message.endswith("nothing was changed (review it, then --allow-destroy)")
    assert (tmp_path / "state" / "dev.pied-piper.json").read_text() == before
    assert ("up", "dev.pied-piper") not in engine.calls[-2:]
    allowed = deploy.deploy(engine, moved, "dev", mode="up", tenants=["pied-piper"], allow_destroy=True)
    assert [o.status for o in allowed] == ["ok"]


def test_preview_reports_stateful_deletes_without_refusing(tmp_path, catalog):
    engine = OfflineEngine(tmp_path / "state", "dev")
    deploy.deploy(engine, catalog, "dev", mode="up")
    moved = with_tenant(catalog, "stark", region="us-east1")
    [o] = deploy.deploy(engine, moved, "dev", mode="preview", tenants=["stark"])
    assert o.status == "ok" and o.message.startswith("would replace gcp:") and o.message.endswith("(stateful)")
    assert o.result.counts()["replace"] >= 4
    # each resource that changes, with the inputs that force a replacement
    lines = o.lines()
    assert lines[0].startswith("dev.stark: ok: 6 replace, 9 update: would replace gcp:storage/bucket:Bucket")
    assert "  +- replace gcp:sql/databaseInstance:DatabaseInstance postgres-1-instance (replaced because region changed)" in lines
    assert "  +- replace gcp:storage/bucket:Bucket uploads-bucket (replaced because location changed)" in lines
    assert "  ~  update gcp:secretmanager/secret:Secret postgres-1-tenancy-app-secret (changed: replication)" in lines
    assert lines[1].startswith("  +- replace"), "replaces before updates"


def test_a_stack_without_changes_says_so_and_a_new_one_counts_its_creates(tmp_path, catalog):
    from tenancy.engine import Change, OpResult

    assert deploy.Outcome("dev.stark", "ok", OpResult("dev.stark")).lines() == ["dev.stark: ok: no changes"]
    many = OpResult("dev.x", [Change("create", f"urn:pulumi:dev.x::tenancy::gcp:sql/user:User::u{i}", "gcp:sql/user:User")
                              for i in range(25)] + [Change("create", "urn:pulumi:dev.x::tenancy::gcp:storage/bucket:Bucket::b",
                                                            "gcp:storage/bucket:Bucket")])
    assert deploy.Outcome("dev.x", "ok", many).lines() == [
        "dev.x: ok: 26 create", "  +  create 26 resources: 25 gcp:sql/user:User, 1 gcp:storage/bucket:Bucket"]
    few = OpResult("dev.x", [Change("update", "urn:pulumi:dev.x::tenancy::kubernetes:core/v1:ConfigMap::directory-configmap",
                                    "kubernetes:core/v1:ConfigMap", ("data", "metadata", "metadata.labels"))])
    assert deploy.resource_lines(few) == [
        "  ~  update kubernetes:core/v1:ConfigMap directory-configmap (changed: data, metadata.labels)"]


def test_changed_since_touches_only_changed_stacks(tmp_path, catalog):
    path = catalog_repo_at(tmp_path)
    path.write_text(path.read_text().replace("      cpu: 8\n", "      cpu: 12\n"))
    engine = OfflineEngine(tmp_path / "state", "dev")
    deploy.deploy(engine, catalog, "dev", mode="up")
    engine.calls.clear()
    outcomes = deploy.deploy(engine, load_catalog(path), "dev", mode="up", changed_since="HEAD")
    assert [o.stack for o in outcomes] == ["dev.pied-piper"]
    assert engine.calls == [("preview", "dev.pied-piper"), ("up", "dev.pied-piper")]


def test_a_failed_platform_update_skips_the_tenants(tmp_path, catalog):
    class Failing(OfflineEngine):
        def up(self, stack, catalog):
            if stack == "dev":
                from tenancy.engine import EngineError
                raise EngineError("quota exceeded")
            return super().up(stack, catalog)

    outcomes = deploy.deploy(Failing(tmp_path / "s", "dev"), catalog, "dev", mode="up")
    assert outcomes[0].line() == "dev: failed: quota exceeded"
    assert [o.stack for o in outcomes[1:]] == [*PLATFORM_STACKS[1:], *SAMPLE_STACKS]
    assert {o.status for o in outcomes[1:]} == {"skipped"}


def test_tenant_stack_before_platform_is_refused_up_front(tmp_path, catalog):
    engine = OfflineEngine(tmp_path / "s", "dev")
    with pytest.raises(deploy.NotDeployed) as exc:
        deploy.deploy(engine, catalog, "dev", mode="up", tenants=["stark"])
    # a namespace tenant needs the global stack and its cell, and the cell its identity shard: each is named
    assert str(exc.value) == ("dev.stark reads dev, which has never been deployed, and it is not in this rollout; "
                              "dev.stark reads dev.identity-1, which has never been deployed, and it is not in this "
                              "rollout; dev.stark reads dev.cell-1, which has never been deployed, and it is not in "
                              "this rollout; nothing was changed")
    assert exc.value.outside == ["dev", "dev.identity-1", "dev.cell-1"] and exc.value.exit_code == 2
    assert [c for c in engine.calls if c[0] in ("preview", "up")] == [], "refused before anything ran"
    with pytest.raises(deploy.NotDeployed) as exc:      # a dedicated tenant reads the global stack alone
        deploy.deploy(engine, catalog, "dev", mode="up", tenants=["acme"])
    assert str(exc.value) == ("dev.acme reads dev, which has never been deployed, and it is not in this rollout; "
                              "nothing was changed")
    assert exc.value.outside == ["dev"]
    assert [c for c in engine.calls if c[0] in ("preview", "up")] == [], "refused before anything ran"
    # a preview deploys nothing: it says which stacks wait for the platform instead of failing them
    outcomes = deploy.deploy(engine, catalog, "dev", mode="preview")
    assert [(o.stack, o.status) for o in outcomes] == [("dev", "ok"), *((s, "skipped") for s in PLATFORM_STACKS[1:]),
                                                       *((s, "skipped") for s in SAMPLE_STACKS)]
    said = {o.stack: o.message for o in outcomes}
    assert said["dev.identity-1"] == ("reads dev, which has never been deployed: a preview deploys nothing, so this "
                                      "stack is previewed once it is up (`tenancy plan` shows it now)")
    assert said["dev.cell-1"] == said["dev.pool-1"] == "platform stack dev.identity-1 skipped"
    assert said["dev.stark"] == ("reads dev, dev.identity-1, dev.cell-1, which have never been deployed: a preview "
                                 "deploys nothing, so this stack is previewed once they are up (`tenancy plan` shows "
                                 "it now)")
    assert said["dev.acme"] == said["dev.identity-1"]
    assert engine.calls == [("preview", "dev")] and engine.stacks() == [], "nothing was deployed"


# ------------------------------------------------------------------------------------- Automation API

class RecordingCommand(PulumiCommand):
    """Stands in for the Pulumi CLI: records every call, answers like the CLI does."""

    def __init__(self, events: list[dict] | None = None):
        self.command = "pulumi"
        self.version = VersionInfo.parse("3.200.0")  # file-based event log
        self.calls: list[list[str]] = []
        self.envs: list[dict] = []
        self.events = events or []

    def run(self, args, cwd, additional_env, on_output=None, on_error=None):
        self.calls.append(list(args))
        self.envs.append(dict(additional_env))
        if "--event-log" in args:
            log = args[args.index("--event-log") + 1]
            with open(log, "a") as f:
                for i, ev in enumerate([*self.events, {"summaryEvent": {"resourceChanges": {"same": 1}}}]):
                    f.write(json.dumps({"sequence": i, "timestamp": 0, **ev}) + "\n")
                f.write(json.dumps({"sequence": 99, "timestamp": 0, "cancelEvent": {}}) + "\n")
        if args[:2] == ["stack", "output"]:
            return CommandResult(stdout='{"bucket": "dev-stark-uploads"}', stderr="", code=0)
        if args[:2] == ["stack", "history"]:
            return CommandResult(stdout=json.dumps([{"kind": "update", "startTime": "2026-01-01T00:00:00.000Z",
                                                      "endTime": "2026-01-01T00:01:00.000Z", "message": "", "result": "succeeded",
                                                      "environment": {}, "config": {}, "resourceChanges": {"same": 1}}]),
                                 stderr="", code=0)
        return CommandResult(stdout="", stderr="", code=0)


def _without_volatile(args: list[str]) -> list[str]:
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
            out.append("<path>")
            continue
        if a in ("--event-log",):
            skip = True
        out.append(a)
    return out


def test_automation_engine_sends_the_expected_cli_arguments(tmp_path, catalog):
    cmd = RecordingCommand()
    engine = AutomationEngine(ROOT, ROOT / "policy", command=cmd, pulumi_home=tmp_path / "home")
    engine.preview("dev.stark", catalog)
    engine.up("dev.stark", catalog)
    calls = [_without_volatile(c) for c in cmd.calls]
    assert calls[0] == ["stack", "select", "--stack", "dev.stark"]
    preview = next(c for c in calls if c[0] == "preview")
    assert preview[:2] == ["preview", "--yes"] or preview[0] == "preview"
    assert ["--policy-pack", str(ROOT / "policy")] == preview[preview.index("--policy-pack"):preview.index("--policy-pack") + 2]
    assert preview[-2:] == ["--stack", "dev.stark"] and "--event-log" in preview
    up = next(c for c in calls if c[0] == "up")
    assert "--yes" in up and "--skip-preview" in up and up[-2:] == ["--stack", "dev.stark"]
    assert ["--policy-pack", str(ROOT / "policy")] == up[up.index("--policy-pack"):up.index("--policy-pack") + 2]
    assert ["stack", "output", "--json", "--show-secrets", "--stack", "dev.stark"] in calls
    # each worker has its own PULUMI_HOME; the program sees the catalogue it must build
    env = cmd.envs[-1]
    assert env["PULUMI_HOME"].startswith(str(engine._tmp)) and Path(env["TENANCY_CATALOG"]).exists()


def test_automation_engine_hands_the_program_its_deployed_placements(tmp_path, catalog):
    import dataclasses

    cmd = RecordingCommand()
    engine = AutomationEngine(ROOT, ROOT / "policy", command=cmd, pulumi_home=tmp_path / "home")
    placed = {"stark": {"cell": "cell-1", "dataProject": "tenancy-dev-482913"}, "globex": {"poolShard": "pool-1"}}
    engine.up("dev.cell-1", dataclasses.replace(catalog, placements=placed))   # the cell places its tenants
    env = cmd.envs[-1]
    assert json.loads(Path(env["TENANCY_PLACEMENTS"]).read_text()) == placed


def test_automation_engine_maps_preview_events_to_changes(tmp_path, catalog):
    urn = "urn:pulumi:dev.stark::tenancy::tenancy:gcp:PostgresInstance$gcp:sql/databaseInstance:DatabaseInstance::postgres-1-instance"
    cmd = RecordingCommand(events=[{"resourcePreEvent": {"metadata": {
        "op": "replace", "urn": urn, "type": "gcp:sql/databaseInstance:DatabaseInstance", "provider": "",
        "diffs": ["region", "settings"], "keys": ["region"]}}}])
    engine = AutomationEngine(ROOT, ROOT / "policy", command=cmd, pulumi_home=tmp_path / "home")
    result = engine.preview("dev.stark", catalog)
    assert [(c.op, c.urn) for c in result.destructive()] == [("replace", urn)]
    assert deploy.resource_lines(result) == ["  +- replace gcp:sql/databaseInstance:DatabaseInstance postgres-1-instance "
                                             "(replaced because region changed; also changed: settings)"]


class NoStacks(RecordingCommand):
    """A state backend without the stack: `stack select` fails as the CLI does."""

    def run(self, args, cwd, additional_env, on_output=None, on_error=None):
        if args[:2] == ["stack", "select"]:
            from pulumi.automation.errors import create_command_error

            self.calls.append(list(args))
            raise create_command_error(CommandResult(stdout="", stderr=f"error: no stack named '{args[-1]}' found", code=255))
        return super().run(args, cwd, additional_env, on_output, on_error)


def test_a_preview_selects_existing_stacks_and_never_creates_one(tmp_path, catalog):
    from tenancy.engine import StackMissing

    cmd = NoStacks()
    engine = AutomationEngine(ROOT, ROOT / "policy", command=cmd, pulumi_home=tmp_path / "home")
    with pytest.raises(StackMissing, match=r"^stack 'dev.stark' does not exist yet: a preview never creates a stack"):
        engine.preview("dev.stark", catalog)
    assert cmd.calls == [["stack", "select", "--stack", "dev.stark"]], "no `stack init`, no preview"
    engine.up("dev.stark", catalog)             # an update creates it
    assert ["stack", "init", "dev.stark"] in cmd.calls


def test_automation_engine_destroy_releases_only_the_named_resources(tmp_path, catalog):
    cmd = RecordingCommand()
    engine = AutomationEngine(ROOT, ROOT / "policy", command=cmd, pulumi_home=tmp_path / "home")
    db = "urn:pulumi:dev.wayne::tenancy::gcp:sql/databaseInstance:DatabaseInstance::postgres-1-instance"
    bucket = "urn:pulumi:dev.wayne::tenancy::gcp:storage/bucket:Bucket::uploads-bucket"
    engine.preview_destroy("dev.wayne", catalog)
    engine.destroy("dev.wayne", catalog, release=[db, bucket])
    ops_ = [" ".join(c[:2]) if c[0] == "state" else c[0] for c in cmd.calls if c[0] != "stack"]
    assert ops_ == ["destroy", "state unprotect", "state unprotect", "destroy"]
    preview = [c for c in cmd.calls if c[0] == "destroy"][0]
    assert "--preview-only" in preview
    assert [c for c in cmd.calls if c[0] == "state"] == [
        ["state", "unprotect", db, "--yes", "--stack", "dev.wayne"],
        ["state", "unprotect", bucket, "--yes", "--stack", "dev.wayne"]]
    assert not any("--all" in c for c in cmd.calls), "protection is never released wholesale"
    final = [c for c in cmd.calls if c[0] == "destroy"][-1]
    assert "--preview-only" not in final and final[-2:] == ["--stack", "dev.wayne"]


def test_parallel_workers_get_separate_pulumi_homes(tmp_path, catalog):
    cmd = RecordingCommand()
    engine = AutomationEngine(ROOT, ROOT / "policy", command=cmd, pulumi_home=tmp_path / "home")
    barrier = threading.Barrier(3)

    def work(stack):
        barrier.wait()
        engine.preview(stack, catalog)

    threads = [threading.Thread(target=work, args=(s,)) for s in ("dev.stark", "dev.wayne", "dev.acme")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    homes = {e["PULUMI_HOME"] for e in cmd.envs}
    assert len(homes) == 3


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("pulumi") is None, reason="needs the Pulumi CLI on PATH")
def test_real_cli_preview_of_the_platform_stack(tmp_path, catalog):
    subprocess.run(["pulumi", "login", f"file://{tmp_path}"], check=True)
    engine = AutomationEngine(ROOT, ROOT / "policy", env_vars={"PULUMI_CONFIG_PASSPHRASE": "test"})
    result = engine.preview("dev", catalog)
    assert result.changes
