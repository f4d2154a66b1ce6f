"""Pulumi Kubernetes Operator: the Stack objects generated from the catalogue, checked against the operator's
own CRD, their names at the 42-character limit, the settings, and the install in the platform stack."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from stacks.config import load_stack_config
from tenancy.catalog import load_catalog, parse_catalog
from tenancy.errors import ConfigError
from tenancy.operator import schema
from tenancy.operator.settings import CHART, CHART_VERSION, OperatorSettings
from tenancy.operator.stacks import FleetStack, check_names, fleet, fleet_objects, object_name, stack_object
from tests.conftest import ROOT, of_type, stack_of

SHA = "0123456789abcdef0123456789abcdef01234567"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@pytest.fixture(scope="module")
def prod():
    return OperatorSettings.load("prod")


@pytest.fixture(scope="module")
def objects(prod):
    return {o["metadata"]["annotations"]["tenancy.io/stack"]: o for o in fleet_objects(load_catalog(ROOT / "tenants.yaml"), prod, SHA)}


def test_the_crds_are_the_operators_own_release_unchanged():
    text = (ROOT / "schemas" / "pko" / "pulumi.com_stacks.yaml").read_text()
    shared = ROOT.parent / "shared" / "pko-crds" / "pulumi.com_stacks.yaml"
    if shared.exists():
        assert text == shared.read_text()
    assert "name: stacks.pulumi.com" in text and CHART_VERSION == "2.9.0"


def test_every_stack_object_of_the_fleet_validates_against_the_crd(objects):
    assert list(objects) == ["prod", "prod.pied-piper", "prod.stark", "prod.wayne", "prod.acme", "prod.cyberdyne"]
    for stack, obj in objects.items():
        assert schema.problems(obj) == [], stack
        assert (obj["apiVersion"], obj["kind"]) == ("pulumi.com/v1", "Stack")


def test_stack_objects_pin_the_commit_repository_backend_and_identity(objects):
    for stack, obj in objects.items():
        spec = obj["spec"]
        assert spec["stack"] == f"organization/tenancy/{stack}"
        assert spec["projectRepo"] == "https://github.com/saas-example/tenancy.git" and "repoDir" not in spec
        assert spec["commit"] == SHA and "branch" not in spec
        assert spec["backend"] == "gs://tenancy-prod-719304-pulumi-state"
        assert spec["secretsProvider"] == "passphrase"
        assert spec["envRefs"] == {"PULUMI_CONFIG_PASSPHRASE": {"type": "Secret", "secret": {"name": "pulumi-passphrase",
                                                                                              "key": "passphrase"}}}
        assert spec["serviceAccountName"] == "tenancy-deployer"
        assert spec["workspaceReclaimPolicy"] == "Delete", "idle workspace pods are the main cost at fleet size"
        assert spec["destroyOnFinalize"] is False, "deleting a Stack object must never destroy tenant data"
        assert obj["metadata"]["annotations"]["tenancy.io/holds-tenant-data"] == "true"
        ws = spec["workspaceTemplate"]["spec"]
        assert ws["securityProfile"] == "restricted" and ws["image"] == "pulumi/pulumi:3.272.0-nonroot"
        assert set(ws["resources"]["requests"]) == {"cpu", "memory", "ephemeral-storage"}, "without a disk request workspaces are evicted"
        assert obj["metadata"]["namespace"] == "pulumi-operator"


def test_tenant_stacks_wait_for_the_platform_and_the_platform_carries_its_config(objects):
    platform = objects["prod"]["spec"]
    assert "prerequisites" not in platform
    # the operator does not read stackConfigDir: the platform's config travels in the object
    assert platform["config"] == load_stack_config("prod") and platform["config"]["tenancy:gcpProject"] == "tenancy-prod-719304"
    assert platform["workspaceTemplate"]["spec"]["resources"]["requests"]["memory"] == "4Gi"
    for stack in ("prod.stark", "prod.acme"):
        spec = objects[stack]["spec"]
        assert spec["prerequisites"] == [{"name": "prod"}] and "config" not in spec
        assert spec["workspaceTemplate"]["spec"]["resources"]["requests"] == {"cpu": "500m", "memory": "1Gi",
                                                                              "ephemeral-storage": "2Gi"}
    acme = objects["prod.acme"]["metadata"]
    assert acme["name"] == "prod-acme"
    assert acme["labels"] == {"app.kubernetes.io/managed-by": "tenancy", "tenancy.io/environment": "prod",
                              "tenancy.io/stack-kind": "tenant", "tenancy.io/tenant": "acme", "tenancy.io/model": "dedicated"}


def test_the_crd_check_refuses_what_the_operator_would_refuse_or_prune(objects):
    obj = objects["prod.stark"]
    typo = {**obj, "spec": {**obj["spec"], "workspaceReclaimPolcy": "Delete"}}
    assert schema.problems(typo) == ["spec: Additional properties are not allowed ('workspaceReclaimPolcy' was unexpected)"]
    bad_enum = {**obj, "spec": {**obj["spec"], "workspaceReclaimPolicy": "Never"}}
    assert schema.problems(bad_enum) == ["spec.workspaceReclaimPolicy: 'Never' is not one of ['Retain', 'Delete']"]
    long = {**obj, "metadata": {**obj["metadata"], "name": "x" * 43}}
    assert schema.problems(long) == ["metadata.name: Stack name must be no more than 42 characters in length."]
    no_stack = {**obj, "spec": {k: v for k, v in obj["spec"].items() if k != "stack"}}
    assert schema.problems(no_stack) == ["spec: 'stack' is a required property"]
    with pytest.raises(schema.InvalidObject, match="Stack 'prod-stark' does not match the operator's CRD: spec: "):
        schema.validate(typo)


def test_long_tenant_ids_get_short_collision_free_names(prod):
    head = "a-tenant-with-a-very-long-identifier-abc"          # 40 characters shared by every id
    ids = [f"{head}{n:02d}" for n in range(30)] + [f"{head}-tail-{n}" for n in range(3)] + ["x" * 50, "x" * 49 + "y"]
    doc = {"version": 1, "tenants": [{"id": i, "name": i, "plan": "standard", "admin_email": "a@b.example"} for i in ids]}
    catalog = parse_catalog(yaml.safe_dump(doc))
    names = {}
    for env in ("prod", "staging123"):
        settings = OperatorSettings.from_config({**load_stack_config("prod"), "tenancy:environment": env}, env)
        for s in fleet(catalog, env):
            name = s.object_name
            assert len(name) <= 42 and DNS_LABEL.match(name), name
            assert name not in names, f"{s.stack} and {names.get(name)} share {name}"
            names[name] = s.stack
            assert object_name(s.stack) == name, "names are deterministic"
            if len(s.stack) > 42:
                assert re.fullmatch(r".+--[0-9a-f]{6}", name), name
            assert schema.problems(stack_object(s, settings, SHA)) == []
    assert names["prod"] == "prod" and len(names) == 2 * (len(ids) + 1)


def test_a_collision_between_future_stack_kinds_is_refused():
    with pytest.raises(ConfigError, match=r"stacks 'dev.cells.eu1' and 'dev.cells-eu1' would share the Stack object name "
                                          r"'dev-cells-eu1'; rename one of them"):
        check_names([FleetStack("dev.cells.eu1", "cell"), FleetStack("dev.cells-eu1", "tenant", "cells-eu1")])


def test_settings_name_each_missing_or_bad_key_and_the_fix():
    with pytest.raises(ConfigError) as exc:
        OperatorSettings.from_config({"tenancy:operator": "true"}, "dev")
    lines = str(exc.value).splitlines()
    assert lines[0] == ("stacks/Pulumi.dev.yaml: tenancy:operatorDeployer is required for the Pulumi Kubernetes Operator; "
                        "set it with `pulumi config set tenancy:operatorDeployer <value> -s dev` (the deploying identity, "
                        "e.g. deployer@<project>.iam.gserviceaccount.com)")
    assert [l.split(" is required")[0] for l in lines] == [f"stacks/Pulumi.dev.yaml: tenancy:{k}" for k in
                                                          ("operatorDeployer", "projectRepo", "stateBackend", "secretsProvider")]
    off = OperatorSettings.from_config({}, "dev")
    assert off.enabled is False and off.namespace == "pulumi-operator" and off.max_concurrent_reconciles == 25
    with pytest.raises(ConfigError, match="tenancy:projectRepo is required"):
        off.require_rollout()
    bad = {"tenancy:operator": "true", "tenancy:operatorDeployer": "deployer@gmail.com", "tenancy:projectRepo": "repo",
           "tenancy:stateBackend": "file:///tmp/state", "tenancy:secretsProvider": "rot13", "tenancy:repoDir": "../x"}
    with pytest.raises(ConfigError) as exc:
        OperatorSettings.from_config(bad, "dev")
    msg = str(exc.value)
    assert "tenancy:operatorDeployer 'deployer@gmail.com' is not a service account email" in msg
    assert "tenancy:projectRepo 'repo' is not a git URL" in msg
    assert "tenancy:stateBackend 'file:///tmp/state' must start with one of gs://" in msg
    assert "tenancy:secretsProvider 'rot13' must be passphrase or a key URL" in msg
    assert "tenancy:repoDir '../x' must be a path inside the repository" in msg
    with pytest.raises(ConfigError, match="tenancy:operator must be true or false, not 'yes'"):
        OperatorSettings.from_config({"tenancy:operator": "yes"}, "dev")


@pytest.fixture(scope="module")
def prod_platform():
    from tenancy.plan import _platform_config, _to_stack_plan, run_stack

    result, seconds = run_stack("prod", load_catalog(ROOT / "tenants.yaml"), _platform_config("prod"), {})
    return _to_stack_plan("prod", "platform", None, None, result, seconds).to_json()


def test_the_platform_stack_installs_the_operator_when_configured(prod_platform):
    assert prod_platform["violations"] == []
    [release] = [r for r in of_type(prod_platform, "kubernetes:helm.sh/v3:Release") if r["inputs"]["name"] == "pulumi-kubernetes-operator"]
    assert (release["inputs"]["chart"], release["inputs"]["version"]) == (CHART, "2.9.0")
    assert release["inputs"]["namespace"] == "pulumi-operator"
    values = release["inputs"]["values"]
    assert values["extraEnv"] == [{"name": "MAX_CONCURRENT_RECONCILES", "value": "25"}]
    assert values["podSecurityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [ns] = [r["inputs"] for r in of_type(prod_platform, "kubernetes:core/v1:Namespace") if r["inputs"]["metadata"]["name"] == "pulumi-operator"]
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    [ksa] = [r["inputs"] for r in of_type(prod_platform, "kubernetes:core/v1:ServiceAccount")
             if r["inputs"]["metadata"]["name"] == "tenancy-deployer"]
    assert ksa["metadata"]["namespace"] == "pulumi-operator"
    assert ksa["metadata"]["annotations"] == {"iam.gke.io/gcp-service-account": "deployer@tenancy-prod-719304.iam.gserviceaccount.com"}
    [wi] = [r["inputs"] for r in of_type(prod_platform, "gcp:serviceaccount/iAMMember:IAMMember")
            if r["inputs"]["member"].endswith("[pulumi-operator/tenancy-deployer]")]
    assert wi == {"serviceAccountId": "projects/tenancy-prod-719304/serviceAccounts/deployer@tenancy-prod-719304.iam.gserviceaccount.com",
                  "role": "roles/iam.workloadIdentityUser",
                  "member": "serviceAccount:tenancy-prod-719304.svc.id.goog[pulumi-operator/tenancy-deployer]"}
    [crb] = [r["inputs"] for r in of_type(prod_platform, "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding")]
    assert crb["roleRef"]["name"] == "system:auth-delegator"
    assert crb["subjects"] == [{"kind": "ServiceAccount", "name": "tenancy-deployer", "namespace": "pulumi-operator"}]


def test_the_operator_is_off_by_default(sample_plan):
    dev = stack_of(sample_plan[1], "dev")
    assert not [r for r in dev["resources"] if r["name"].startswith("pulumi-operator")]
    assert not [r for r in of_type(dev, "kubernetes:helm.sh/v3:Release") if r["inputs"]["name"] == "pulumi-kubernetes-operator"]
    assert OperatorSettings.load("dev").enabled is False


def test_manifests_command_writes_every_stack_object(tmp_path):
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    # --allow-dirty: this checkout may hold uncommitted work (the refusal has its own test)
    res = subprocess.run([sys.executable, "-m", "tenancy", "operator", "manifests", "--env", "prod", "--commit", "HEAD",
                          "--allow-dirty"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    docs = list(yaml.safe_load_all(res.stdout))
    assert [d["metadata"]["name"] for d in docs] == ["prod", "prod-pied-piper", "prod-stark", "prod-wayne", "prod-acme", "prod-cyberdyne"]
    assert {d["spec"]["commit"] for d in docs} == {sha}
    assert all(schema.problems(d) == [] for d in docs)
    assert res.stderr.strip().splitlines()[-1] == ("6 Stack object(s) at commit " + sha[:12] + ", each valid against the "
                                                   "operator's CRD")
    bad = subprocess.run([sys.executable, "-m", "tenancy", "operator", "manifests", "--env", "dev"], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "tenancy:operatorDeployer is required" in bad.stderr and "Traceback" not in bad.stderr
