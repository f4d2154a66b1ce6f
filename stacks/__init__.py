"""The stack programs, chosen by stack name.

Stack names: `<env>` is the global stack of environment <env> (config in stacks/Pulumi.<env>.yaml);
`<env>.identity-<k>`, `<env>.cell-<n>` and `<env>.pool-<n>` are its unit stacks (stacks/cells.py);
`<env>.<tenant-id>` is that tenant's stack, which needs no config file: it reads its tenant from tenants.yaml
and environment facts from the global stack's outputs (and a namespace tenant its cell's).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Awaitable, Callable

import pulumi

from tenancy import envconfig, naming
from tenancy.catalog import Catalog, load_catalog
from tenancy.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
CATALOG_ENV = "TENANCY_CATALOG"
NOTES_ENV = "TENANCY_NOTES"   # JSON file of deployment notes that travel with the catalogue (lifecycle commands)
PLACEMENTS_ENV = "TENANCY_PLACEMENTS"   # JSON file of the deployed placements (tenancy/fleet), likewise
OVERLAY_ENV = "TENANCY_CATALOG_OVERLAY"   # JSON: a rollout's changes to tenants.yaml (tenancy/operator/overlay.py)


def catalog_path() -> Path:
    """tenants.yaml beside Pulumi.yaml, unless TENANCY_CATALOG names another file."""
    return Path(os.environ.get(CATALOG_ENV) or ROOT / "tenants.yaml")


def program(stack: str, catalog: Catalog, tenant_facing_only: bool = False) -> Callable[[], Awaitable[None]]:
    """The program of stack `stack`, as an async callable (tenant stacks await their platform's outputs).

    `tenant_facing_only` (cells): build only what tenant stacks read (offline `--tenant` plans)."""
    kind, env, tenant_id = naming.stack_kind(stack)
    if kind == naming.ENV_STACK:
        async def run_global() -> None:
            from stacks import cells

            cells.build_global(env, catalog, envconfig.PlatformConfig.from_pulumi(env))

        return run_global
    if kind != naming.TENANT_STACK:
        return _unit_program(stack, kind, env, tenant_id, catalog, tenant_facing_only)

    tenant = catalog.tenant(tenant_id)
    if not tenant.has_stack:
        why = "is pooled (it lives in its pool shard's stack)" if tenant.model.value == "pooled" else f"is {tenant.state.value}"
        raise ConfigError(f"{catalog.path}: tenant '{tenant_id}' {why}; it has no tenant stack. "
                          f"Destroy stack '{stack}' if it still exists (`pulumi destroy -s {stack}`).")

    async def run_tenant() -> None:
        from stacks import contract, tenant as tenant_stack

        cell = None
        if tenant.model.value == "namespace":
            from stacks import cells

            _, placement = cells.placement_for(env, catalog, envconfig.offline_platform_config(env))
            cell = placement.tenants[tenant.id].cell
        ref, facts = tenant_stack.read_platform(env, envconfig.project_name(), cell)
        plain = {}
        for key in (contract.GCP_PROJECT, contract.REGION, contract.BASE_DOMAIN, contract.APP_CHART, contract.APP_CHART_VERSION):
            details = await ref.get_output_details(key)
            if details.value is None:
                raise ConfigError(f"platform stack '{naming.stack_name(env)}' has no output '{key}'; "
                                  f"run `pulumi up -s {naming.stack_name(env)}` first")
            plain[key] = details.value
        # With the operator, a dedicated tenant grants its deployer its roles on the project it creates or adopts.
        operator = (await ref.get_output_details(contract.OPERATOR_NAMESPACE)).value \
            if tenant.model.value == "dedicated" else None
        tenant_stack.build(env, tenant, plain[contract.GCP_PROJECT], plain[contract.REGION], plain[contract.BASE_DOMAIN],
                           plain[contract.APP_CHART], plain[contract.APP_CHART_VERSION], facts, operator_namespace=operator)

    return run_tenant


# The SDK modules a namespace tenant's stack declares resources from (tests/test_plan.py checks the list
# against a planned stack). Importing one executes every module of the package (seconds in all).
TENANT_SDK_MODULES = (
    "pulumi_gcp.firestore", "pulumi_gcp.projects", "pulumi_gcp.secretmanager", "pulumi_gcp.serviceaccount",
    "pulumi_gcp.sql", "pulumi_gcp.storage", "pulumi_kubernetes.apiextensions", "pulumi_kubernetes.batch.v1",
    "pulumi_kubernetes.core.v1", "pulumi_kubernetes.helm.v3", "pulumi_kubernetes.networking.v1",
    "pulumi_kubernetes.rbac.v1", "pulumi_random")


def sdk_module(resource_type: str) -> str | None:
    """The SDK module that declares a resource type (`gcp:sql/databaseInstance:DatabaseInstance` ->
    `pulumi_gcp.sql`, `kubernetes:networking.k8s.io/v1:Ingress` -> `pulumi_kubernetes.networking.v1`; custom
    resources -> `pulumi_kubernetes.apiextensions`); None for this project's components and Pulumi's own."""
    package, _, rest = resource_type.partition(":")
    module = rest.partition(":")[0]
    if package == "gcp":
        return f"pulumi_gcp.{module.partition('/')[0]}"
    if package == "random":
        return "pulumi_random"
    if package == "kubernetes":
        import importlib.util

        group, _, version = module.partition("/")
        group = group.partition(".")[0]        # networking.k8s.io -> networking, helm.sh -> helm
        if group.isidentifier() and importlib.util.find_spec(f"pulumi_kubernetes.{group}") is not None:
            return f"pulumi_kubernetes.{group}.{version}"
        return "pulumi_kubernetes.apiextensions"
    return None


def warm_tenant_sdk() -> None:
    """Imports TENANT_SDK_MODULES. The SDKs import their packages lazily, on the first attribute other than the
    module's own metadata (`__name__`, `__dict__`, ...): `__all__` is one, whether or not the package has it."""
    import importlib

    for name in TENANT_SDK_MODULES:
        getattr(importlib.import_module(name), "__all__", None)


def _unit_program(stack: str, kind: str, env: str, unit: str, catalog: Catalog,
                  tenant_facing_only: bool = False) -> Callable[[], Awaitable[None]]:
    """A cell, pool-shard or identity-shard stack. `tenant_facing_only` (cells): only what tenant stacks read
    (the cluster and its edge), for offline plans of single tenants."""

    async def run_unit() -> None:
        from stacks import cells

        if kind == naming.CELL_STACK:
            cells.build_cell(env, unit, catalog, envconfig.offline_platform_config(env), tenant_facing_only)
            return
        build = {naming.POOL_STACK: cells.build_pool, naming.IDENTITY_STACK: cells.build_identity}[kind]
        build(env, unit, catalog, envconfig.offline_platform_config(env))

    return run_unit


def main() -> None:
    """Entry point under the Pulumi CLI."""
    pulumi.run(_main_async)


async def _main_async() -> None:
    import dataclasses
    import json

    catalog = load_catalog(catalog_path())
    if os.environ.get(NOTES_ENV):
        catalog = dataclasses.replace(catalog, notes=json.loads(Path(os.environ[NOTES_ENV]).read_text()))
    if os.environ.get(PLACEMENTS_ENV):
        catalog = dataclasses.replace(catalog, placements=json.loads(Path(os.environ[PLACEMENTS_ENV]).read_text()))
    if os.environ.get(OVERLAY_ENV):
        from tenancy.operator.overlay import apply

        catalog = apply(catalog, json.loads(os.environ[OVERLAY_ENV]))
    await program(pulumi.get_stack(), catalog)()
