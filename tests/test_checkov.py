"""The Checkov gate of `make test`: the allow-list is short and reasoned, and the scan fails on a planted
privileged Pod and on a planted finding in the plan's Google Cloud resources converted to Terraform's plan format
(running Checkov itself when it is installed; under CI a missing Checkov is a failure)."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT, of_type, stack_of

SCRIPT = ROOT / "scripts" / "checkov-scan.py"
CHECKOV = ROOT / ".tools" / "checkov" / "bin" / "checkov"

PRIVILEGED_POD = """\
apiVersion: v1
kind: Pod
metadata: {name: planted, namespace: tenant-x}
spec:
  automountServiceAccountToken: false
  securityContext: {runAsNonRoot: true, runAsUser: 10001, seccompProfile: {type: RuntimeDefault}}
  containers:
  - name: c
    image: docker.io/library/postgres@sha256:64583b3cb4f2010277bdd9749456de78e5c36f8956466ba14b0b96922e510950
    securityContext:
      privileged: true
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      runAsNonRoot: true
      capabilities: {drop: [ALL]}
    resources: {requests: {cpu: 10m, memory: 16Mi}, limits: {cpu: 100m, memory: 64Mi}}
    livenessProbe: {exec: {command: ["true"]}}
    readinessProbe: {exec: {command: ["true"]}}
"""


def scan_module():
    spec = importlib.util.spec_from_file_location("checkov_scan", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve annotations through the module
    spec.loader.exec_module(mod)
    return mod


def needs_checkov():
    if not CHECKOV.exists():
        if os.environ.get("CI"):
            pytest.fail("Checkov is required under CI (`make checkov` installs it into .tools/checkov)")
        pytest.skip("Checkov is not installed (run `make checkov`)")


def run_scan(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT)


def test_committed_allowlist_entries_each_say_why():
    mod = scan_module()
    entries = mod.load_allowlist(mod.ALLOWLIST)
    raw = yaml.safe_load(mod.ALLOWLIST.read_text())["allow"]
    assert len(entries) == len(raw) <= 10, "the allow-list stays short"
    for e in entries:
        assert mod.CHECK_ID.match(e.check) and len(e.reason) >= mod.MIN_REASON, e


@pytest.mark.parametrize("text, message", [
    ("allow:\n  - check: CKV_K8S_16\n", "entry 1 (CKV_K8S_16): give a reason why the check does not apply"),
    ("allow:\n  - check: CKV_K8S_16\n    reason: n/a\n", "entry 1 (CKV_K8S_16): give a reason"),
    ("allow:\n  - check: privileged\n    reason: a long enough reason that says nothing\n", "'privileged' is not a Checkov check id"),
    ("allow:\n  - check: CKV_K8S_16\n    why: we like it\n", "keys are check, resource, reason"),
    ("- CKV_K8S_16\n", "expected a mapping with an 'allow' list"),
])
def test_bad_allowlist_is_bad_input(tmp_path, text, message):
    path = tmp_path / "allow.yaml"
    path.write_text(text)
    res = run_scan("--allowlist", str(path), "--manifests", str(tmp_path), "--no-workflows")
    assert res.returncode == 2
    assert res.stderr.startswith(f"checkov-scan: {path}: ") and message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


def test_missing_checkov_is_bad_input(tmp_path):
    res = run_scan("--checkov", str(tmp_path / "nope"), "--manifests", str(tmp_path))
    assert res.returncode == 2
    assert res.stderr.strip() == f"checkov-scan: Checkov not found at {tmp_path / 'nope'}; run `make checkov` " \
                                 "(installs 3.3.30 into .tools/checkov)"


def test_scan_fails_on_a_planted_privileged_pod_and_allowlist_entries_must_stay_live(tmp_path):
    needs_checkov()
    manifests = tmp_path / "manifests" / "dev.x"
    manifests.mkdir(parents=True)
    (manifests / "pod-tenant-x-planted.yaml").write_text(PRIVILEGED_POD)
    empty = tmp_path / "empty.yaml"
    empty.write_text("allow: []\n")
    res = run_scan("--manifests", str(tmp_path / "manifests"), "--no-workflows", "--allowlist", str(empty))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "CKV_K8S_16 Container should not be privileged: Pod.tenant-x.planted (/dev.x/pod-tenant-x-planted.yaml)" \
        in res.stdout
    # allow-listed with reasons, the finding passes -- but an entry matching nothing fails the scan
    allow = tmp_path / "allow.yaml"
    allow.write_text(yaml.safe_dump({"allow": [
        {"check": "CKV_K8S_16", "resource": "Pod.tenant-x.*", "reason": "a test pod planted to prove the allow-list"},
        {"check": "CKV2_K8S_6", "resource": "Pod.tenant-x.planted", "reason": "no NetworkPolicy is planted beside it"},
        {"check": "CKV_K8S_1", "reason": "stale: nothing in this directory triggers this check"},
    ]}))
    res = run_scan("--manifests", str(tmp_path / "manifests"), "--no-workflows", "--allowlist", str(allow))
    assert res.returncode == 1, res.stdout + res.stderr
    assert res.stdout.splitlines() == ["checkov-scan: 1 problem(s):",
                                       "  allow-list entry CKV_K8S_1 * matches no finding: remove it"]


def test_bad_plan_file_is_bad_input(tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"stacks": [{"name": "dev", "resources": [{"urn": "urn:x"}]}]}))
    res = run_scan("--plan", str(plan), "--no-workflows")
    assert res.returncode == 2
    assert res.stderr == f"checkov-scan: --plan {plan}: stacks[0] (dev).resources[0] (urn:x): 'type' is missing\n"


@pytest.fixture(scope="module")
def prod_plan(tmp_path_factory):
    """The real offline plan of prod: beside dev's resources, the operator's deployers (every allow-list entry)."""
    from tenancy import plan as planmod
    from tenancy.catalog import load_catalog

    out = tmp_path_factory.mktemp("prod")
    planmod.write(planmod.plan(load_catalog(ROOT / "tenants.yaml"), "prod", workers=2), out)
    return json.loads((out / "plan.json").read_text())


def test_scan_of_the_converted_plan_passes_on_the_real_plan_and_fails_on_a_planted_finding(prod_plan, tmp_path):
    """One Checkov run over two converted plans: the real one (every finding allow-listed, every entry live) and
    a copy of one tenant's stack whose bucket does not log access: exactly that finding fails the scan, and nothing
    of the real plan does."""
    needs_checkov()
    real, planted = tmp_path / "real" / "plan.json", tmp_path / "planted" / "plan.json"
    real.parent.mkdir()
    planted.parent.mkdir()
    real.write_text(json.dumps(prod_plan))
    stark = copy.deepcopy(stack_of(prod_plan, "prod.stark"))
    [bucket] = of_type(stark, "gcp:storage/bucket:Bucket")
    assert bucket["inputs"].pop("logging") == {"logBucket": "tenancy-prod-719304-prod-access-logs",
                                               "logObjectPrefix": "prod-stark-uploads"}
    planted.write_text(json.dumps({**prod_plan, "stacks": [stark]}))
    res = run_scan("--plan", str(real), "--plan", str(planted), "--no-workflows")
    assert res.returncode == 1, res.stdout + res.stderr
    assert res.stdout.splitlines() == [
        "checkov-scan: 1 problem(s):",
        "  CKV_GCP_62 Bucket should log access: google_storage_bucket.prod_stark__uploads-bucket "
        "(/2-planted-plan.tfplan.json)"]
