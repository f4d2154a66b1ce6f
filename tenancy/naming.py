"""Every physical name, derived in one place from a tenant id and an environment.

Names are deterministic (the same inputs always give the same name, so stacks never churn) and fit each
provider's limits. When a name would be too long it is cut and given a short hash of the full name,
joined with a double hyphen: `t-verylongtenantidthat--3f9a1c`. Tenant ids may not contain `--`
(catalogue rule), so a shortened name can never equal the untruncated name of another id, and two ids
that share a long prefix differ in their hash.
"""

from __future__ import annotations

import hashlib
import re

# Hostnames the platform itself serves under the base domain; no tenant may take them.
PLATFORM_HOSTNAMES = frozenset({"app", "api", "auth", "status", "docs", "ingress"})
RESERVED_NAMES = frozenset({"www", "api", "admin", "app", "staging"}) | PLATFORM_HOSTNAMES

ENV_PATTERN = re.compile(r"^[a-z][a-z0-9]{1,9}$")
STACK_SEPARATOR = "."

# Provider limits (see the field notes): lengths in characters.
LIMITS = {
    "namespace": 63,          # Kubernetes namespace: DNS label
    "service_account": 30,    # GCP service account id: 6-30, ^[a-z][-a-z0-9]*[a-z0-9]$
    "bucket": 63,             # GCS bucket: 3-63, global namespace
    "sql_instance": 80,       # Cloud SQL: project:instance <= 98; keep well inside
    "identity_display": 20,   # Identity Platform tenant display name: 4-20, letter first
    "dns_label": 63,
    "firestore": 63,          # Firestore database id: 4-63, letter first
    "secret": 255,            # Secret Manager secret id
    "helm_release": 53,       # Helm release names
    "stack": 100,             # Pulumi stack name
}
HASH_LEN = 6


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LEN]


def fit(name: str, limit: int) -> str:
    """`name` if it fits in `limit`, else its head, '--' and a hash of the whole name."""
    if len(name) <= limit:
        return name
    head = name[: limit - HASH_LEN - 2].rstrip("-")
    return f"{head}--{_digest(name)}"


def check_env(env: str) -> str:
    if not ENV_PATTERN.match(env or ""):
        raise ValueError(
            f"environment '{env}' must be 2-10 lowercase letters or digits starting with a letter (e.g. dev, prod)"
        )
    return env


def namespace(tenant_id: str) -> str:
    """The tenant's Kubernetes namespace (one cluster per environment, so no environment in it)."""
    return fit(f"tenant-{tenant_id}", LIMITS["namespace"])


POOLED_NAMESPACE = "pooled"
PLATFORM_NAMESPACE = "tenancy-system"


def service_account_id(env: str, tenant_id: str) -> str:
    """GCP service account id of the tenant's workloads (6-30 characters, letter first)."""
    return fit(f"t-{env}-{tenant_id}", LIMITS["service_account"])


def bucket(env: str, tenant_id: str) -> str:
    """The tenant's uploads bucket (bucket names are global, so the environment is part of it)."""
    return fit(f"{env}-{tenant_id}-uploads", LIMITS["bucket"])


def shared_bucket(env: str, project: str) -> str:
    return fit(f"{project}-{env}-pooled-uploads", LIMITS["bucket"])


def sql_instance(env: str, tenant_id: str, role: str) -> str:
    """A tenant's Cloud SQL instance, `role` being postgres-1..3 (instance names start with a letter)."""
    return fit(f"{env}-{tenant_id}-{role}", LIMITS["sql_instance"])


def pooled_sql_instance(env: str) -> str:
    return f"{env}-pooled-postgres"


def identity_display_name(tenant_id: str) -> str:
    """Identity Platform tenant display name: 4-20 characters, letter first."""
    return fit(f"t-{tenant_id}", LIMITS["identity_display"])


def hostname(subdomain: str, base_domain: str) -> str:
    return f"{subdomain}.{base_domain}"


def firestore_database(env: str, tenant_id: str) -> str:
    return fit(f"{env}-{tenant_id}", LIMITS["firestore"])


def secret_id(env: str, tenant_id: str, purpose: str) -> str:
    return fit(f"{env}-{tenant_id}-{purpose}", LIMITS["secret"])


def helm_release(tenant_id: str, chart: str) -> str:
    return fit(f"{chart}-{tenant_id}", LIMITS["helm_release"])


def cluster(env: str, tenant_id: str | None = None) -> str:
    """GKE cluster name (1-40 characters, letter first)."""
    return fit(f"{env}-shared" if tenant_id is None else f"{env}-{tenant_id}", 40)


def stack_name(env: str, tenant_id: str | None = None) -> str:
    """`dev` is the platform stack of environment dev; `dev.acme` is tenant acme's stack in dev."""
    check_env(env)
    return env if tenant_id is None else f"{env}{STACK_SEPARATOR}{tenant_id}"


def parse_stack_name(name: str) -> tuple[str, str | None]:
    """(environment, tenant id or None) from a stack name; accepts `org/project/stack` forms too."""
    short = name.rsplit("/", 1)[-1]
    env, sep, tenant = short.partition(STACK_SEPARATOR)
    try:
        check_env(env)
    except ValueError as exc:
        raise ValueError(
            f"stack '{name}' does not follow the naming convention '<env>' (platform) or '<env>.<tenant-id>' (tenant): {exc}"
        ) from None
    if sep and not tenant:
        raise ValueError(f"stack '{name}' ends with '.'; name a tenant stack '<env>.<tenant-id>'")
    return env, (tenant or None)
