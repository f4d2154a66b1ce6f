"""The offline plan: the real stack programs under the recording runtime, written as DESIGN.md specifies."""

from __future__ import annotations

import json
import subprocess
import sys

import pulumi
import pulumi_gcp as gcp
import pytest
import yaml

from tenancy import plan as planmod
from tenancy.catalog import load_catalog, parse_catalog
from tenancy.errors import PlanError
from tenancy.recorder import DuplicateUrnError, run_program
from tests.conftest import ROOT, catalog_repo_at, of_type, stack_of

OPTION_KEYS = {"protect", "retainOnDelete", "provider", "dependsOn", "aliases", "additionalSecretOutputs"}


def test_plan_json_follows_the_design_shape(sample_plan):
    _, data, _ = sample_plan
    assert data["version"] == 1 and data["environment"] == "dev"
    names = [s["name"] for s in data["stacks"]]
    # the global stack, its unit stacks, then one stack per namespace/dedicated tenant that is not offboarded
    assert names == ["dev", "dev.identity-1", "dev.cell-1", "dev.pool-1", "dev.pied-piper", "dev.stark", "dev.wayne",
                     "dev.acme", "dev.cyberdyne"]
    kinds = {"dev": "platform", "dev.identity-1": "identity", "dev.cell-1": "cell", "dev.pool-1": "pool"}
    for s in data["stacks"]:
        assert set(s) >= {"name", "kind", "tenant", "model", "resources", "outputs", "violations"}
        assert s["kind"] == kinds.get(s["name"], "tenant")
        assert s["resources"], s["name"]
        for r in s["resources"]:
            assert set(r) == {"urn", "type", "name", "parent", "custom", "inputs", "options"}, r["urn"]
            assert OPTION_KEYS <= set(r["options"]), r["urn"]
        urns = [r["urn"] for r in s["resources"]]
        assert len(urns) == len(set(urns)), f"duplicate URNs in {s['name']}"
    acme = stack_of(data, "dev.acme")
    assert (acme["tenant"], acme["model"]) == ("acme", "dedicated")


def test_inputs_are_in_engine_camel_case_with_options(sample_plan):
    _, data, _ = sample_plan
    bucket = of_type(stack_of(data, "dev.stark"), "gcp:storage/bucket:Bucket")[0]
    assert bucket["inputs"]["uniformBucketLevelAccess"] is True
    assert bucket["inputs"]["publicAccessPrevention"] == "enforced"
    assert bucket["inputs"]["encryption"] == {"defaultKmsKeyName": "projects/stark-keys/locations/europe-west1/keyRings/tenancy/cryptoKeys/uploads"}
    assert bucket["options"]["protect"] is True
    assert bucket["options"]["provider"] == "urn:pulumi:dev.stark::tenancy::pulumi:pulumi:Stack$pulumi:providers:gcp::gcp::gcp-id"
    pw = of_type(stack_of(data, "dev.pool-1"), "random:index/randomPassword:RandomPassword")[0]
    assert pw["options"]["additionalSecretOutputs"] == ["bcryptHash", "result"]


def test_platform_exports_feed_tenant_stack_references(sample_plan):
    _, data, _ = sample_plan
    assert stack_of(data, "dev")["outputs"]["gcpProject"] == "tenancy-dev-482913"
    assert stack_of(data, "dev.cell-1")["outputs"]["kubeconfig"] == "[secret]"
    tenant = stack_of(data, "dev.pied-piper")
    refs = of_type(tenant, "pulumi:pulumi:StackReference")
    # a namespace tenant reads the global stack and its cell
    assert [r["inputs"]["name"] for r in refs] == ["organization/tenancy/dev", "organization/tenancy/dev.cell-1"]
    assert tenant["outputs"]["project"] == "tenancy-dev-482913"
    assert tenant["outputs"]["hostnames"] == ["piedpiper.dev.saas-example.com"]


def test_manifests_are_written_per_stack(sample_plan):
    result, _, out = sample_plan
    for stack in result.stacks:
        files = sorted((out / "manifests" / stack.name).glob("*.yaml"))
        k8s_objects = [r for r in stack.resources if r["type"].startswith("kubernetes:")
                       and not r["type"].startswith(("kubernetes:helm.sh/", "pulumi:providers:"))]
        assert len(files) == len(k8s_objects), stack.name
        for f in files:
            doc = yaml.safe_load(f.read_text())
            assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], f
    ns = yaml.safe_load((out / "manifests" / "dev.stark" / "namespace-tenant-stark.yaml").read_text())
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_no_secret_value_in_plan_or_manifests(sample_plan):
    _, _, out = sample_plan
    texts = [(out / "plan.json").read_text()] + [p.read_text() for p in (out / "manifests").rglob("*.yaml")]
    for text in texts:
        assert "offline-" not in text, "a generated password's value leaked into the plan"
        assert "certificate-authority-data" not in text, "the kubeconfig leaked"
    data = json.loads(texts[0])
    users = [r for s in data["stacks"] for r in of_type(s, "gcp:sql/user:User")]
    versions = [r for s in data["stacks"] for r in of_type(s, "gcp:secretmanager/secretVersion:SecretVersion")]
    assert users and versions
    assert {u["inputs"]["password"] for u in users} == {"[secret]"}
    assert {v["inputs"]["secretData"] for v in versions} == {"[secret]"}


def test_sample_catalogue_plans_with_zero_mandatory_violations(sample_plan):
    result, _, _ = sample_plan
    assert result.mandatory_violations == 0, planmod.summary(result)


def test_summary_table_lists_every_stack(sample_plan):
    result, _, _ = sample_plan
    text = planmod.summary(result)
    lines = text.splitlines()
    assert lines[0].split() == ["STACK", "KIND", "TENANT", "MODEL", "RESOURCES", "VIOLATIONS"]
    assert lines[3].split()[:4] == ["dev.cell-1", "cell", "-", "-"]
    assert lines[6].split()[:4] == ["dev.stark", "tenant", "stark", "namespace"]
    assert lines[10].startswith("9 stack(s), ")


def test_single_tenant_plan():
    catalog = load_catalog(ROOT / "tenants.yaml")
    result = planmod.plan(catalog, "dev", tenants=["stark"], workers=1)
    assert [s.name for s in result.stacks] == ["dev.stark"]
    pooled = planmod.plan(catalog, "dev", tenants=["globex"], workers=1)
    assert [s.name for s in pooled.stacks] == ["dev.pool-1"]  # pooled tenants live in their pool shard's stack


def test_unknown_tenant_is_bad_input():
    from tenancy.errors import CatalogError
    with pytest.raises(CatalogError, match="no tenant 'starks' in the catalogue; did you mean 'stark'"):
        planmod.plan(load_catalog(ROOT / "tenants.yaml"), "dev", tenants=["starks"])


@pytest.fixture
def catalog_repo(tmp_path):
    return catalog_repo_at(tmp_path).parent


def test_changed_since_plans_only_changed_stacks_and_says_why(catalog_repo):
    path = catalog_repo / "tenants.yaml"
    text = path.read_text()
    text = text.replace("  - id: stark\n    name: Stark Industries\n    plan: standard",
                        "  - id: stark\n    name: Stark Industries\n    plan: enterprise")
    text = text.replace("      cpu: 8\n      memory_gb: 16", "      cpu: 10\n      memory_gb: 16")
    text += ("\n  - id: newco\n    name: NewCo\n    plan: standard\n    admin_email: a@newco.example\n")
    text = text.replace("  - id: wayne\n    name: Wayne Enterprises\n    plan: standard\n    state: suspended",
                        "  - id: wayne\n    name: Wayne Enterprises\n    plan: standard\n    state: offboarded")
    path.write_text(text)
    result = planmod.plan(load_catalog(path), "dev", changed_since="HEAD", workers=1)
    reasons = {s.name: s.reasons for s in result.stacks}
    assert reasons["dev.stark"] == ["plan changed: standard → enterprise"]
    assert reasons["dev.pied-piper"] == ["changed: limits"]
    assert reasons["dev.newco"] == ["tenant added"]
    # a tenant's share of the platform lands on its units: its cell (a namespace or dedicated tenant's home), its
    # identity shard when it joins or leaves the directory, the global stack when it leaves (it records it)
    assert reasons["dev.cell-1"] == ["tenant stark changed: model, plan", "tenant wayne changed: state",
                                     "tenant added: newco"]
    assert reasons["dev.identity-1"] == ["tenant wayne changed: state", "tenant added: newco"]
    assert reasons["dev"] == ["tenant wayne changed: state"]
    assert "dev.pool-1" not in reasons
    assert "dev.acme" not in reasons and "dev.acme" in result.unchanged
    assert result.removed == {"dev.wayne": "tenant offboarded: the stack would be destroyed (export data first)"}
    data = result.to_json()
    assert data["changes"]["since"] == "HEAD"


def test_changed_since_with_nothing_changed_plans_nothing(catalog_repo):
    result = planmod.plan(load_catalog(catalog_repo / "tenants.yaml"), "dev", changed_since="HEAD", workers=1)
    assert result.stacks == [] and len(result.unchanged) == 9


def test_changed_since_bad_ref_is_bad_input(catalog_repo):
    from tenancy.changes import GitError
    with pytest.raises(GitError):
        planmod.plan(load_catalog(catalog_repo / "tenants.yaml"), "dev", changed_since="no-such-ref")


def test_duplicate_urns_are_an_error():
    def program():
        gcp.storage.Bucket("same", location="EU")
        gcp.storage.Bucket("same", location="EU")

    with pytest.raises(Exception) as exc:
        run_program(program, project="tenancy", stack="dev", config={})
    assert isinstance(exc.value, DuplicateUrnError) or "duplicate URN" in str(exc.value)
    assert "duplicate URN urn:pulumi:dev::tenancy::pulumi:pulumi:Stack$gcp:storage/bucket:Bucket::same" in str(exc.value)


def test_unmocked_invokes_fail_loudly():
    def program():
        gcp.organizations.get_project()

    with pytest.raises(Exception, match="invoke 'gcp:organizations/getProject:getProject' is not available offline"):
        run_program(program, project="tenancy", stack="dev", config={})


def test_each_stack_gets_a_fresh_runtime():
    def program():
        gcp.storage.Bucket("b", location="EU")
        pulumi.export("n", 1)

    first = run_program(program, project="tenancy", stack="dev", config={"tenancy:x": "1"})
    second = run_program(program, project="tenancy", stack="prod", config={})
    assert len(first.records) == len(second.records) == 1
    assert second.records[0].urn == "urn:pulumi:prod::tenancy::pulumi:pulumi:Stack$gcp:storage/bucket:Bucket::b"
    assert pulumi.Config("tenancy").get("x") is None  # nothing leaks into the caller's context


def test_a_failing_stack_program_names_the_stack():
    catalog = parse_catalog("version: 1\ntenants:\n  - {id: acme, name: A, plan: standard, admin_email: a@a.example}\n")
    import stacks.tenant as tenant_stack
    original = tenant_stack.build
    try:
        tenant_stack.build = lambda *a, **k: (_ for _ in ()).throw(ValueError("boom"))
        with pytest.raises(PlanError, match=r"stack 'dev.acme': the program failed: ValueError: boom"):
            planmod.plan(catalog, "dev", workers=1)
    finally:
        tenant_stack.build = original


def run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "tenancy", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_validate_exit_codes(tmp_path):
    ok = run_cli("validate")
    assert ok.returncode == 0 and "tenants.yaml: valid: 10 tenants" in ok.stdout
    bad = tmp_path / "t.yaml"
    bad.write_text("tenants:\n  - {id: admin, name: A, plan: free, admin_email: nope}\nversion: 1\n")
    res = run_cli("validate", "--tenants", str(bad))
    assert res.returncode == 2
    assert res.stderr.splitlines() == [
        f"{bad}:2: tenants[0] (position 1): id: id 'admin' is reserved; choose another id",
        f"{bad}:2: tenants[0] (position 1): admin_email: 'nope' is not a valid email address",
        "2 problem(s); nothing was planned or applied",
    ]


def test_cli_help_everywhere_and_usage_errors():
    for cmd in ([], ["validate"], ["schema"], ["plan"], ["policy-check"], ["db", "apply"]):
        res = run_cli(*cmd, "--help")
        assert res.returncode == 0 and "usage: tenancy" in res.stdout, cmd
        assert ("--tenants" in res.stdout and "--env" in res.stdout) or cmd in ([], ["db"]), cmd
    res = run_cli("plan", "--workers", "x")
    assert res.returncode == 2 and "invalid int value" in res.stderr


def test_cli_plan_writes_and_bad_env_is_bad_input(tmp_path):
    res = run_cli("plan", "--tenant", "stark", "--out", str(tmp_path / "p"))
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "p" / "plan.json").read_text())["stacks"][0]["name"] == "dev.stark"
    assert "dev.stark" in res.stdout
    res = run_cli("plan", "--env", "qa", "--out", str(tmp_path / "q"))
    assert res.returncode == 2 and "stacks/Pulumi.qa.yaml not found" in res.stderr


def test_a_generated_1000_tenant_catalogue_plans_in_dev_as_shipped(tmp_path):
    """What `make plan` runs (`tenancy validate`, then `tenancy plan`), on 1,000 generated tenants (90% pooled, 9%
    namespace, 1% dedicated) in dev's shipped capacity: every stack bounded, no mandatory violation, exit 0."""
    from tenancy.catalog import to_document
    from tenancy.fleet import sample

    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump(to_document(sample.catalog(1000)), sort_keys=False))
    valid = run_cli("validate", "--env", "dev", "--tenants", str(path))
    assert valid.returncode == 0, valid.stderr
    assert "1000 tenants (10 dedicated, 90 namespace, 900 pooled)" in valid.stdout
    res = run_cli("plan", "--env", "dev", "--tenants", str(path), "--out", str(tmp_path / "plan"), "--workers", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads((tmp_path / "plan" / "plan.json").read_text())
    names = [s["name"] for s in data["stacks"]]
    assert names[:4] == ["dev", "dev.identity-1", "dev.cell-1", "dev.pool-1"] and len(names) == 104
    assert [v for s in data["stacks"] for v in s["violations"] if v.get("enforcement") == "mandatory"] == []
    sizes = {s["name"]: len(s["resources"]) for s in data["stacks"]}
    assert max(sizes.values()) < 2000, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
