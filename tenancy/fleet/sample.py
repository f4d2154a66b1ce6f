"""Generated fleets for capacity planning, benchmarks and tests: a catalogue of n tenants, 90% pooled (`free`),
9% namespace (`standard`) and 1% dedicated (`enterprise`, each in a project of its own), built directly as
models (no YAML written and read back: at 100,000 tenants that alone takes seconds)."""

from __future__ import annotations

from tenancy.catalog import BUILTIN_PLANS, Catalog, DedicatedSettings, ProjectSettings, State, Tenant

MIX = (("enterprise", 1), ("standard", 9), ("free", 90))   # per 100 tenants


def plan_of(i: int) -> str:
    """The plan of the i-th generated tenant: every hundred has 1 enterprise, 9 standard, 90 free tenants."""
    slot = i % 100
    for plan, share in MIX:
        if slot < share:
            return plan
        slot -= share
    raise AssertionError("MIX covers 100 slots")


def tenant(tenant_id: str, plan: str) -> Tenant:
    p = BUILTIN_PLANS[plan]
    dedicated = DedicatedSettings(project=ProjectSettings(id=f"{tenant_id}-data"[:30])) if plan == "enterprise" else None
    return Tenant(id=tenant_id, name=f"Tenant {tenant_id}", plan_name=plan, plan=p, state=State.ACTIVE,
                  subdomain=tenant_id, custom_domain=None, admin_email=f"admin@{tenant_id}.example", region=None,
                  features=p.features, limits=p.limits, kms_key=None, dedicated=dedicated)


def catalog(n: int, prefix: str = "t", start: int = 0) -> Catalog:
    """Tenants `<prefix>000000` .. in the mix above (ids in order of i; shuffle them to test order)."""
    return Catalog(path="generated.yaml", plans=dict(BUILTIN_PLANS),
                   tenants=tuple(tenant(f"{prefix}{i:06d}", plan_of(i)) for i in range(start, start + n)))
