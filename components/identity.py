"""Identity Platform: multi-tenancy on, one Identity Platform tenant per catalogue tenant (every model).

They live in the platform stack so that a tier change never recreates a tenant's user pool: users keep
their logins across upgrades and downgrades.

The project-wide authorized domains (where a page may start a sign-in, for *any* Identity Platform
tenant) are the platform's own hosts only: `app.<base>` and `auth.<base>`. Tenants on other hosts
(`<subdomain>.<base>`, custom domains) sign in through `auth.<base>`: a tenant's operators control what
their host serves, and an authorized domain of theirs could start sign-in flows for every other tenant.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from tenancy import naming

# The platform hosts that serve sign-in pages (a subset of naming.PLATFORM_HOSTNAMES); tenants on any
# other host are sent to the auth host, served by the shared deployment, with their Identity Platform tenant.
AUTH_HOST = "auth"
SIGN_IN_HOSTS = ("app", AUTH_HOST)


def authorized_domains(base_domain: str) -> list[str]:
    """The only domains Identity Platform lets start a sign-in: the platform's own sign-in hosts."""
    return sorted(naming.hostname(h, base_domain) for h in SIGN_IN_HOSTS)


def sign_in_host(base_domain: str) -> str:
    """Where tenants whose hosts are not authorized domains sign in."""
    return naming.hostname(AUTH_HOST, base_domain)


@dataclass(frozen=True)
class IdentityTenant:
    tenant_id: str
    display_name: str


@dataclass(frozen=True)
class IdentityArgs:
    project: str
    authorized_domains: list[str]
    tenants: list[IdentityTenant]
    # The project-wide configuration (multi-tenancy, authorized domains). The global stack
    # holds it and identity shards hold only tenants (`config=False`), under the same component name.
    config: bool = True


class IdentityPlatform(pulumi.ComponentResource):
    tenant_names: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: IdentityArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tenancy:gcp:IdentityPlatform", name, None, opts)
        config = None if not args.config else gcp.identityplatform.Config(
            f"{name}-config",
            project=args.project,
            multi_tenant={"allow_tenants": True},
            authorized_domains=args.authorized_domains,
            sign_in={"email": {"enabled": True, "password_required": True}},
            autodelete_anonymous_users=True,
            opts=pulumi.ResourceOptions(parent=self, protect=True),
        )
        self.tenant_names = {}
        for t in args.tenants:
            idp = gcp.identityplatform.Tenant(
                f"{name}-{t.tenant_id}",
                project=args.project,
                display_name=t.display_name,
                allow_password_signup=True,
                # A user pool is stateful: protected, and kept if it is ever dropped from the program.
                deletion_policy="ABANDON",
                opts=pulumi.ResourceOptions(parent=self, protect=True, depends_on=[config] if config else []),
            )
            self.tenant_names[t.tenant_id] = idp.name
        self.register_outputs({"tenant_names": self.tenant_names})
