"""An environment's configuration: the platform stack's config (stacks/Pulumi.<env>.yaml) with Pulumi.yaml's
defaults, typed and validated once, with errors that name the file and the fix.

Read without the Pulumi engine (plans, the CLI, the fleet's capacity) or, inside a program, from the engine's
config (`PlatformConfig.from_pulumi`). Nothing here declares a resource: the stack programs (stacks/) and
everything that plans or runs them read the environment from this module."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from tenancy import naming
from tenancy.catalog import Catalog, entry_lines
from tenancy.errors import CatalogError, ConfigError, Problem

ROOT = Path(__file__).resolve().parent.parent
PROJECT_FILE = ROOT / "Pulumi.yaml"
STACKS_DIR = ROOT / "stacks"
NAMESPACE = "tenancy"
DOMAIN = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")


@dataclass(frozen=True)
class PlatformConfig:
    environment: str
    gcp_project: str
    region: str
    base_domain: str
    acme_email: str
    app_chart: str
    app_chart_version: str
    cluster_machine_type: str
    cluster_min_nodes: int
    cluster_max_nodes: int
    pooled_db_tier: str
    network_cidr: str
    pods_cidr: str
    services_cidr: str
    master_cidr: str
    groups_domain: str

    @classmethod
    def from_pulumi(cls, environment: str) -> "PlatformConfig":
        """Inside the platform program: from the stack's config."""
        import pulumi

        cfg = pulumi.Config(NAMESPACE)
        raw: dict[str, Any] = {}
        for f in fields(cls):
            key = _camel(f.name)
            if f.type == "int":
                raw[f.name] = cfg.get_int(key)
            else:
                raw[f.name] = cfg.get(key)
        return cls.validate(raw, environment)

    @classmethod
    def validate(cls, raw: dict[str, Any], environment: str) -> "PlatformConfig":
        defaults = project_defaults()
        values = {}
        for f in fields(cls):
            v = raw.get(f.name)
            values[f.name] = defaults.get(_camel(f.name)) if v is None else v
        where = f"stacks/Pulumi.{environment}.yaml"
        problems = []

        def need(name: str, hint: str) -> None:
            if not values.get(name):
                problems.append(f"{where}: {NAMESPACE}:{_camel(name)} is required for the platform stack; "
                                f"set it with `pulumi config set {NAMESPACE}:{_camel(name)} <value> -s {environment}` ({hint})")

        need("gcp_project", "the GCP project id")
        need("base_domain", "e.g. saas.example.com")
        need("acme_email", "contact for Let's Encrypt")
        if values.get("environment") and values["environment"] != environment:
            problems.append(f"{where}: {NAMESPACE}:environment is '{values['environment']}' but the stack is '{environment}'; "
                            "they must match (or remove the key)")
        values["environment"] = environment
        # Google Groups for RBAC: empty means the groups live in the base domain's Workspace.
        values["groups_domain"] = values.get("groups_domain") or values.get("base_domain") or ""
        if values["groups_domain"] and not DOMAIN.fullmatch(str(values["groups_domain"])):
            problems.append(f"{where}: {NAMESPACE}:groupsDomain '{str(values['groups_domain'])[:60]}' is not a domain name; "
                            "give the Google Workspace domain of gke-security-groups@<domain>, e.g. example.com")
        for name in ("network_cidr", "pods_cidr", "services_cidr", "master_cidr"):
            try:
                ipaddress.ip_network(str(values[name]))
            except ValueError:
                problems.append(f"{where}: {NAMESPACE}:{_camel(name)} '{values[name]}' is not a CIDR range (e.g. 10.10.0.0/20)")
        if not str(values["master_cidr"]).endswith("/28"):
            problems.append(f"{where}: {NAMESPACE}:masterCidr must be a /28 (GKE control plane range)")
        try:
            if int(values["cluster_min_nodes"]) > int(values["cluster_max_nodes"]) or int(values["cluster_min_nodes"]) < 0:
                problems.append(f"{where}: {NAMESPACE}:clusterMinNodes must be between 0 and clusterMaxNodes")
        except (TypeError, ValueError):
            problems.append(f"{where}: {NAMESPACE}:clusterMinNodes and clusterMaxNodes must be integers")
        if problems:
            raise ConfigError("\n".join(problems))
        values["cluster_min_nodes"] = int(values["cluster_min_nodes"])
        values["cluster_max_nodes"] = int(values["cluster_max_nodes"])
        return cls(**values)


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(p.title() for p in rest)


def _project() -> dict[str, Any]:
    stat = PROJECT_FILE.stat()
    return _parsed_project(stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=4)
def _parsed_project(mtime_ns: int, size: int) -> dict[str, Any]:
    """Pulumi.yaml, parsed once per version of the file (every program asks for the project name)."""
    return yaml.load(PROJECT_FILE.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}


def project_defaults() -> dict[str, Any]:
    """Defaults of the `tenancy:` keys declared in Pulumi.yaml (without the namespace)."""
    data = _project()
    out = {}
    for key, decl in (data.get("config") or {}).items():
        if key.startswith(NAMESPACE + ":") and isinstance(decl, dict) and "default" in decl:
            out[key.split(":", 1)[1]] = decl["default"]
    return out


def project_name() -> str:
    return _project()["name"]


def load_stack_config(environment: str) -> dict[str, Any]:
    """The platform stack's config as `pulumi.runtime.set_all_config` wants it (for offline runs)."""
    naming.check_env(environment)
    path = STACKS_DIR / f"Pulumi.{environment}.yaml"
    if not path.exists():
        known = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in STACKS_DIR.glob("Pulumi.*.yaml"))
        raise ConfigError(f"stacks/Pulumi.{environment}.yaml not found: environment '{environment}' has no platform "
                          f"stack config; known environments: {', '.join(known) or 'none'}")
    stat = path.stat()
    return dict(_parsed_config(str(path), stat.st_mtime_ns, stat.st_size))


@lru_cache(maxsize=16)
def _parsed_config(path: str, mtime_ns: int, size: int) -> tuple[tuple[str, str], ...]:
    """The file's config, parsed once per version of the file (every unit and tenant program of a plan asks)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    data = yaml.load(Path(path).read_text(), Loader=loader) or {}
    config = []
    for key, value in (data.get("config") or {}).items():
        if isinstance(value, dict) and "secure" in value:
            continue  # encrypted values cannot be read offline; the platform program does not need any
        config.append((key, _config_string(value)))
    return tuple(config)


def _config_string(value: Any) -> str:
    """Config values as the engine hands them to a program: strings, JSON for structured values."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        import json
        return json.dumps(value)
    return str(value)


def known_environments() -> list[str]:
    return sorted(p.name[len("Pulumi."):-len(".yaml")] for p in STACKS_DIR.glob("Pulumi.*.yaml"))


def offline_platform_config(environment: str) -> PlatformConfig:
    """The environment's platform config, validated, read from stacks/Pulumi.<env>.yaml without the Pulumi
    engine (`tenancy validate` and `tenancy plan` check the catalogue against it before anything runs)."""
    raw = load_stack_config(environment)
    values = {f.name: raw[f"{NAMESPACE}:{_camel(f.name)}"] for f in fields(PlatformConfig)
              if f"{NAMESPACE}:{_camel(f.name)}" in raw}
    return PlatformConfig.validate(values, environment)


def require_catalog_fits(catalog: Catalog, cfg: PlatformConfig) -> None:
    """Raise CatalogError (exit 2, one line per problem) when `check_catalog` finds anything."""
    problems = check_catalog(catalog, cfg)
    if problems:
        raise CatalogError(problems)


def check_catalog(catalog: Catalog, cfg: PlatformConfig) -> list[Problem]:
    """Catalogue rules that need the environment's config.

    A tenant's custom domain must not be a name the platform serves (a hostname under the base domain
    would route to two tenants, or to the platform and a tenant, and share the platform's certificates and
    sign-in domain). A dedicated tenant's project must not be the platform's: the tenant would share the
    platform's IAM, quotas and audit configuration (leave `project` out to place it in the platform project,
    where every name carries the tenant)."""
    base = cfg.base_domain.lower().rstrip(".")
    platform_hosts = {naming.hostname(h, base) for h in naming.PLATFORM_HOSTNAMES}
    found: list[tuple[str, str, str]] = []      # (tenant, field, message)
    for t in catalog.tenants:
        project = t.dedicated.project.id if t.dedicated and t.dedicated.project else None
        if project is not None and project == cfg.gcp_project:
            found.append((t.id, "dedicated.project.id",
                          f"project '{project}' is the platform's project in environment {cfg.environment}; name a "
                          "project of the tenant's own, or remove 'project' to place the tenant in the platform project"))
        domain = (t.custom_domain or "").lower().rstrip(".")
        if not domain:
            continue
        if domain in platform_hosts:
            why = (f"custom domain '{domain}' is the platform's own host {domain.split('.', 1)[0]}.<baseDomain> in "
                   f"environment {cfg.environment}; use a domain the tenant owns")
        elif domain == base or domain.endswith("." + base):
            why = (f"custom domain '{domain}' is under the platform's base domain '{base}' ({cfg.environment}), where "
                   "the platform routes tenant subdomains; use a domain the tenant owns, or its subdomain instead")
        else:
            continue
        found.append((t.id, "custom_domain", why))
    lines: dict[str, dict[str, int]] = {}      # read only when there is something to report
    for _, field, _ in found:
        if field not in lines:
            lines[field] = entry_lines(catalog.path, field)
    return [Problem(file=str(catalog.path), line=lines[field].get(tid), subject=f"tenant '{tid}'", field=field,
                    message=message) for tid, field, message in found]
