"""One `pulumi.com/v1` Stack object per Pulumi stack of the fleet, derived from the catalogue.

The fleet is a list of `FleetStack`s: the platform stack of the environment and one stack per namespace or
dedicated tenant. Each names the stacks it waits for (the operator's `prerequisites`), so further kinds of
stack (cells, pool shards) are more entries, not another generator.

What every Stack object says, and why:
- the program is this repository at a pinned `commit` (one per rollout), `repoDir` from config; the stack
  is selected by its fully qualified name on the self-managed `backend`, with the configured secrets provider;
- the platform stack's config is passed inline: the operator does not honour `stackConfigDir`;
- the workspace runs as its scope's Kubernetes service account, bound through Workload Identity to that scope's
  deploying identity (no keys; tenancy/operator/deployers.py: the platform's, a unit's, a dedicated tenant's, or
  for a namespace tenant its cell's), with CPU, memory and ephemeral-storage requests (a workspace checks out the repository
  and installs the program's packages: 1-2 GiB of disk, and without a request it is evicted when the node's
  disk fills), the `restricted` security profile, and `workspaceReclaimPolicy: Delete` (idle workspace pods,
  one per stack, are the main cost at fleet size);
- `destroyOnFinalize` is false on every stack that holds tenant data: deleting a Stack object must never
  delete a database. Destroys go through `tenancy offboard` and its export checks.
- object names fit the operator's 42 characters: `<env>-<tenant>`, or cut with a hash of the whole stack
  name (naming.fit); the fleet is checked for collisions before anything is generated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from tenancy import naming
from tenancy.catalog import Catalog
from tenancy.errors import ConfigError
from tenancy.operator import deployers
from tenancy.operator.settings import DEPLOYER_KSA, PASSPHRASE_SECRET, OperatorSettings

GROUP, VERSION, PLURAL, KIND = "pulumi.com", "v1", "stacks", "Stack"
API_VERSION = f"{GROUP}/{VERSION}"
STACK_TYPE = f"kubernetes:{API_VERSION}:{KIND}"      # as a Pulumi resource (what the policy pack judges)
MAX_NAME = 42                                  # the operator's CRD refuses longer Stack names
MANAGED_BY = "tenancy"
STACK_ANNOTATION = "tenancy.io/stack"          # the Pulumi stack name (labels cannot hold 100 characters)
TENANT_DATA_ANNOTATION = "tenancy.io/holds-tenant-data"

# Workspace pod sizes by kind of stack. The platform program registers a resource per pooled tenant
# (Identity Platform tenants), so it needs more memory than a tenant stack.
WORKSPACE_RESOURCES = {
    "platform": {"requests": {"cpu": "1", "memory": "4Gi", "ephemeral-storage": "4Gi"},
                 "limits": {"memory": "6Gi", "ephemeral-storage": "8Gi"}},
    "tenant": {"requests": {"cpu": "500m", "memory": "1Gi", "ephemeral-storage": "2Gi"},
               "limits": {"memory": "2Gi", "ephemeral-storage": "4Gi"}},
}


@dataclass(frozen=True)
class FleetStack:
    stack: str                          # Pulumi stack name: `dev`, `dev.acme`
    kind: str                           # platform | tenant
    tenant: str | None = None
    model: str | None = None
    after: tuple[str, ...] = ()         # Pulumi stacks that must have succeeded first
    holds_tenant_data: bool = True      # every stack today: the platform holds the pool's databases
    deployer: str = DEPLOYER_KSA        # the Kubernetes service account of its scope's deployer

    @property
    def object_name(self) -> str:
        return object_name(self.stack)


def object_name(stack: str) -> str:
    """The Stack object's name: the stack name with '.' as '-', cut to 42 characters with a hash of the whole.

    Collision-free: environments have no '-', tenant ids no '.' and no '--', so an uncut name maps back to one
    stack; a cut name ends in '--' and six hex digits of the whole stack name, which no uncut name contains."""
    return naming.fit(stack.replace(naming.STACK_SEPARATOR, "-"), MAX_NAME)


def fleet(catalog: Catalog, env: str) -> list[FleetStack]:
    """Every stack of the environment, platform side first (the global stack, identity
    shards, cells, pool shards), then the tenants' stacks."""
    from tenancy.topology import every_platform_stack

    out = [fleet_stack(s, catalog) for s in every_platform_stack(env)]
    out += [fleet_stack(naming.stack_name(env, t.id), catalog) for t in catalog.stack_tenants]
    check_names(out)
    return out


def fleet_stack(stack: str, catalog: Catalog) -> FleetStack:
    """A stack as the operator runs it, with the stacks it waits for (`prerequisites`): the ones whose outputs it
    reads (tenancy/topology.py `reads`)."""
    from tenancy.topology import reads

    kind, env, rest = naming.stack_kind(stack)
    after = reads(stack, catalog)
    if kind == naming.ENV_STACK:
        return FleetStack(stack, "platform")
    if kind != naming.TENANT_STACK:
        return FleetStack(stack, kind, after=after, deployer=deployers.ksa_name(rest))
    t = catalog.tenant(rest)
    # a namespace tenant's cell is the one it reads; a dedicated tenant in the platform project runs as cell 1's
    cell = next((a.rpartition(naming.STACK_SEPARATOR)[2] for a in after
                 if naming.stack_kind(a)[0] == naming.CELL_STACK), None)
    platform_project = ""
    if t.model.value == "dedicated":    # whether its project is its own
        from tenancy.envconfig import load_stack_config

        platform_project = str(load_stack_config(env).get("tenancy:gcpProject") or "")
    return FleetStack(stack, "tenant", t.id, t.model.value, after=after,
                      deployer=deployers.ksa_name(deployers.tenant_scope(t, cell, platform_project)))


def check_names(stacks: Iterable[FleetStack]) -> None:
    seen: dict[str, str] = {}
    for s in stacks:
        other = seen.setdefault(s.object_name, s.stack)
        if other != s.stack:
            raise ConfigError(f"stacks '{other}' and '{s.stack}' would share the Stack object name '{s.object_name}'; "
                              "rename one of them")


def labels(s: FleetStack, env: str) -> dict[str, str]:
    out = {"app.kubernetes.io/managed-by": MANAGED_BY, "tenancy.io/environment": env, "tenancy.io/stack-kind": s.kind}
    if s.tenant:
        out["tenancy.io/tenant"] = s.tenant
    if s.model:
        out["tenancy.io/model"] = s.model
    return out


COMMIT = re.compile(r"[0-9a-f]{40}")


# The repository of the program the workspaces check out.
REPO = Path(__file__).resolve().parent.parent.parent


def resolve_commit(ref: str = "HEAD") -> str:
    """The full hash of `ref` in this repository (the commit a rollout pins)."""
    from tenancy.changes import git

    return check_commit(git(REPO, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").strip())


def tree_changes(commit: str) -> list[str]:
    """Files of the working tree that differ from `commit` (changed, staged, deleted, or new and not ignored): what
    objects rendered here would show that the commit they pin does not hold."""
    from tenancy.changes import git

    changed = git(REPO, "diff", "--name-only", commit, "--").splitlines()
    changed += git(REPO, "ls-files", "--others", "--exclude-standard").splitlines()
    return sorted({f for f in changed if f})


def check_commit(commit: str) -> str:
    if not COMMIT.fullmatch(commit or ""):
        raise ConfigError(f"commit '{str(commit)[:60]}' is not a full git commit hash (40 hex digits); the operator "
                          "checks out exactly this commit, so give the one the rollout deploys")
    return commit


def stack_object(s: FleetStack, settings: OperatorSettings, commit: str, *, config: dict[str, Any] | None = None,
                 env_vars: dict[str, str] | None = None, preview: bool = False) -> dict[str, Any]:
    """The Stack object of `s` at `commit`. `config`: the stack's inline config (platform stacks);
    `env_vars`: variables for the program (the rollout's catalogue overlay); `preview`: previews only."""
    from tenancy.envconfig import project_name
    from tenancy.recorder import ORGANIZATION

    env = settings.environment
    check_commit(commit)
    spec: dict[str, Any] = {
        "stack": f"{ORGANIZATION}/{project_name()}/{s.stack}",
        "projectRepo": settings.project_repo,
        "commit": commit,
        "shallow": True,
        "backend": settings.backend,
        "serviceAccountName": s.deployer,
        "workspaceReclaimPolicy": "Delete",
        # Deleting the object must never destroy the stack: the stacks hold tenant data (module docstring).
        "destroyOnFinalize": False,
        "workspaceTemplate": {
            "metadata": {"labels": labels(s, env)},
            "spec": {
                "image": settings.workspace_image,
                "securityProfile": "restricted",
                "resources": WORKSPACE_RESOURCES["platform" if s.kind == "platform" else "tenant"],
                "env": [{"name": k, "value": v} for k, v in sorted((env_vars or {}).items())],
            },
        },
    }
    if settings.repo_dir:
        spec["repoDir"] = settings.repo_dir
    if settings.passphrase:
        spec["secretsProvider"] = "passphrase"
        name, key = PASSPHRASE_SECRET
        spec["envRefs"] = {"PULUMI_CONFIG_PASSPHRASE": {"type": "Secret", "secret": {"name": name, "key": key}}}
    else:
        spec["secretsProvider"] = settings.secrets_provider
    if settings.git_auth_secret:
        spec["gitAuth"] = {"accessToken": {"type": "Secret", "secret": {"name": settings.git_auth_secret, "key": "accessToken"}}}
    if s.after:
        spec["prerequisites"] = [{"name": object_name(a)} for a in s.after]
    if config:
        spec["config"] = dict(sorted(config.items()))
    if preview:
        spec["preview"] = True
    obj = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": s.object_name,
            "namespace": settings.namespace,
            "labels": labels(s, env),
            "annotations": {STACK_ANNOTATION: s.stack, TENANT_DATA_ANNOTATION: str(s.holds_tenant_data).lower()},
        },
        "spec": spec,
    }
    check_with_policy_pack(obj, env)
    return obj


def check_with_policy_pack(obj: dict[str, Any], env: str) -> None:
    """The policy pack's verdict on a Stack object before anything sends it (`operator-stack-deployer`: it runs as
    its own scope's deployer). The objects live in the operator's namespace, so they count as the platform's."""
    from tenancy.envconfig import project_name
    from tenancy.policycheck import resource_violations

    urn = f"urn:pulumi:{naming.stack_name(env)}::{project_name()}::{STACK_TYPE}::{obj['metadata']['name']}"
    refused = [v for v in resource_violations(STACK_TYPE, obj, urn) if v["enforcement"] == "mandatory"]
    if refused:
        raise ConfigError("; ".join(f"policy {v['policy']}: {v['message']}" for v in refused))


def platform_config(env: str) -> dict[str, str]:
    """The platform stack's config, inline (the operator does not read `stackConfigDir`). Encrypted values
    are not carried: the platform program reads none."""
    from tenancy.envconfig import load_stack_config

    return load_stack_config(env)


def fleet_objects(catalog: Catalog, settings: OperatorSettings, commit: str) -> list[dict[str, Any]]:
    """Every Stack object of the environment at `commit` (what `tenancy operator manifests` writes)."""
    env = settings.environment
    config = platform_config(env)
    return [stack_object(s, settings, commit, config=config if s.kind == "platform" else None)
            for s in fleet(catalog, env)]
