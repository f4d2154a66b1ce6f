"""Kubernetes hardening and the SQL job: forwarded headers distrusted at the edge, tenant operators bound
to a tight Role in their own namespace only, Job images by digest, the job's tenant registration and audit
gate run against a real PostgreSQL, and the job verifying the server's CA."""

from __future__ import annotations

import json
import re
import subprocess

import psycopg
import pytest
import yaml

from components import sqljob
from components.namespace import OPERATOR_ROLE, OPERATOR_RULES
from components.sqljob import REGISTER_FILE, Registration, registration_sql, sql_literal
from tenancy import plan as planmod
from tenancy.catalog import Model, load_catalog
from tests import pg
from tests.conftest import ROOT, of_type, stack_of
from tests.sqlhelp import connect, register

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


@pytest.fixture(scope="module")
def data(sample_plan):
    return sample_plan[1]


def k8s_objects(stack: dict, kind: str) -> list[dict]:
    return [r["inputs"] for r in stack["resources"] if r["type"].startswith("kubernetes:") and r["type"].endswith(f":{kind}")]


# ----------------------------------------------------------------------------------------------- the edge

def test_ingress_controller_distrusts_client_forwarding_headers_and_keeps_the_client_address(data):
    """Behind a passthrough L4 load balancer X-Forwarded-For is whatever the client wrote: trusting it lets
    anyone choose the address per-IP rate limits count. The address survives through externalTrafficPolicy."""
    # the shared cluster's edge is its cell's; the global stack, identity shard and pool shard run none
    for name in ("dev", "dev.identity-1", "dev.pool-1"):
        assert not [r for r in of_type(stack_of(data, name), "kubernetes:helm.sh/v3:Release")
                    if r["inputs"]["chart"] == "ingress-nginx"], name
    for name in ("dev.cell-1", "dev.acme", "dev.cyberdyne"):
        releases = [r for r in of_type(stack_of(data, name), "kubernetes:helm.sh/v3:Release")
                    if r["inputs"]["chart"] == "ingress-nginx"]
        assert len(releases) == 1, name
        controller = releases[0]["inputs"]["values"]["controller"]
        config = controller["config"]
        assert config["use-forwarded-headers"] == "false", (name, config)
        assert config["enable-real-ip"] == "false", (name, config)
        assert config["compute-full-forwarded-for"] == "false" and config["use-proxy-protocol"] == "false"
        assert controller["service"]["externalTrafficPolicy"] == "Local", name


# ------------------------------------------------------------------------------------------ operator RBAC

def _grants(rules: list[dict], group: str, resource: str, verb: str) -> bool:
    return any((group in r["apiGroups"] or "*" in r["apiGroups"]) and (resource in r["resources"] or "*" in r["resources"])
               and (verb in r["verbs"] or "*" in r["verbs"]) for r in rules)


GUARD_RAILS = [("networking.k8s.io", "networkpolicies"), ("", "resourcequotas"), ("", "limitranges"),
               ("rbac.authorization.k8s.io", "roles"), ("rbac.authorization.k8s.io", "rolebindings"),
               ("", "namespaces"), ("", "secrets")]
# Writing any of these is writing a pod template, which can name any service account of the namespace.
POD_TEMPLATES = [("", "pods"), ("apps", "deployments"), ("apps", "statefulsets"), ("apps", "replicasets"),
                 ("apps", "daemonsets"), ("batch", "jobs"), ("batch", "cronjobs")]


def test_operator_role_cannot_touch_guard_rails_or_write_pod_templates():
    for group, resource in GUARD_RAILS:
        for verb in ("create", "update", "patch", "delete", "deletecollection"):
            assert not _grants(OPERATOR_RULES, group, resource, verb), (verb, group, resource)
    for group, resource in POD_TEMPLATES:
        for verb in ("create", "update", "patch"):
            assert not _grants(OPERATOR_RULES, group, resource, verb), (verb, group, resource)
    for verb in ("escalate", "bind", "impersonate"):
        assert not any(verb in r["verbs"] for r in OPERATOR_RULES), verb
    assert not any("*" in r["verbs"] or "*" in r["resources"] or "*" in r["apiGroups"] for r in OPERATOR_RULES)
    # what operators are for: read workloads and logs, restart a pod, scale
    assert _grants(OPERATOR_RULES, "", "pods/log", "get") and _grants(OPERATOR_RULES, "", "pods", "delete")
    assert _grants(OPERATOR_RULES, "apps", "deployments/scale", "patch")
    assert not _grants(OPERATOR_RULES, "", "secrets", "get")


@pytest.fixture(scope="module")
def operator_plan(tmp_path_factory):
    """A plan of two tenant stacks from a copy of the committed catalogue where stark has operators."""
    out = tmp_path_factory.mktemp("ops")
    raw = yaml.safe_load((ROOT / "tenants.yaml").read_text())
    for t in raw["tenants"]:
        if t["id"] == "stark":
            t["operator_group"] = "stark-ops@example.com"
    path = out / "tenants.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    result = planmod.plan(load_catalog(path), "dev", tenants=["stark", "pied-piper"], workers=1)
    planmod.write(result, out)
    import json
    return json.loads((out / "plan.json").read_text()), out


def test_operator_group_bound_in_its_namespace_only(operator_plan):
    data, out = operator_plan
    stark = stack_of(data, "dev.stark")
    assert stark["violations"] == [], "the policy pack accepts the binding"
    bindings = k8s_objects(stark, "RoleBinding")
    assert len(bindings) == 1
    b = bindings[0]
    assert b["metadata"]["namespace"] == "tenant-stark"
    assert b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": OPERATOR_ROLE}
    assert b["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "stark-ops@example.com"}]
    roles = k8s_objects(stark, "Role")
    assert [(r["metadata"]["name"], r["metadata"]["namespace"]) for r in roles] == [(OPERATOR_ROLE, "tenant-stark")]
    assert roles[0]["rules"] == OPERATOR_RULES
    # the manifest written to disk says the same
    manifest = yaml.safe_load((out / "manifests" / "dev.stark" / "rolebinding-tenant-stark-tenant-operators.yaml").read_text())
    assert manifest["kind"] == "RoleBinding" and manifest["subjects"][0]["name"] == "stark-ops@example.com"
    # no operator group: no binding; nowhere a ClusterRoleBinding or a binding to admin/edit
    assert k8s_objects(stack_of(data, "dev.pied-piper"), "RoleBinding") == []
    for stack in data["stacks"]:
        assert k8s_objects(stack, "ClusterRoleBinding") == [], stack["name"]
        for rb in k8s_objects(stack, "RoleBinding"):
            assert rb["roleRef"]["kind"] == "Role" and rb["roleRef"]["name"] not in ("admin", "edit", "cluster-admin")


# ------------------------------------------------------------------------------------------------ images

def _pod_specs(manifest: dict) -> list[dict]:
    spec = manifest.get("spec") or {}
    if manifest.get("kind") == "Pod":
        return [spec]
    if manifest.get("kind") == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    return [spec["template"]["spec"]] if "template" in spec else []


def test_every_container_image_in_the_manifests_is_pinned_by_digest(sample_plan):
    out = sample_plan[2]
    images = []
    for path in sorted((out / "manifests").rglob("*.yaml")):
        for pod in _pod_specs(yaml.safe_load(path.read_text())):
            for c in pod.get("initContainers", []) + pod.get("containers", []):
                images.append((path.name, c["name"], c["image"]))
    assert len({i[0] for i in images}) == 16, images  # the SQL jobs: 1 platform, 3 x 5 tenant stacks
    assert {i[1] for i in images} == {"fetch-password", "psql"}
    for fname, container, image in images:
        assert DIGEST.search(image), f"{fname}: container {container} image {image} is not pinned by digest"
    assert {i[2] for i in images} == {sqljob.GCLOUD_IMAGE, sqljob.PSQL_IMAGE}


def test_digest_constants_name_their_tag():
    source = (ROOT / "components" / "sqljob.py").read_text()
    for const, tag in (("GCLOUD_DIGEST", "562.0.0-slim"), ("PSQL_DIGEST", "postgres:15.14-alpine")):
        value = getattr(sqljob, const)
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", value), const
        line = next(ln for ln in source.splitlines() if ln.startswith(f"{const} ="))
        assert line.endswith(f"# {tag}"), line


# --------------------------------------------------------------------------------------- the SQL job spec

def test_sql_jobs_verify_the_server_ca_and_mount_no_token(data):
    jobs = [(s["name"], j) for s in data["stacks"] for j in k8s_objects(s, "Job")]
    assert len(jobs) == 16
    for stack, job in jobs:
        pod = job["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False, stack
        psql = pod["containers"][0]
        env = {e["name"]: e.get("value") for e in psql["env"]}
        assert env["PGSSLMODE"] == "verify-ca" and env["PGSSLROOTCERT"] == "/ca/server-ca.pem", (stack, env)
        ca_volume = next(v for v in pod["volumes"] if v["name"] == "server-ca")
        assert ca_volume == {"name": "server-ca", "configMap": {"name": f"{job['metadata']['name']}-ca"}}
        assert {"name": "server-ca", "mountPath": "/ca", "readOnly": True} in psql["volumeMounts"]
        cms = {c["metadata"]["name"]: c for s in data["stacks"] if s["name"] == stack for c in k8s_objects(s, "ConfigMap")}
        assert set(cms[f"{job['metadata']['name']}-ca"]["data"]) == {"server-ca.pem"}
        assert REGISTER_FILE in cms[job["metadata"]["name"]]["data"]
        assert psql["args"][0].endswith(f"-f /sql/{REGISTER_FILE}"), psql["args"]


def test_pooled_job_registers_the_catalogues_pooled_tenants_and_tenant_jobs_their_tenant(data):
    def register_sql(stack_name: str) -> list[str]:
        stack = stack_of(data, stack_name)
        return [c["data"][REGISTER_FILE] for c in k8s_objects(stack, "ConfigMap") if REGISTER_FILE in c.get("data", {})]

    # the pooled tenants' registration is their pool shard's job, and no other platform-side stack's
    assert register_sql("dev") == register_sql("dev.identity-1") == register_sql("dev.cell-1") == []
    [pooled] = register_sql("dev.pool-1")
    found = re.findall(r"\(\$r0\$([a-z0-9-]+)\$r0\$, \$r0\$([a-z0-9-]+)\$r0\$, \$r0\$([a-z]+)\$r0\$, \$r0\$([a-z]+)\$r0\$, "
                       r"\$r0\$(\{.*?\})\$r0\$::jsonb\)", pooled)
    rows = [r[:4] for r in found]
    # each row carries the tenant's directory entry: its hostnames and placement, names only
    directory = {r[0]: json.loads(r[4]) for r in found}
    assert set(directory["vandelay"]) == {"hostnames", "placement"}
    assert directory["vandelay"]["placement"]["poolShard"] == "pool-1"
    assert all("secret" not in r[4].lower() for r in found)
    catalog = load_catalog(ROOT / "tenants.yaml")
    expected = sorted((t.id, t.plan_name, "pooled", t.state.value) for t in catalog.by_model(Model.POOLED)
                      if t.state.value != "offboarded")
    assert sorted(rows) == expected and ("vandelay", "free", "pooled", "suspended") in rows
    wayne = register_sql("dev.wayne")
    assert len(wayne) == 3 and all("$r0$wayne$r0$" in s and "$r0$suspended$r0$" in s for s in wayne)
    assert all("stark" not in s for s in wayne)


# ------------------------------------------------------------------------------- registration SQL on PG

def psql_run(server, dbname: str, sql_text: str, tmp_path, user: str = "tenancy_owner") -> subprocess.CompletedProcess:
    """The registration file through psql exactly as the job runs it (one transaction, stop on error)."""
    f = tmp_path / REGISTER_FILE
    f.write_text(sql_text)
    return subprocess.run([str(pg.bindir() / "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-1", "-f", str(f),
                           server.dsn(user=user, dbname=dbname)], capture_output=True, text=True)


def rows(server, dbname: str) -> dict[str, tuple]:
    with connect(server, dbname) as c:
        return {r[0]: tuple(r[1:]) for r in c.execute("SELECT id, plan, model, state, updated_at FROM tenancy.tenants")}


REGS = (Registration("globex", "free", "pooled", "active"), Registration("initech", "basic", "pooled", "active"),
        Registration("vandelay", "free", "pooled", "suspended"))


def test_registration_upserts_and_leaves_a_tier_move_alone(pg_server, tenancy_db, tmp_path):
    register(pg_server, tenancy_db, "initech", state="frozen")          # a tier move owns this row
    register(pg_server, tenancy_db, "vandelay", state="active")         # the catalogue suspended it since
    with connect(pg_server, tenancy_db, autocommit=True) as c:
        c.execute("UPDATE tenancy.tenants SET plan = 'old' WHERE id = 'vandelay'")
    res = psql_run(pg_server, tenancy_db, registration_sql(REGS), tmp_path)
    assert res.returncode == 0, res.stderr
    first = rows(pg_server, tenancy_db)
    assert {k: v[:3] for k, v in first.items()} == {
        "globex": ("free", "pooled", "active"),
        "initech": ("free", "pooled", "frozen"),        # untouched: neither state nor plan overwritten
        "vandelay": ("free", "pooled", "suspended"),
    }
    again = psql_run(pg_server, tenancy_db, registration_sql(REGS), tmp_path)
    assert again.returncode == 0, again.stderr
    assert rows(pg_server, tenancy_db) == first       # idempotent: not even updated_at moves


def test_audit_problem_fails_the_job_and_side_channels_only_warn(pg_server, tenancy_db, tmp_path):
    sql_text = registration_sql(REGS[:1])
    with connect(pg_server, tenancy_db, autocommit=True) as c:   # what a non-superuser cannot revoke
        c.execute("GRANT SELECT ON pg_catalog.pg_stat_activity TO PUBLIC")
    ok = psql_run(pg_server, tenancy_db, sql_text, tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "WARNING:  tenancy audit: side channel: tenancy_app can read pg_stat_activity" in ok.stderr
    with connect(pg_server, tenancy_db, autocommit=True) as c:
        c.execute("DELETE FROM tenancy.tenants")
        c.execute("CREATE TABLE app.leaky (id int PRIMARY KEY, tenant_id text NOT NULL)")
    bad = psql_run(pg_server, tenancy_db, sql_text, tmp_path)
    assert bad.returncode == 3, (bad.returncode, bad.stderr)      # psql: an error in a -1 script
    assert "tenancy audit failed with 1 problem(s): table app.leaky has tenant_id but is not isolated" in bad.stderr
    assert rows(pg_server, tenancy_db) == {}, "the registration rolled back with the failed audit"


def test_literals_survive_hostile_text(pg_server, tenancy_db):
    values = ["plain", "it's", "$r0$", "x$r0", "$r0$$r1$", "'); DROP TABLE tenancy.tenants; --", "back\\slash", "$", ""]
    with connect(pg_server, tenancy_db) as c:
        got = [c.execute(f"SELECT {sql_literal(v)}").fetchone()[0] for v in values]
        assert got == values
        c.execute("SET standard_conforming_strings = off")
        assert c.execute(f"SELECT {sql_literal('back' + chr(92) + 'slash')}").fetchone()[0] == "back\\slash"
    with pytest.raises(ValueError, match="NUL"):
        sql_literal("a\x00b")


def test_registration_rejects_states_the_catalogue_cannot_set():
    with pytest.raises(ValueError, match="tenant 'acme': registry state 'frozen' cannot be registered"):
        Registration("acme", "enterprise", "dedicated", "frozen")
    with pytest.raises(ValueError, match="duplicate tenant ids"):
        registration_sql([REGS[0], REGS[0]])
    assert "INSERT" not in registration_sql([]) and "tenancy.audit()" in registration_sql([])


def test_the_registry_holds_each_tenants_directory_entry_without_credentials(pg_server, tenancy_db, tmp_path):
    """The registry in PostgreSQL is the directory of record of the database's tenants: hostnames, units and store
    names as the platform program registers them; a changed entry is updated, an unchanged one not rewritten."""
    from tenancy.envconfig import offline_platform_config
    from stacks.platform import directory_entry, registration
    from tenancy.catalog import parse_catalog
    from tenancy.fleet.placement import TenantPlacement

    catalog = parse_catalog("version: 1\ntenants:\n  - {id: globex, name: Globex, plan: free, admin_email: a@globex.example}\n")
    t = catalog.tenant("globex")
    entry = directory_entry(t, "dev", offline_platform_config("dev"), TenantPlacement(pool_shard="pool-1"))
    reg = registration(t, entry)
    assert psql_run(pg_server, tenancy_db, registration_sql([reg]), tmp_path).returncode == 0
    with connect(pg_server, tenancy_db) as c:
        got = c.execute("SELECT directory FROM tenancy.tenants WHERE id = 'globex'").fetchone()[0]
    assert got == {"hostnames": ["app.dev.saas-example.com"], "placement": entry["placement"]}
    assert got["placement"]["poolShard"] == "pool-1" and got["placement"]["bucket"].endswith("-dev-pooled-uploads")
    assert "databaseSecrets" not in got and "secret" not in json.dumps(got)
    before = rows(pg_server, tenancy_db)["globex"]
    assert psql_run(pg_server, tenancy_db, registration_sql([reg]), tmp_path).returncode == 0
    assert rows(pg_server, tenancy_db)["globex"] == before                       # unchanged: not rewritten
    moved = registration(t, {**entry, "placement": {**entry["placement"], "poolShard": "pool-2"}})
    assert psql_run(pg_server, tenancy_db, registration_sql([moved]), tmp_path).returncode == 0
    with connect(pg_server, tenancy_db) as c:
        assert c.execute("SELECT directory->'placement'->>'poolShard' FROM tenancy.tenants").fetchone()[0] == "pool-2"
