"""Applies the tenancy SQL to a PostgreSQL instance from inside the cluster, over its private IP.

The Job's name carries the SQL's hash, so a deploy that does not change the SQL changes nothing, and a
changed SQL file runs once. The password is fetched from Secret Manager at run time by an init container
with the Job's own Workload Identity: no secret value is written to a manifest.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.workload import CONTAINER_SECURITY, POD_SECURITY, sql_job_name

GCLOUD_IMAGE = "gcr.io/google.com/cloudsdktool/google-cloud-cli:535.0.0-slim"
PSQL_IMAGE = "postgres:15.14-alpine"


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


class SqlApplyJob(pulumi.ComponentResource):
    job_name: str

    def __init__(self, name: str, args: SqlJobArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tenancy:k8s:SqlApplyJob", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        combined = "\n".join(args.sql_files[k] for k in sorted(args.sql_files))
        self.job_name = sql_job_name(combined, args.job_prefix)
        cm = k8s.core.v1.ConfigMap(f"{name}-sql", metadata={
            "name": self.job_name, "namespace": args.namespace, "labels": args.labels}, data=dict(args.sql_files),
            opts=child)
        files = " ".join(f"-f /sql/{k}" for k in sorted(args.sql_files))
        volume_mounts = [{"name": "sql", "mountPath": "/sql", "readOnly": True},
                         {"name": "creds", "mountPath": "/creds"}]
        resources = {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}}
        k8s.batch.v1.Job(f"{name}-job", metadata={"name": self.job_name, "namespace": args.namespace, "labels": args.labels},
                         spec={
            "backoffLimit": 4, "ttlSecondsAfterFinished": 86400,
            "template": {"metadata": {"labels": args.labels}, "spec": {
                "serviceAccountName": args.service_account, "restartPolicy": "OnFailure",
                "securityContext": POD_SECURITY,
                "initContainers": [{
                    "name": "fetch-password", "image": GCLOUD_IMAGE, "securityContext": CONTAINER_SECURITY,
                    "command": ["/bin/sh", "-c"],
                    "args": [pulumi.Output.concat(
                        "gcloud secrets versions access latest --project=", args.project, " --secret=",
                        args.password_secret, " > /creds/password")],
                    "env": [{"name": "CLOUDSDK_CONFIG", "value": "/creds/gcloud"}],
                    "volumeMounts": volume_mounts, "resources": resources,
                }],
                "containers": [{
                    "name": "psql", "image": PSQL_IMAGE, "securityContext": CONTAINER_SECURITY,
                    "command": ["/bin/sh", "-c"],
                    "args": [f'PGPASSWORD="$(cat /creds/password)" exec psql -v ON_ERROR_STOP=1 -1 {files}'],
                    "env": [{"name": "PGHOST", "value": args.host}, {"name": "PGDATABASE", "value": args.database},
                            {"name": "PGUSER", "value": args.user}, {"name": "PGSSLMODE", "value": "require"}],
                    "volumeMounts": volume_mounts, "resources": resources,
                }],
                "volumes": [{"name": "sql", "configMap": {"name": self.job_name}},
                            {"name": "creds", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}],
            }},
        }, opts=pulumi.ResourceOptions(parent=self, depends_on=[cm], delete_before_replace=True))
        self.register_outputs({"job_name": self.job_name})
