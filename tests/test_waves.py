"""Rollouts in waves with the offline engine: declared order, a pause and a health gate between waves,
halting on the first failed wave, resuming with --from-wave."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tenancy.catalog import load_catalog, with_tenant
from tenancy.engine import EngineError, OfflineEngine
from tenancy.errors import ConfigError
from tenancy.lifecycle import deploy, waves
from tests.conftest import ROOT

WAVES = """version: 1
pause_seconds: 300
waves:
  - {name: canary, tenants: [stark]}
  - {name: pool, platform: true}
  - {name: namespace, models: [namespace]}
  - {name: dedicated, models: [dedicated]}
environments:
  qa: {pause_seconds: 5}
"""


# dev as shipped: the global stack and one unit of each kind, in the order they deploy
PLATFORM = ["dev", "dev.identity-1", "dev.cell-1", "dev.pool-1"]


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(ROOT / "tenants.yaml")


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "rollout.yaml"
    path.write_text(WAVES)
    return waves.load(path, "dev")


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, catalog):
    """A state directory where every stack of the sample catalogue is deployed (copied per test)."""
    state = tmp_path_factory.mktemp("deployed")
    deploy.deploy(OfflineEngine(state, "dev"), catalog, "dev", mode="up")
    return state


@pytest.fixture
def engine(tmp_path, deployed):
    import shutil

    shutil.copytree(deployed, tmp_path / "state")
    return Failing(tmp_path / "state", "dev")


class Failing(OfflineEngine):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.fail: set[str] = set()

    def up(self, stack, catalog):
        if stack in self.fail:
            raise EngineError(f"{stack}: googleapi: Error 403: quota exceeded")
        return super().up(stack, catalog)


def test_the_committed_rollout_file_is_valid(catalog):
    committed = waves.load(ROOT / "rollout.yaml", "prod")
    assert [w.name for w in committed.waves] == ["canary", "pool", "namespace", "dedicated"]
    assert committed.pause_seconds == 300 and committed.health.endpoints is True
    assert waves.load(ROOT / "rollout.yaml", "dev").pause_seconds == 0, "environments override keys"
    units = ["prod.identity-1", "prod.cell-1", "prod.pool-1"]
    plan = waves.assign(committed, catalog, "prod", ["prod", *units, "prod.pied-piper", "prod.stark", "prod.wayne",
                                                     "prod.acme"])
    assert [(w.number, w.name, w.stacks) for w in plan] == [
        (1, "canary", ["prod.stark"]), (2, "pool", ["prod", *units]), (3, "namespace", ["prod.pied-piper", "prod.wayne"]),
        (4, "dedicated", ["prod.acme"])]


def test_without_a_file_the_platform_goes_first_then_the_tenants(catalog, tmp_path):
    spec = waves.load(tmp_path / "absent.yaml", "dev")
    assert spec is waves.DEFAULT
    plan = waves.assign(spec, catalog, "dev", [*PLATFORM, "dev.stark", "dev.acme"])
    assert [(w.name, w.stacks) for w in plan] == [("platform", PLATFORM), ("tenants", ["dev.stark", "dev.acme"])]
    with pytest.raises(ConfigError, match=r"absent.yaml: file not found; pass --waves FILE"):
        waves.load(tmp_path / "absent.yaml", "dev", required=True)


def test_stacks_no_wave_selects_go_last_and_numbering_is_stable(catalog, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("version: 1\nwaves:\n  - {name: canary, tenants: [acme]}\n  - {name: pool, platform: true}\n")
    plan = waves.assign(waves.load(path, "dev"), catalog, "dev", ["dev.stark", "dev.acme"])
    assert [(w.number, w.name, w.stacks) for w in plan] == [(1, "canary", ["dev.acme"]), (2, "pool", []),
                                                           (3, "remaining", ["dev.stark"])]


def test_bad_rollout_files_name_the_key_and_the_fix(catalog, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("version: 1\npause_seconds: -1\nwaves:\n  - {name: canary, tenant: [stark]}\n  - {name: Pool, models: [pooled]}\n")
    with pytest.raises(ConfigError) as exc:
        waves.load(path, "dev")
    lines = str(exc.value).splitlines()
    assert f"{path}: pause_seconds: Input should be greater than or equal to 0" in lines
    assert f"{path}: waves.0.tenant: Extra inputs are not permitted" in lines
    assert any(l.startswith(f"{path}: waves.1.name: String should match pattern") for l in lines)
    assert f"{path}: waves.1.models.0: Input should be 'namespace' or 'dedicated'" in lines
    path.write_text("version: 1\nwaves:\n  - {name: canary, tenants: [strak, globex]}\n")
    with pytest.raises(ConfigError) as exc:
        waves.assign(waves.load(path, "dev"), catalog, "dev", ["dev"])
    assert str(exc.value).splitlines() == [
        "rollout.yaml: waves[0] 'canary': tenant 'strak' is not in the catalogue; did you mean 'stark'?",
        "rollout.yaml: waves[0] 'canary': tenant 'globex' has no stack of its own (pooled, active); it rolls out with "
        "its pool shard's stack"]


def test_a_failing_wave_halts_the_rollout(engine, catalog, spec):
    changed = with_tenant(with_tenant(catalog, "stark", limits={"api_rate_limit": 500}), "wayne", limits={"api_rate_limit": 500})
    engine.fail = {"dev.wayne"}
    engine.calls.clear()
    pauses = []
    result = deploy.rollout(engine, changed, "dev", mode="up", waves=spec, sleep=pauses.append, parallel=2)
    status = {o.stack: (o.status, o.message) for o in result.outcomes}
    assert {status[s][0] for s in ("dev.stark", *PLATFORM, "dev.pied-piper")} == {"ok"}
    assert status["dev.wayne"] == ("failed", "dev.wayne: googleapi: Error 403: quota exceeded")
    for s in ("dev.acme", "dev.cyberdyne"):
        assert status[s] == ("skipped", "wave 4/4 'dedicated' not started: the rollout halted at wave 3")
    assert (result.halted.wave, result.halted.name) == (3, "namespace")
    assert result.halted.reason == "dev.wayne failed: dev.wayne: googleapi: Error 403: quota exceeded"
    assert pauses == [300, 300], "a pause after the canary and after the pool wave, none after the failed wave"
    touched = [s for _, s in engine.calls]
    assert touched[:2] == ["dev.stark", "dev.stark"], "canary first"
    assert touched[2:10] == [s for s in PLATFORM for _ in ("preview", "up")], "then the pool: the platform-side stacks in order"
    assert "dev.acme" not in touched and "dev.cyberdyne" not in touched


def test_resuming_from_the_halted_wave_skips_the_waves_before(engine, catalog, spec):
    engine.calls.clear()
    result = deploy.rollout(engine, catalog, "dev", mode="up", waves=spec, from_wave=3, sleep=lambda s: None)
    assert result.halted is None
    status = {o.stack: (o.status, o.message) for o in result.outcomes}
    assert status["dev.stark"] == ("skipped", "wave 1/4 'canary' skipped (--from-wave 3)")
    assert {s: status[s] for s in PLATFORM} == {s: ("skipped", "wave 2/4 'pool' skipped (--from-wave 3)") for s in PLATFORM}
    assert {s for _, s in engine.calls} == {"dev.pied-piper", "dev.wayne", "dev.acme", "dev.cyberdyne"}
    with pytest.raises(ConfigError, match=r"--from-wave 5: this rollout has waves 1 to 4 \(1 canary, 2 pool, 3 namespace, 4 dedicated\)"):
        deploy.rollout(engine, catalog, "dev", mode="up", waves=spec, from_wave=5)


class Recording:
    def __init__(self, problems_after: dict[int, list[str]]):
        self.problems_after = problems_after
        self.seen = []

    def check(self, wave, outputs, catalog, env):
        self.seen.append((wave.number, sorted(outputs)))
        return self.problems_after.get(wave.number, [])


def test_a_failing_health_gate_halts_before_the_next_wave(engine, catalog, spec):
    gate = Recording({2: ["https://app.dev.saas-example.com/healthz answered 503 (3 attempt(s))"]})
    engine.calls.clear()
    result = deploy.rollout(engine, catalog, "dev", mode="up", waves=spec, gate=gate, sleep=lambda s: None)
    assert gate.seen == [(1, ["dev.stark"]), (2, sorted(PLATFORM))]
    assert result.halted.wave == 2
    assert result.halted.reason == "health gate: https://app.dev.saas-example.com/healthz answered 503 (3 attempt(s))"
    assert {s for _, s in engine.calls} == {"dev.stark", *PLATFORM}


def test_health_gate_checks_outputs_and_the_directory_hosts(engine, catalog):
    answers = {"https://app.dev.saas-example.com/healthz": [503, 200], "https://stark.dev.saas-example.com/healthz": [200]}
    fetched, slept = [], []

    def fetch(url, timeout):
        fetched.append((url, timeout))
        return answers[url].pop(0)

    gate = waves.HealthGate(engine, waves.HealthSpec(timeout_seconds=4), fetch=fetch, sleep=slept.append)
    pool = waves.Wave(2, "pool", PLATFORM, 0)
    assert gate.check(pool, {}, catalog, "dev") == []
    assert fetched == [("https://app.dev.saas-example.com/healthz", 4), ("https://app.dev.saas-example.com/healthz", 4)]
    assert slept == [5.0], "a retry after a back-off"
    tenants = waves.Wave(3, "namespace", ["dev.stark", "dev.wayne"], 0)
    fetched.clear()
    assert gate.check(tenants, {}, catalog, "dev") == []
    assert fetched == [("https://stark.dev.saas-example.com/healthz", 4)], "wayne is suspended: its routes are removed"
    down = waves.HealthGate(engine, waves.HealthSpec(attempts=2), fetch=lambda u, t: (_ for _ in ()).throw(OSError("timed out")))
    assert down.check(tenants, {}, catalog, "dev") == ["https://stark.dev.saas-example.com/healthz unreachable: timed out (2 attempt(s))"]
    # outputs: each unit's directory must list every tenant the catalogue places in that unit
    only_outputs = waves.HealthGate(engine, waves.HealthSpec(endpoints=False))
    assert only_outputs.check(pool, {}, catalog, "dev") == []
    cell, shard = engine.outputs("dev.cell-1"), engine.outputs("dev.pool-1")
    without_stark = {k: v for k, v in json.loads(cell["tenantDirectory"]).items() if k != "stark"}
    without_globex = {k: v for k, v in json.loads(shard["tenantDirectory"]).items() if k != "globex"}
    assert only_outputs.check(pool, {"dev.cell-1": {**cell, "tenantDirectory": json.dumps(without_stark)},
                                     "dev.pool-1": {**shard, "tenantDirectory": json.dumps(without_globex)}},
                              catalog, "dev") == ["dev.cell-1: the tenant directory lacks 1 tenant(s): stark",
                                                  "dev.pool-1: the tenant directory lacks 1 tenant(s): globex"]
    assert only_outputs.check(tenants, {"dev.stark": {"tenant": "stark", "hostnames": []}}, catalog, "dev") == [
        "dev.stark: outputs do not describe tenant 'stark' (tenant='stark', hostnames=[])"]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "tenancy", *args], capture_output=True, text=True, cwd=ROOT)


def test_the_command_halts_and_says_how_to_resume(tmp_path, deployed):
    import shutil

    shutil.copytree(deployed, tmp_path / "state")
    text = (ROOT / "tenants.yaml").read_text()
    head = tmp_path / "tenants.yaml"
    head.write_text(text.replace("  - id: stark\n", "  - id: stark\n    region: us-east1\n", 1))   # stateful replaces
    (tmp_path / "rollout.yaml").write_text(WAVES)
    res = run_cli("up", "--engine", "offline", "--state", str(tmp_path / "state"), "--tenants", str(head), "--pause", "0")
    assert res.returncode == 1, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("dev.stark: refused: would replace gcp:")
    assert "halted at wave 1/4 'canary': dev.stark refused: would replace gcp:" in res.stdout
    assert lines[-1] == (f"to resume once it is fixed: tenancy up --engine offline --state {tmp_path / 'state'} "
                         f"--tenants {head} --pause 0 --from-wave 1")
    assert "wave 1/4 'canary': 1 stack(s)" in res.stderr and "Traceback" not in res.stderr
    bad = run_cli("up", "--engine", "offline", "--state", str(tmp_path / "state"), "--tenants", str(head), "--stack", "dev.nope")
    assert bad.returncode == 2
    assert "error: stack 'dev.nope' is not a stack of environment dev" in bad.stderr


# ------------------------------------------------------------------------------------------- a first rollout

def test_the_first_up_of_a_fresh_state_with_the_shipped_files_succeeds(tmp_path):
    """rollout.yaml's canary (stark) reads the global stack and its cell (which reads the identity shard), declared
    in the next wave: on a fresh state they go first in the canary's wave; once deployed each keeps its own wave."""
    state = tmp_path / "state"
    res = run_cli("up", "--engine", "offline", "--state", str(state))       # tenants.yaml and rollout.yaml beside it
    assert res.returncode == 0, res.stdout + res.stderr
    assert "wave 1/4 'canary': 4 stack(s)" in res.stderr and "wave 2/4 'pool': 1 stack(s)" in res.stderr
    moved = [line.split(": ", 1)[1] for line in res.stderr.splitlines() if "moved from wave 2" in line]
    assert moved == [f"{s} first, moved from wave 2: it has never been deployed and dev.stark reads it"
                     for s in ("dev", "dev.identity-1", "dev.cell-1")]
    out = res.stdout.splitlines()
    # (the global stack's resources: network, DNS zone, Identity Platform config, the access-log bucket and its grant
    # to Cloud Storage's logger, the registry database, the deployers' identities)
    assert out[0] == "dev: ok: 26 create" and out[1].startswith("  +  create 26 resources: ")
    stacks = [line.split(":")[0] for line in out if not line.startswith(" ")][:-1]
    assert stacks == ["dev", "dev.identity-1", "dev.cell-1", "dev.stark", "dev.pool-1", "dev.pied-piper", "dev.wayne",
                      "dev.acme", "dev.cyberdyne"], "what the canary reads, the canary, then the waves as declared"
    assert out[-1] == "9 stack(s): 9 ok, 0 refused, 0 failed, 0 skipped; 0 tenant(s) pending a lifecycle command"
    assert sorted(p.stem for p in state.glob("*.json")) == sorted(stacks)
    # again, with tenants.yaml asking to resume a suspended pooled tenant: held for `tenancy resume`, and counted
    # as a tenant, not as a stack of its own
    text = (ROOT / "tenants.yaml").read_text()
    edited = tmp_path / "tenants.yaml"
    edited.write_text(text.replace("    state: suspended                  # data kept, the application refuses its requests\n", ""))
    assert edited.read_text() != text
    (tmp_path / "rollout.yaml").write_text((ROOT / "rollout.yaml").read_text())
    again = run_cli("up", "--engine", "offline", "--state", str(state), "--tenants", str(edited))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "moved from" not in again.stderr and "wave 1/4 'canary': 1 stack(s)" in again.stderr
    assert "wave 2/4 'pool': 4 stack(s)" in again.stderr
    lines = again.stdout.splitlines()
    assert lines[:5] == ["dev.stark: ok: no changes", *(f"{s}: ok: no changes" for s in PLATFORM)], "canary first again"
    assert "dev.vandelay" not in again.stdout
    assert lines[-2:] == [
        "pending: tenant 'vandelay' is suspended in the deployment and active in tenants.yaml; a deploy does not change "
        f"a tenant's state; run: tenancy resume vandelay --env dev --tenants {edited} --engine offline --state {state}",
        "9 stack(s): 9 ok, 0 refused, 0 failed, 0 skipped; 1 tenant(s) pending a lifecycle command"]


def test_the_first_up_with_two_identity_shards_deploys_what_the_canary_reads_first(monkeypatch, tmp_path, capsys):
    from tenancy import cli
    from tests.test_cells import cells_config

    cells_config(monkeypatch, **{"tenancy:identityShards": "2"})
    state = tmp_path / "state"
    code = cli.main(["up", "--engine", "offline", "--state", str(state), "--tenants", str(ROOT / "tenants.yaml")])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    # stark (namespace) reads the global stack and its cell; the cell reads the identity shards
    assert "wave 1/4 'canary': 5 stack(s)" in err and "wave 2/4 'pool': 1 stack(s)" in err
    moved = [line.split(": ", 1)[1] for line in err.splitlines() if "moved from wave 2" in line]
    assert moved == [f"{s} first, moved from wave 2: it has never been deployed and dev.stark reads it"
                     for s in ("dev", "dev.identity-1", "dev.identity-2", "dev.cell-1")]
    stacks = [line.split(":")[0] for line in out.splitlines() if not line.startswith(" ")][:-1]
    assert stacks[:5] == ["dev", "dev.identity-1", "dev.identity-2", "dev.cell-1", "dev.stark"], "what it reads goes first"
    assert stacks[5] == "dev.pool-1", "the pool shard keeps its wave"
    assert out.splitlines()[-1] == "10 stack(s): 10 ok, 0 refused, 0 failed, 0 skipped; 0 tenant(s) pending a lifecycle command"


def test_what_a_rollout_cannot_deploy_first_is_refused_with_the_command_that_does(tmp_path):
    state = tmp_path / "state"
    res = run_cli("up", "--engine", "offline", "--state", str(state), "--tenant", "stark")
    assert res.returncode == 2 and res.stdout == ""
    # stark (namespace) reads the global stack and its cell, and the cell reads the identity shard
    assert res.stderr.splitlines() == [
        "error: dev.stark reads dev, which has never been deployed, and it is not in this rollout; dev.stark reads "
        "dev.identity-1, which has never been deployed, and it is not in this rollout; dev.stark reads dev.cell-1, "
        "which has never been deployed, and it is not in this rollout; nothing was changed",
        f"deploy them first: tenancy up --engine offline --state {state} --stack dev --stack dev.identity-1 "
        "--stack dev.cell-1; then run this command again"]
    assert not state.exists() or not list(state.glob("*.json"))
    res = run_cli("up", "--engine", "offline", "--state", str(state), "--from-wave", "3")
    assert res.returncode == 2
    skipped = "which has never been deployed, and it is in wave 2 'pool', which this run skips (--from-wave)"
    assert res.stderr.splitlines() == [
        f"error: dev.pied-piper reads dev, {skipped}; dev.pied-piper reads dev.identity-1, {skipped}; dev.pied-piper "
        f"reads dev.cell-1, {skipped}; nothing was changed",
        f"start at that wave: tenancy up --engine offline --state {state} --from-wave 2"]
    assert not list(state.glob("*.json"))
    first = run_cli("up", "--engine", "offline", "--state", str(state), "--stack", "dev", "--stack", "dev.identity-1",
                    "--stack", "dev.cell-1")   # the command it named
    assert first.returncode == 0, first.stdout + first.stderr
    assert sorted(p.stem for p in state.glob("*.json")) == ["dev", "dev.cell-1", "dev.identity-1"]
    then = run_cli("up", "--engine", "offline", "--state", str(state), "--tenant", "stark")
    assert then.returncode == 0 and then.stdout.splitlines()[0].startswith("dev.stark: ok: "), then.stdout + then.stderr


def test_bring_forward_moves_only_what_was_never_deployed(catalog, spec):
    plan = waves.assign(spec, catalog, "dev", ["dev", "dev.stark", "dev.pied-piper", "dev.acme"])
    needs = lambda s: ["dev"] if "." in s else []     # noqa: E731
    early, unready = waves.bring_forward(plan, needs, lambda s: True)
    assert (early, unready) == ([], []) and [w.stacks for w in plan][:2] == [["dev.stark"], ["dev"]]
    asked = []
    early, unready = waves.bring_forward(plan, needs, lambda s: asked.append(s) or False)
    assert early == [waves.Early("dev", 1, 2, "dev.stark")] and unready == []
    assert [w.stacks for w in plan] == [["dev.stark", "dev"], [], ["dev.pied-piper"], ["dev.acme"]]
    assert asked == ["dev"], "asked once, about the stack out of order only"
