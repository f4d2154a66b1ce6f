"""Pulumi Kubernetes Operator: the Stack objects generated from the catalogue, checked against the operator's
own CRD, their names at the 42-character limit, the settings, and the install in cell 1."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from tenancy.catalog import load_catalog, parse_catalog
from tenancy.envconfig import load_stack_config
from tenancy.errors import ConfigError
from tenancy.operator import schema
from tenancy.operator.settings import CHART, CHART_VERSION, OperatorSettings
from tenancy.operator.stacks import FleetStack, check_names, fleet, fleet_objects, object_name, stack_object
from tests.conftest import ROOT, of_type, stack_of

SHA = "0123456789abcdef0123456789abcdef01234567"
# The prod catalogue's stacks, in the order they deploy, and the Kubernetes service account each runs as: the
# platform's for the global stack, a unit's own for its stack, its cell's for a namespace tenant, its own for a
# dedicated tenant with a project of its own (acme's is created, cyberdyne's exists).
SCOPE_KSA = {"prod": "tenancy-deployer", "prod.identity-1": "deployer-identity-1", "prod.cell-1": "deployer-cell-1",
             "prod.pool-1": "deployer-pool-1", "prod.pied-piper": "deployer-cell-1", "prod.stark": "deployer-cell-1",
             "prod.wayne": "deployer-cell-1", "prod.acme": "deployer-acme", "prod.cyberdyne": "deployer-cyberdyne"}
PROJECT = "tenancy-prod-719304"
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
    assert list(objects) == list(SCOPE_KSA)
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
        assert spec["serviceAccountName"] == SCOPE_KSA[stack], "each stack runs as its own scope's deployer"
        assert spec["workspaceReclaimPolicy"] == "Delete", "idle workspace pods are the main cost at fleet size"
        assert spec["destroyOnFinalize"] is False, "deleting a Stack object must never destroy tenant data"
        assert obj["metadata"]["annotations"]["tenancy.io/holds-tenant-data"] == "true"
        ws = spec["workspaceTemplate"]["spec"]
        assert ws["securityProfile"] == "restricted" and ws["image"] == "pulumi/pulumi:3.272.0-nonroot"
        assert set(ws["resources"]["requests"]) == {"cpu", "memory", "ephemeral-storage"}, "without a disk request workspaces are evicted"
        assert obj["metadata"]["namespace"] == "pulumi-operator"


def test_stacks_wait_for_the_stacks_they_read_and_the_global_stack_carries_its_config(objects):
    platform = objects["prod"]["spec"]
    assert "prerequisites" not in platform
    # the operator does not read stackConfigDir: the global stack's config travels in the object
    assert platform["config"] == load_stack_config("prod") and platform["config"]["tenancy:gcpProject"] == "tenancy-prod-719304"
    assert platform["workspaceTemplate"]["spec"]["resources"]["requests"]["memory"] == "4Gi"
    # what each stack reads (tenancy/topology.py): a unit stack reads its settings from stacks/Pulumi.prod.yaml in
    # the checkout, so it carries no config
    waits = {"prod.identity-1": ["prod"], "prod.cell-1": ["prod", "prod-identity-1"],
             "prod.pool-1": ["prod", "prod-identity-1", "prod-cell-1"], "prod.stark": ["prod", "prod-cell-1"],
             "prod.acme": ["prod"]}
    assert {s: [p["name"] for p in objects[s]["spec"]["prerequisites"]] for s in waits} == waits
    assert [s for s, o in objects.items() if "config" in o["spec"]] == ["prod"]
    assert objects["prod.cell-1"]["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "tenancy", "tenancy.io/environment": "prod", "tenancy.io/stack-kind": "cell"}
    for stack in ("prod.stark", "prod.acme"):
        spec = objects[stack]["spec"]
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


def test_long_tenant_ids_get_short_collision_free_names(prod, monkeypatch):
    from tenancy import envconfig

    # staging123 has no config file: it is given prod's (every environment's unit stacks come from its capacity)
    real = envconfig.load_stack_config
    monkeypatch.setattr(envconfig, "load_stack_config",
                        lambda e: {**real("prod"), "tenancy:environment": e} if e == "staging123" else real(e))
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
    # each environment: its global stack, three unit stacks and a stack per tenant
    assert names["prod"] == "prod" and names["staging123-identity-1"] == "staging123.identity-1"
    assert len(names) == 2 * (len(ids) + 4)


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
def prod_stacks():
    """The offline plan of every prod stack (the operator is on in prod): {stack: its plan}."""
    from tenancy import plan as planmod

    result = planmod.plan(load_catalog(ROOT / "tenants.yaml"), "prod", workers=2)
    return {s.name: s.to_json() for s in result.stacks}


def _operator_releases(stack: dict) -> list[dict]:
    return [r for r in of_type(stack, "kubernetes:helm.sh/v3:Release") if r["inputs"]["name"] == "pulumi-kubernetes-operator"]


def test_cell_1_installs_the_operator_when_configured(prod_stacks):
    assert list(prod_stacks) == list(SCOPE_KSA)
    # cell 1's cluster runs the operator, and no other stack declares any of it
    assert {s: [r["name"] for r in stack["resources"] if r["name"].startswith("pulumi-operator")]
            for s, stack in prod_stacks.items() if s != "prod.cell-1"} == {s: [] for s in SCOPE_KSA if s != "prod.cell-1"}
    cell = prod_stacks["prod.cell-1"]
    assert cell["violations"] == []
    [release] = _operator_releases(cell)
    assert (release["inputs"]["chart"], release["inputs"]["version"]) == (CHART, "2.9.0")
    assert release["inputs"]["namespace"] == "pulumi-operator"
    values = release["inputs"]["values"]
    assert values["extraEnv"] == [{"name": "MAX_CONCURRENT_RECONCILES", "value": "25"}]
    assert values["podSecurityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [ns] = [r["inputs"] for r in of_type(cell, "kubernetes:core/v1:Namespace") if r["inputs"]["metadata"]["name"] == "pulumi-operator"]
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    [ksa] = [r["inputs"] for r in of_type(cell, "kubernetes:core/v1:ServiceAccount")
             if r["inputs"]["metadata"]["name"] == "tenancy-deployer"]
    assert ksa["metadata"]["namespace"] == "pulumi-operator"
    assert ksa["metadata"]["annotations"] == {"iam.gke.io/gcp-service-account": "deployer@tenancy-prod-719304.iam.gserviceaccount.com"}
    [wi] = [r["inputs"] for r in of_type(cell, "gcp:serviceaccount/iAMMember:IAMMember")
            if r["inputs"]["member"].endswith("[pulumi-operator/tenancy-deployer]")]
    assert wi == {"serviceAccountId": "projects/tenancy-prod-719304/serviceAccounts/deployer@tenancy-prod-719304.iam.gserviceaccount.com",
                  "role": "roles/iam.workloadIdentityUser",
                  "member": "serviceAccount:tenancy-prod-719304.svc.id.goog[pulumi-operator/tenancy-deployer]"}
    crbs = {r["inputs"]["metadata"]["name"]: r["inputs"]
            for r in of_type(cell, "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding")}
    assert {n: (c["roleRef"]["name"], [x["name"] for x in c["subjects"]]) for n, c in crbs.items()} == {
        "pulumi-operator-tenancy-deployer-auth-delegator": ("system:auth-delegator", ["tenancy-deployer"]),
        "pulumi-operator-deployers-auth-delegator": ("system:auth-delegator",
                                                     ["deployer-identity-1", "deployer-cell-1", "deployer-pool-1",
                                                      "deployer-acme", "deployer-cyberdyne"])}


def test_the_operator_is_off_by_default(sample_plan):
    planned = sample_plan[1]["stacks"]
    assert stack_of(sample_plan[1], "dev.cell-1")
    for stack in planned:
        assert not [r for r in stack["resources"] if r["name"].startswith(("pulumi-operator", "deployer-"))], stack["name"]
        assert not _operator_releases(stack), stack["name"]
    assert OperatorSettings.load("dev").enabled is False


def test_manifests_command_writes_every_stack_object(tmp_path):
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    # --allow-dirty: this checkout may hold uncommitted work (the refusal has its own test)
    res = subprocess.run([sys.executable, "-m", "tenancy", "operator", "manifests", "--env", "prod", "--commit", "HEAD",
                          "--allow-dirty"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    docs = list(yaml.safe_load_all(res.stdout))
    assert [d["metadata"]["name"] for d in docs] == ["prod", "prod-identity-1", "prod-cell-1", "prod-pool-1",
                                                     "prod-pied-piper", "prod-stark", "prod-wayne", "prod-acme",
                                                     "prod-cyberdyne"]
    assert {d["spec"]["commit"] for d in docs} == {sha}
    assert all(schema.problems(d) == [] for d in docs)
    assert res.stderr.strip().splitlines()[-1] == ("9 Stack object(s) at commit " + sha[:12] + ", each valid against the "
                                                   "operator's CRD")
    bad = subprocess.run([sys.executable, "-m", "tenancy", "operator", "manifests", "--env", "dev"], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "tenancy:operatorDeployer is required" in bad.stderr and "Traceback" not in bad.stderr


# ------------------------------------------------------------------------------------- a deployer per scope

def _grants(stack: dict) -> list[tuple[str, str, str, str | None]]:
    return sorted((r["inputs"]["member"].split(":")[1].split("@")[0], r["inputs"]["project"], r["inputs"]["role"],
                   (r["inputs"].get("condition") or {}).get("title"))
                  for r in of_type(stack, "gcp:projects/iAMMember:IAMMember")
                  if r["inputs"]["member"].startswith("serviceAccount:d-prod-"))


CELL_ROLES = ["roles/cloudkms.admin", "roles/cloudsql.admin", "roles/compute.networkAdmin", "roles/container.admin",
              "roles/datastore.owner", "roles/dns.admin", "roles/iam.serviceAccountAdmin", "roles/iam.serviceAccountUser",
              "roles/logging.configWriter", "roles/monitoring.editor", "roles/resourcemanager.projectIamAdmin",
              "roles/secretmanager.admin", "roles/servicenetworking.networksAdmin", "roles/serviceusage.serviceUsageAdmin",
              "roles/storage.admin"]
OWN_PROJECT_ROLES = sorted(CELL_ROLES + ["roles/resourcemanager.projectMover"])


POOL_ROLES = ["roles/cloudsql.admin", "roles/container.admin", "roles/datastore.owner", "roles/iam.serviceAccountAdmin",
              "roles/resourcemanager.projectIamAdmin", "roles/secretmanager.admin", "roles/storage.admin"]
UNIT_ROLES = {"cell-1": CELL_ROLES, "identity-1": ["roles/identityplatform.admin"], "pool-1": POOL_ROLES}


def test_each_scope_deploys_as_an_identity_of_its_own(prod_stacks):
    platform, acme, cyberdyne = prod_stacks["prod"], prod_stacks["prod.acme"], prod_stacks["prod.cyberdyne"]
    # the Kubernetes service accounts the Stack objects name, each annotated with its scope's GCP service account,
    # in the operator's namespace of cell 1 (and in no other stack)
    ksas = {s: {r["inputs"]["metadata"]["name"]: r["inputs"]["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
                for r in of_type(stack, "kubernetes:core/v1:ServiceAccount")
                if r["inputs"]["metadata"]["namespace"] == "pulumi-operator"}
            for s, stack in prod_stacks.items()}
    ksas = {s: k for s, k in ksas.items() if k}
    assert list(ksas) == ["prod.cell-1"]
    ksas = ksas["prod.cell-1"]
    assert ksas == {"tenancy-deployer": f"deployer@{PROJECT}.iam.gserviceaccount.com",
                    "deployer-identity-1": f"d-prod-identity-1@{PROJECT}.iam.gserviceaccount.com",
                    "deployer-cell-1": f"d-prod-cell-1@{PROJECT}.iam.gserviceaccount.com",
                    "deployer-pool-1": f"d-prod-pool-1@{PROJECT}.iam.gserviceaccount.com",
                    "deployer-acme": "d-prod-acme@acme-tenancy-prod.iam.gserviceaccount.com",
                    "deployer-cyberdyne": "d-prod-cyberdyne@cyberdyne-saas.iam.gserviceaccount.com"}
    assert set(SCOPE_KSA.values()) == set(ksas)
    # their GCP service accounts: the units' made by the global stack (in the platform deployer's project), a
    # dedicated tenant's by its own stack, in its own project
    accounts = {s: sorted((r["inputs"]["accountId"], r["inputs"]["project"])
                          for r in of_type(stack, "gcp:serviceaccount/account:Account")
                          if r["inputs"]["accountId"].startswith("d-prod-"))
                for s, stack in prod_stacks.items()}
    assert {s: a for s, a in accounts.items() if a} == {
        "prod": [("d-prod-cell-1", PROJECT), ("d-prod-identity-1", PROJECT), ("d-prod-pool-1", PROJECT)],
        "prod.acme": [("d-prod-acme", "acme-tenancy-prod")], "prod.cyberdyne": [("d-prod-cyberdyne", "cyberdyne-saas")]}
    # only a scope's own Kubernetes service account may act as it
    bindings = sorted((r["inputs"]["serviceAccountId"], r["inputs"]["role"], r["inputs"]["member"])
                      for stack in prod_stacks.values() for r in of_type(stack, "gcp:serviceaccount/iAMMember:IAMMember")
                      if "pulumi-operator/" in r["inputs"]["member"])
    pool = f"serviceAccount:{PROJECT}.svc.id.goog[pulumi-operator/"
    assert bindings == sorted((f"projects/{project}/serviceAccounts/{email}", "roles/iam.workloadIdentityUser",
                               f"{pool}{ksa}]") for ksa, email in ksas.items()
                              for project in [email.split("@")[1].split(".")[0]])
    # project roles: the units' on the platform project, granting project roles only from a fixed list; a dedicated
    # tenant's on its own project and nowhere else; no other stack grants a deployer anything
    grantable = ("api.getAttribute('iam.googleapis.com/modifiedGrantsByRole', []).hasOnly(['roles/artifactregistry.reader', "
                 "'roles/datastore.user', 'roles/logging.logWriter', 'roles/monitoring.metricWriter', "
                 "'roles/monitoring.viewer', 'roles/stackdriver.resourceMetadata.writer'])")
    assert _grants(platform) == sorted((f"d-prod-{unit}", PROJECT, role,
                                        "grants only node and workload roles" if role.endswith("projectIamAdmin") else None)
                                       for unit, roles in UNIT_ROLES.items() for role in roles)
    conds = [r["inputs"]["condition"] for r in of_type(platform, "gcp:projects/iAMMember:IAMMember")
             if r["inputs"]["role"] == "roles/resourcemanager.projectIamAdmin"]
    assert [c["expression"] for c in conds] == [grantable, grantable], "cell-1's and pool-1's"
    assert _grants(acme) == [("d-prod-acme", "acme-tenancy-prod", role, None) for role in OWN_PROJECT_ROLES]
    assert _grants(cyberdyne) == [("d-prod-cyberdyne", "cyberdyne-saas", role, None) for role in OWN_PROJECT_ROLES]
    assert [s for s, stack in prod_stacks.items() if _grants(stack)] == ["prod", "prod.acme", "prod.cyberdyne"]
    for stack in prod_stacks.values():
        assert stack["violations"] == [], stack["name"]
    # and those roles are the ones its stack needs: every Google Cloud type it declares is one of its services
    from tenancy.operator.deployers import OWN_PROJECT_SERVICES, SERVICES
    for stack in (acme, cyberdyne):
        types = {r["type"] for r in stack["resources"] if r["type"].startswith(("gcp:", "kubernetes:"))}
        assert {t for t in types if not t.startswith(OWN_PROJECT_SERVICES)} == set(), stack["name"]
    for name in ("prod.identity-1", "prod.cell-1", "prod.pool-1"):
        kind = name.split(".")[1].split("-")[0]
        types = {r["type"] for r in prod_stacks[name]["resources"] if r["type"].startswith(("gcp:", "kubernetes:"))}
        assert {t for t in types if not t.startswith(SERVICES[kind])} == set(), name


def test_the_workload_identity_bindings_name_each_deployers_own_account(prod_stacks):
    checked = []
    for name, stack in prod_stacks.items():
        gsas = {r["urn"].rsplit("::", 1)[-1].removesuffix("-gsa"): r["inputs"]["accountId"]
                for r in of_type(stack, "gcp:serviceaccount/account:Account") if r["inputs"]["accountId"].startswith("d-")}
        for r in of_type(stack, "gcp:serviceaccount/iAMMember:IAMMember"):
            owner = r["urn"].rsplit("::", 1)[-1].removesuffix("-wi")
            if owner in gsas:
                scope = gsas[owner].removeprefix("d-prod-")
                assert r["inputs"]["member"] == f"serviceAccount:{PROJECT}.svc.id.goog[pulumi-operator/deployer-{scope}]"
                assert r["parent"].endswith(f"tenancy:operator:Deployer::{owner}"), "the account's own component"
                checked.append(scope)
    assert sorted(checked) == ["acme", "cell-1", "cyberdyne", "identity-1", "pool-1"]


def _planted(prod_stacks, stack: str) -> dict:
    import copy

    data = {"stacks": [copy.deepcopy(s) for s in prod_stacks.values()]}
    return data, next(s for s in data["stacks"] if s["name"] == stack)


def _deployer_scope(data: dict) -> list[tuple[str, str]]:
    from tenancy.policycheck import evaluate_plan

    return [(v["urn"].rsplit("::", 1)[-1], v["message"]) for v in evaluate_plan(data["stacks"])
            if v["policy"] == "deployer-scope"]


def test_a_grant_outside_a_deployers_scope_is_refused(prod_stacks):
    import copy

    data, cyberdyne = _planted(prod_stacks, "prod.cyberdyne")
    grant = copy.deepcopy(next(r for r in cyberdyne["resources"] if r["name"] == "deployer-container-admin"))
    grant["urn"] = grant["urn"].replace("deployer-container-admin", "planted")
    grant["inputs"]["member"] = "serviceAccount:d-prod-acme@acme-tenancy-prod.iam.gserviceaccount.com"
    cyberdyne["resources"].append(grant)
    assert _deployer_scope(data) == [
        ("planted", "deployer of 'acme' (serviceAccount:d-prod-acme@acme-tenancy-prod.iam.gserviceaccount.com) is granted "
                    "roles/container.admin on project cyberdyne-saas: a deployer holds roles on its scope's project "
                    "(acme-tenancy-prod) and nowhere else"),
        ("planted", "the stack of tenant 'cyberdyne' grants roles/container.admin to the deployer of 'acme': a tenant "
                    "stack grants roles only to its own deployer")]
    # on a resource rather than a project, and a second account acting as a deployer
    data, acme = _planted(prod_stacks, "prod.acme")
    bucket_grant = next(r for r in acme["resources"] if r["type"] == "gcp:storage/bucketIAMMember:BucketIAMMember")
    bucket_grant["inputs"]["member"] = "serviceAccount:d-prod-acme@acme-tenancy-prod.iam.gserviceaccount.com"
    wi = next(r for r in acme["resources"] if r["name"] == "deployer-wi")
    wi["inputs"]["member"] = f"serviceAccount:{PROJECT}.svc.id.goog[pulumi-operator/deployer-cell-1]"
    found = _deployer_scope(data)
    assert ("deployer-wi", "deployer of 'acme': roles/iam.workloadIdentityUser on its account for serviceAccount:"
            f"{PROJECT}.svc.id.goog[pulumi-operator/deployer-cell-1]: only its own Kubernetes service account "
            "(pulumi-operator/deployer-acme) may act as it, through Workload Identity") in found
    assert (bucket_grant["urn"].rsplit("::", 1)[-1],
            "deployer of 'acme' (serviceAccount:d-prod-acme@acme-tenancy-prod.iam.gserviceaccount.com) is granted "
            "roles/storage.objectAdmin on bucket prod-acme-uploads: a deployer holds roles on its scope's project "
            "(acme-tenancy-prod) and nowhere else") in found
    assert len(found) == 2
    # a deployer left out of the audit logs of its own project
    data, acme = _planted(prod_stacks, "prod.acme")
    audit = next(r for r in acme["resources"] if r["type"] == "gcp:projects/iAMAuditConfig:IAMAuditConfig")
    audit["inputs"]["auditLogConfigs"][2]["exemptedMembers"] = [
        "serviceAccount:d-prod-acme@acme-tenancy-prod.iam.gserviceaccount.com"]
    assert _deployer_scope(data) == [
        ("audit-logs", "deployer of 'acme' (serviceAccount:d-prod-acme@acme-tenancy-prod.iam.gserviceaccount.com) is "
                       "given an audit exemption (DATA_WRITE) on project acme-tenancy-prod: what a deploying identity "
                       "does is never left out of the audit logs")]


def _object(stack: str, **changes) -> dict:
    catalog = load_catalog(ROOT / "tenants.yaml")
    fs = next(s for s in fleet(catalog, "prod") if s.stack == stack)
    return stack_object(FleetStack(**{**fs.__dict__, **changes}), OperatorSettings.load("prod"), SHA)


def test_a_tenant_stack_naming_another_scopes_deployer_is_refused():
    from policy import rules

    def verdict(obj):
        found = []
        rules.operator_stack_deployer(type("A", (), {"resource_type": rules.STACK_CR, "props": obj})(),
                                      lambda m, urn=None: found.append(m))
        return found

    stark = _object("prod.stark")
    assert verdict(stark) == [] and stark["spec"]["serviceAccountName"] == "deployer-cell-1"
    for other in ("deployer-acme", "tenancy-deployer", "deployer-pool-1", "deployer-identity-1"):
        planted = {**stark, "spec": {**stark["spec"], "serviceAccountName": other}}
        assert schema.problems(planted) == [], "the CRD accepts it: only the pack refuses it"
        assert verdict(planted) == [
            f"Stack prod-stark (stack prod.stark) runs as service account '{other}': it must run as its cell's (cell-1) "
            "deployer, deployer-cell-1; another scope's identity can change infrastructure that is not this stack's"]
    acme = _object("prod.acme")
    planted = {**acme, "spec": {**acme["spec"], "serviceAccountName": "deployer-cyberdyne"}}
    assert verdict(planted) == [
        "Stack prod-acme (stack prod.acme) runs as service account 'deployer-cyberdyne': it must run as tenant "
        "'acme''s own deployer, deployer-acme; another scope's identity can change infrastructure that is not this "
        "stack's"]
    unlabelled = {**stark, "metadata": {**stark["metadata"], "labels": {}}}
    assert verdict(unlabelled) == ["Stack prod-stark (stack prod.stark): a tenant's Stack says its model (label "
                                   "tenancy.io/model: namespace or dedicated), which decides the deployer it runs as"]
    # the generator itself refuses to produce one: the pack judges every object before it is sent or printed
    with pytest.raises(ConfigError, match=r"^policy operator-stack-deployer: Stack prod-wayne \(stack prod.wayne\) runs "
                                          r"as service account 'deployer-acme': it must run as its cell's"):
        _object("prod.wayne", deployer="deployer-acme")


def test_a_planted_cross_scope_stack_in_a_plan_is_refused(prod_stacks):
    from tenancy.policycheck import evaluate_stack

    stack, platform = _planted(prod_stacks, "prod")
    obj = _object("prod.stark")
    obj["spec"]["serviceAccountName"] = "tenancy-deployer"
    urn = "urn:pulumi:prod::tenancy::kubernetes:pulumi.com/v1:Stack::prod-stark"
    platform["resources"].append({"urn": urn, "type": "kubernetes:pulumi.com/v1:Stack", "name": "prod-stark",
                                  "custom": True, "inputs": obj, "options": {}})
    assert [(v["policy"], v["urn"]) for v in evaluate_stack(platform)] == [("operator-stack-deployer", urn)]


def test_the_pack_and_the_deployers_agree_on_names():
    from policy import rules
    from tenancy.operator import deployers

    assert (rules.PLATFORM_DEPLOYER_KSA, rules.DEPLOYER_KSA_PREFIX) == (deployers.PLATFORM_KSA, deployers.KSA_PREFIX)
    from components.operator import DEPLOYER_TYPE
    assert rules.DEPLOYER_TYPE == DEPLOYER_TYPE
