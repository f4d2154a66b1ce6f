"""The two stack programs and the one decision between them.

Stack names: `<env>` is the platform stack of environment <env> (config in stacks/Pulumi.<env>.yaml);
`<env>.<tenant-id>` is that tenant's stack, which needs no config file: it reads its tenant from
tenants.yaml and environment facts from the platform stack's outputs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Awaitable, Callable

import pulumi

from tenancy import naming
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

    `tenant_facing_only` (platform stacks): build only what tenant stacks read (offline `--tenant` plans)."""
    env, tenant_id = naming.parse_stack_name(stack)
    if tenant_id is None:
        from stacks import platform
        from stacks.config import PlatformConfig

        async def run_platform() -> None:
            platform.build(env, catalog, PlatformConfig.from_pulumi(env), tenant_facing_only)

        return run_platform

    tenant = catalog.tenant(tenant_id)
    if not tenant.has_stack:
        why = "is pooled (it lives in the platform stack)" if tenant.model.value == "pooled" else f"is {tenant.state.value}"
        raise ConfigError(f"{catalog.path}: tenant '{tenant_id}' {why}; it has no tenant stack. "
                          f"Destroy stack '{stack}' if it still exists (`pulumi destroy -s {stack}`).")

    async def run_tenant() -> None:
        from stacks import contract, tenant as tenant_stack
        from stacks.config import project_name

        ref, facts = tenant_stack.read_platform(env, project_name())
        plain = {}
        for key in (contract.GCP_PROJECT, contract.REGION, contract.BASE_DOMAIN, contract.APP_CHART, contract.APP_CHART_VERSION):
            details = await ref.get_output_details(key)
            if details.value is None:
                raise ConfigError(f"platform stack '{naming.stack_name(env)}' has no output '{key}'; "
                                  f"run `pulumi up -s {naming.stack_name(env)}` first")
            plain[key] = details.value
        tenant_stack.build(env, tenant, plain[contract.GCP_PROJECT], plain[contract.REGION], plain[contract.BASE_DOMAIN],
                           plain[contract.APP_CHART], plain[contract.APP_CHART_VERSION], facts)

    return run_tenant


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
