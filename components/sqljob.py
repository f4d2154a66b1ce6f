"""Applies the tenancy SQL to a PostgreSQL instance from inside the cluster, over its private IP.

The Job's name carries the SQL's hash, so a deploy that does not change the SQL changes nothing, and a
changed SQL file runs once. The password is fetched from Secret Manager at run time by an init container
with the Job's own Workload Identity: no secret value is written to a manifest.

After the tenancy SQL, a generated file (`zz_register.sql`) registers the tenants this database holds in
`tenancy.tenants` and then fails the Job when `tenancy.audit()` reports anything but the statistics side
channels a non-superuser cannot close (those are printed as warnings). The registration is part of the
hashed SQL: a catalogue change to these tenants runs the Job again.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Iterable

import pulumi
import pulumi_kubernetes as k8s

from components.workload import CONTAINER_SECURITY, POD_SECURITY, sql_job_name

# Images by digest: a tag can be re-pointed, a digest cannot. Each digest is the multi-arch index of the
# tag named beside it, as published by its registry; move tag and digest together.
GCLOUD_DIGEST = "sha256:0da2de42ae51cd6092b5caf7c96d25003659fd15548760eb4c50c2623e7bf9c2"  # 562.0.0-slim
GCLOUD_IMAGE = f"gcr.io/google.com/cloudsdktool/google-cloud-cli@{GCLOUD_DIGEST}"
PSQL_DIGEST = "sha256:64583b3cb4f2010277bdd9749456de78e5c36f8956466ba14b0b96922e510950"  # postgres:15.14-alpine
PSQL_IMAGE = f"docker.io/library/postgres@{PSQL_DIGEST}"

REGISTER_FILE = "zz_register.sql"  # sorts after the numbered tenancy SQL files
CA_FILE = "server-ca.pem"
# States the catalogue may give a tenant's registry row; frozen/readonly belong to tier moves only.
REGISTRABLE_STATES = ("active", "suspended")


@dataclass(frozen=True)
class Registration:
    """One row of `tenancy.tenants` as the catalogue says it should be."""

    id: str
    plan: str
    model: str
    state: str
    # Where the tenant lives, as compact JSON (stacks/platform.py registry_entry): its hostnames, units and
    # store names, never credentials. Each database's registry is the directory of record of its tenants.
    directory: str = "{}"

    def __post_init__(self) -> None:
        if self.state not in REGISTRABLE_STATES:
            raise ValueError(f"tenant '{self.id}': registry state '{self.state}' cannot be registered; "
                             f"only {', '.join(REGISTRABLE_STATES)} (offboarded tenants are not registered)")


@dataclass(frozen=True)
class SqlJobArgs:
    namespace: pulumi.Input[str]
    service_account: str
    sql_files: dict[str, str]     # file name -> text, applied in name order
    host: pulumi.Input[str]
    database: str
    user: str
    password_secret: pulumi.Input[str]  # Secret Manager secret id (a name, not a value)
    project: str
    labels: dict[str, str]
    job_prefix: str = "tenancy-sql"
    registrations: tuple[Registration, ...] = ()
    # (environment, the registry's name of this database: 'pool-1', 'acme/postgres-1'): written once into
    # tenancy.database_identity, which every operation checks before it touches the database.
    identity: tuple[str, str] | None = None
    # The instance's server CA (PEM, public): psql verifies the server with it (verify-ca). Cloud SQL's
    # server certificate names the instance, not its private IP, so verify-full cannot be used here.
    server_ca: pulumi.Input[str] | None = None


def sql_literal(value: str) -> str:
    """A dollar-quoted literal whose tag does not occur in the value: safe whatever the value holds and
    whatever standard_conforming_strings says."""
    if "\x00" in value:
        raise ValueError("a SQL text value cannot contain NUL characters")
    n = 0
    while f"$r{n}$" in value or value.endswith(f"$r{n}"):
        n += 1
    tag = f"$r{n}$"
    return f"{tag}{value}{tag}"


AUDIT_BLOCK = """\
-- Fail the Job (psql -v ON_ERROR_STOP=1 exits non-zero, the transaction rolls back) on any audit problem
-- except the statistics side channels, which only a superuser can close (not available on Cloud SQL).
DO $audit$
DECLARE
  p text;
  failures text[] := '{}';
BEGIN
  FOR p IN SELECT problem FROM tenancy.audit() ORDER BY 1 LOOP
    IF p LIKE 'side channel:%' THEN
      RAISE WARNING 'tenancy audit: %', p;
    ELSE
      failures := failures || p;
    END IF;
  END LOOP;
  IF cardinality(failures) > 0 THEN
    RAISE EXCEPTION 'tenancy audit failed with % problem(s): %', cardinality(failures), array_to_string(failures, '; ');
  END IF;
END
$audit$;
"""


def identity_sql(env: str, name: str) -> str:
    """Mark the database as the registry's `name` in `env`, once; fail (the whole job, nothing applied) when it is
    already marked as another: the job would be applying to the wrong database."""
    e, n = sql_literal(env), sql_literal(name)
    return ("INSERT INTO tenancy.database_identity (environment, name) VALUES (" + e + ", " + n + ") ON CONFLICT DO NOTHING;\n"
            "DO $identity$\nBEGIN\n"
            "  IF EXISTS (SELECT 1 FROM tenancy.database_identity WHERE (environment, name) <> (" + e + ", " + n + ")) THEN\n"
            "    RAISE EXCEPTION 'this database is marked as another (%), not " + env + "/" + name + "', (SELECT environment "
            "|| '/' || name FROM tenancy.database_identity);\n"
            "  END IF;\nEND\n$identity$;\n")


def registration_sql(registrations: Iterable[Registration], identity: tuple[str, str] | None = None) -> str:
    """Mark the database (`identity`), then upsert each tenant's plan, model, state and directory entry; a row a tier
    move has frozen or made read-only is left alone, and an unchanged row is not rewritten (re-runs are no-ops).
    Then the audit check."""
    rows = sorted(registrations, key=lambda r: r.id)
    ids = [r.id for r in rows]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate tenant ids in the registration: {sorted({i for i in ids if ids.count(i) > 1})}")
    out = ["-- Generated from the tenant catalogue: the tenants whose rows this database holds."]
    if identity is not None:
        out.append(identity_sql(*identity))
    if rows:
        values = ",\n  ".join("(" + ", ".join(sql_literal(v) for v in (r.id, r.plan, r.model, r.state))
                              + f", {sql_literal(r.directory)}::jsonb)" for r in rows)
        out.append(
            "INSERT INTO tenancy.tenants (id, plan, model, state, directory) VALUES\n  " + values + "\n"
            "ON CONFLICT (id) DO UPDATE\n"
            "   SET plan = excluded.plan, model = excluded.model, state = excluded.state,\n"
            "       directory = excluded.directory, updated_at = now()\n"
            " WHERE tenancy.tenants.state IN ('active', 'suspended')\n"
            "   AND (tenancy.tenants.plan, tenancy.tenants.model, tenancy.tenants.state, tenancy.tenants.directory)\n"
            "       IS DISTINCT FROM (excluded.plan, excluded.model, excluded.state, excluded.directory);\n")
    out.append(AUDIT_BLOCK)
    return "\n".join(out)


class SqlApplyJob(pulumi.ComponentResource):
    job_name: str

    def __init__(self, name: str, args: SqlJobArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tenancy:k8s:SqlApplyJob", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        if REGISTER_FILE in args.sql_files:
            raise ValueError(f"{REGISTER_FILE} is generated by the SQL job; rename that SQL file")
        sql = {**args.sql_files, REGISTER_FILE: registration_sql(args.registrations, args.identity)}
        combined = "\n".join(sql[k] for k in sorted(sql))
        self.job_name = sql_job_name(combined, args.job_prefix)
        meta = lambda n: {"name": n, "namespace": args.namespace, "labels": args.labels}  # noqa: E731
        deps: list[pulumi.Resource] = [
            k8s.core.v1.ConfigMap(f"{name}-sql", metadata=meta(self.job_name), data=sql, opts=child)]
        files = " ".join(f"-f /sql/{shlex.quote(k)}" for k in sorted(sql))
        creds_mount = {"name": "creds", "mountPath": "/creds"}
        psql_mounts = [{"name": "sql", "mountPath": "/sql", "readOnly": True}, creds_mount]
        volumes = [{"name": "sql", "configMap": {"name": self.job_name}},
                   {"name": "creds", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}]
        tls = [{"name": "PGSSLMODE", "value": "require"}]
        if args.server_ca is not None:
            # Public certificate: a ConfigMap, not a Secret.
            deps.append(k8s.core.v1.ConfigMap(f"{name}-ca", metadata=meta(f"{self.job_name}-ca"),
                                              data={CA_FILE: args.server_ca}, opts=child))
            psql_mounts = [*psql_mounts, {"name": "server-ca", "mountPath": "/ca", "readOnly": True}]
            volumes = [*volumes, {"name": "server-ca", "configMap": {"name": f"{self.job_name}-ca"}}]
            tls = [{"name": "PGSSLMODE", "value": "verify-ca"}, {"name": "PGSSLROOTCERT", "value": f"/ca/{CA_FILE}"}]
        resources = {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}}
        k8s.batch.v1.Job(f"{name}-job", metadata=meta(self.job_name), spec={
            "backoffLimit": 4, "ttlSecondsAfterFinished": 86400,
            "template": {"metadata": {"labels": args.labels}, "spec": {
                "serviceAccountName": args.service_account, "restartPolicy": "OnFailure",
                # Workload Identity answers through the GKE metadata server; no Kubernetes API token needed.
                "automountServiceAccountToken": False,
                "securityContext": POD_SECURITY,
                "initContainers": [{
                    "name": "fetch-password", "image": GCLOUD_IMAGE, "securityContext": CONTAINER_SECURITY,
                    "command": ["/bin/sh", "-c"],
                    "args": [pulumi.Output.concat(
                        "gcloud secrets versions access latest --project=", args.project, " --secret=",
                        args.password_secret, " > /creds/password")],
                    "env": [{"name": "CLOUDSDK_CONFIG", "value": "/creds/gcloud"}],
                    "volumeMounts": [creds_mount], "resources": resources,
                }],
                "containers": [{
                    "name": "psql", "image": PSQL_IMAGE, "securityContext": CONTAINER_SECURITY,
                    "command": ["/bin/sh", "-c"],
                    "args": [f'PGPASSWORD="$(cat /creds/password)" exec psql -v ON_ERROR_STOP=1 -1 {files}'],
                    "env": [{"name": "PGHOST", "value": args.host}, {"name": "PGDATABASE", "value": args.database},
                            {"name": "PGUSER", "value": args.user}, *tls],
                    "volumeMounts": psql_mounts, "resources": resources,
                }],
                "volumes": volumes,
            }},
        }, opts=pulumi.ResourceOptions(parent=self, depends_on=deps, delete_before_replace=True))
        self.register_outputs({"job_name": self.job_name})
