"""Tenant data at rest: buckets are IAM-only, never public and versioned for tenants; every stateful
resource is protected from deletion."""

from __future__ import annotations

from pulumi_policy import ReportViolation, ResourceValidationArgs

from .common import TENANT_LABEL, first, get

STATEFUL_TYPES = (
    "gcp:sql/databaseInstance:DatabaseInstance",
    "gcp:sql/database:Database",
    "gcp:firestore/database:Database",
    "gcp:storage/bucket:Bucket",
    "gcp:container/cluster:Cluster",
    "gcp:identityplatform/tenant:Tenant",
    "gcp:kms/cryptoKey:CryptoKey",
    "gcp:dns/managedZone:ManagedZone",
    "kubernetes:core/v1:PersistentVolumeClaim",
)


def storage_bucket_private(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != "gcp:storage/bucket:Bucket":
        return
    p = args.props
    if p.get("uniformBucketLevelAccess") is not True:
        report("bucket: uniform bucket-level access must be on: access is decided by IAM only, never per-object ACLs")
    if p.get("publicAccessPrevention") != "enforced":
        report("bucket: public access prevention must be 'enforced' so no grant can make tenant objects public")
    if (p.get("labels") or {}).get(TENANT_LABEL) and get(first(p.get("versioning")) or {}, "enabled") is not True:
        report("tenant bucket: versioning must be on so overwritten or deleted objects can be recovered")


def stateful_protected(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type not in STATEFUL_TYPES:
        return
    if not args.opts.protect:
        report(f"stateful resource {args.resource_type} must be protected (protect=True): it holds tenant data")
