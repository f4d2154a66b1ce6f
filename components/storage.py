"""Buckets and Firestore databases: stateful, protected, never public; object reads and writes audited, and
every request to a bucket logged to the environment's access-log bucket."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_gcp as gcp


@dataclass(frozen=True)
class BucketArgs:
    bucket_name: str
    project: str
    location: str
    labels: dict[str, str]
    kms_key: str | None = None
    noncurrent_days: int = 30
    # (role, member) pairs granted on this bucket only.
    members: list[tuple[str, pulumi.Input[str]]] = field(default_factory=list)
    # The bucket its access logs go to (the environment's, `access_log_bucket`); None only for that bucket itself.
    log_bucket: pulumi.Input[str] | None = None
    # Objects are deleted this many days after they are written (None: kept until deleted).
    max_age_days: int | None = None


class Bucket(pulumi.ComponentResource):
    name: pulumi.Output[str]

    def __init__(self, name: str, args: BucketArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tenancy:gcp:Bucket", name, None, opts)
        bucket = gcp.storage.Bucket(
            f"{name}-bucket",
            name=args.bucket_name,
            project=args.project,
            location=args.location,
            # IAM only (no per-object ACLs), and never reachable by allUsers/allAuthenticatedUsers.
            uniform_bucket_level_access=True,
            public_access_prevention="enforced",
            versioning={"enabled": True},
            lifecycle_rules=[
                {"action": {"type": "Delete"}, "condition": {"days_since_noncurrent_time": args.noncurrent_days}},
                {"action": {"type": "AbortIncompleteMultipartUpload"}, "condition": {"age": 1}},
                *([{"action": {"type": "Delete"}, "condition": {"age": args.max_age_days}}] if args.max_age_days else []),
            ],
            # Who asked for which object, from where, with what result: usage logs, one object per hour.
            logging={"log_bucket": args.log_bucket, "log_object_prefix": args.bucket_name} if args.log_bucket else None,
            encryption={"default_kms_key_name": args.kms_key} if args.kms_key else None,
            soft_delete_policy={"retention_duration_seconds": 7 * 24 * 3600},
            force_destroy=False,
            labels=args.labels,
            opts=pulumi.ResourceOptions(parent=self, protect=True),
        )
        for role, member in args.members:
            gcp.storage.BucketIAMMember(f"{name}-{role.split('/')[-1].replace('.', '-')}", bucket=bucket.name,
                                        role=role, member=member, opts=pulumi.ResourceOptions(parent=self))
        self.name = bucket.name
        self.register_outputs({"name": self.name})


@dataclass(frozen=True)
class FirestoreArgs:
    database_id: str
    project: str
    location: str


class FirestoreDatabase(pulumi.ComponentResource):
    name: pulumi.Output[str]

    def __init__(self, name: str, args: FirestoreArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tenancy:gcp:FirestoreDatabase", name, None, opts)
        db = gcp.firestore.Database(
            f"{name}-firestore",
            name=args.database_id,
            project=args.project,
            location_id=args.location,
            type="FIRESTORE_NATIVE",
            concurrency_mode="OPTIMISTIC",
            delete_protection_state="DELETE_PROTECTION_ENABLED",
            point_in_time_recovery_enablement="POINT_IN_TIME_RECOVERY_ENABLED",
            # Removing it from the program leaves the data in place; deleting data is an explicit act.
            deletion_policy="ABANDON",
            opts=pulumi.ResourceOptions(parent=self, protect=True),
        )
        self.name = db.name
        self.register_outputs({"name": self.name})


# Cloud Storage writes usage logs as this group; it needs to create objects in the log bucket, nothing else.
STORAGE_ANALYTICS = "group:cloud-storage-analytics@google.com"
ACCESS_LOG_DAYS = 365


def access_log_bucket(name: str, bucket_name: str, project: str, location: str, labels: dict[str, str],
                      opts: pulumi.ResourceOptions | None = None) -> Bucket:
    """The environment's access-log bucket: every bucket of the environment (the pools', every tenant's, in any
    project) logs its requests here. The platform's alone: no tenant principal is granted on it. Its own
    requests are not logged into itself; reads of it are in the platform project's Data Access audit logs."""
    return Bucket(name, BucketArgs(bucket_name=bucket_name, project=project, location=location, labels=labels,
                                   members=[("roles/storage.objectCreator", STORAGE_ANALYTICS)],
                                   max_age_days=ACCESS_LOG_DAYS), opts=opts)


def project_audit_logs(name: str, project: pulumi.Input[str],
                       opts: pulumi.ResourceOptions | None = None) -> gcp.projects.IAMAuditConfig:
    """Data Access audit logs of every service and every principal in a dedicated tenant's own project (CIS
    GCP 2.1): reads and writes of its databases, secrets, keys and objects, and its cluster's API. No principal
    is exempted. The volume is the tenant project's, as is its logging bill. Authoritative for `allServices`
    in that project, so exactly one stack declares it: the tenant's."""
    return gcp.projects.IAMAuditConfig(
        name, project=project, service="allServices",
        audit_log_configs=[{"log_type": "ADMIN_READ"}, {"log_type": "DATA_READ"}, {"log_type": "DATA_WRITE"}],
        opts=opts)


def storage_data_access_audit(name: str, project: pulumi.Input[str],
                              opts: pulumi.ResourceOptions | None = None) -> gcp.projects.IAMAuditConfig:
    """Data Access audit logs for Cloud Storage in `project`: who read or wrote which tenant's objects.

    Admin Activity logs are always on; object reads and writes are only logged when asked for. The
    config is authoritative for the service in that project, so exactly one stack declares it per
    project: the platform stack for the platform project, a dedicated tenant's stack for its own."""
    return gcp.projects.IAMAuditConfig(
        name, project=project, service="storage.googleapis.com",
        audit_log_configs=[{"log_type": "DATA_READ"}, {"log_type": "DATA_WRITE"}], opts=opts)
