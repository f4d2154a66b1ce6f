"""What the Pulumi Kubernetes Operator needs from the platform stack's config (`stacks/Pulumi.<env>.yaml`).

Both sides read the same keys: the platform program installs the operator when `tenancy:operator` is true,
and `tenancy up --engine operator` generates and patches the Stack objects from the rest. Errors name the
file, the key and the `pulumi config set` that fixes it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from tenancy import naming
from tenancy.errors import ConfigError
from tenancy.operator.deployers import PLATFORM_KSA

CHART = "oci://ghcr.io/pulumi/helm-charts/pulumi-kubernetes-operator"
CHART_VERSION = "2.9.0"      # the CRDs in schemas/pko/ are this release's; change both together
DEPLOYER_KSA = PLATFORM_KSA   # the platform's deployer; every other scope has its own (tenancy/operator/deployers.py)
# With `secretsProvider: passphrase` the workspaces read the passphrase from this Secret in the operator's
# namespace (created out of band: the passphrase is never in the program, its config or its state).
PASSPHRASE_SECRET = ("pulumi-passphrase", "passphrase")

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
GSA_EMAIL = re.compile(r"(?P<account>[a-z][-a-z0-9]{4,28}[a-z0-9])@(?P<project>[a-z][-a-z0-9]{4,28}[a-z0-9])"
                       r"\.iam\.gserviceaccount\.com")
REPO_URL = re.compile(r"(https://|ssh://|git@)[^\s]+")
BACKENDS = ("gs://", "s3://", "azblob://", "https://")
SECRETS_PROVIDERS = ("gcpkms://", "awskms://", "azurekeyvault://", "hashivault://")

# key -> (field, kind); defaults come from Pulumi.yaml like every other key.
KEYS = {
    "operator": ("enabled", "bool"),
    "operatorNamespace": ("namespace", "str"),
    "operatorDeployer": ("deployer", "str"),       # the platform's deployer; it makes every other scope's
    "operatorMaxConcurrentReconciles": ("max_concurrent_reconciles", "int"),
    "projectRepo": ("project_repo", "str"),
    "repoDir": ("repo_dir", "str"),
    "stateBackend": ("backend", "str"),
    "secretsProvider": ("secrets_provider", "str"),
    "gitAuthSecret": ("git_auth_secret", "str"),
    "workspaceImage": ("workspace_image", "str"),
}


@dataclass(frozen=True)
class OperatorSettings:
    environment: str
    enabled: bool
    namespace: str
    deployer: str                   # the platform's deploying identity's GCP service account (email)
    max_concurrent_reconciles: int
    project_repo: str
    repo_dir: str
    backend: str
    secrets_provider: str
    git_auth_secret: str
    workspace_image: str

    @property
    def deployer_project(self) -> str:
        m = GSA_EMAIL.fullmatch(self.deployer)
        return m.group("project") if m else ""

    @property
    def passphrase(self) -> bool:
        return self.secrets_provider == "passphrase"

    @classmethod
    def from_config(cls, config: Mapping[str, Any], environment: str) -> "OperatorSettings":
        """`config`: `tenancy:<key>` -> value (strings, as the engine hands config to a program)."""
        from tenancy.envconfig import project_defaults

        naming.check_env(environment)
        defaults = project_defaults()
        where = f"stacks/Pulumi.{environment}.yaml"
        problems: list[str] = []
        values: dict[str, Any] = {"environment": environment}
        for key, (name, kind) in KEYS.items():
            raw = config.get(f"tenancy:{key}")
            raw = defaults.get(key) if raw is None else raw
            if kind == "bool":
                text = str(raw).lower()
                if text not in ("true", "false"):
                    problems.append(f"{where}: tenancy:{key} must be true or false, not '{str(raw)[:40]}'")
                values[name] = text == "true"
            elif kind == "int":
                try:
                    values[name] = int(raw)
                except (TypeError, ValueError):
                    problems.append(f"{where}: tenancy:{key} must be an integer, not '{str(raw)[:40]}'")
                    values[name] = 0
            else:
                values[name] = "" if raw is None else str(raw)
        if problems:
            raise ConfigError("\n".join(problems))
        settings = cls(**values)
        settings._check(where, required=settings.enabled)
        return settings

    @classmethod
    def load(cls, environment: str) -> "OperatorSettings":
        from tenancy.envconfig import load_stack_config

        return cls.from_config(load_stack_config(environment), environment)

    @classmethod
    def from_pulumi(cls, environment: str) -> "OperatorSettings":
        import pulumi

        cfg = pulumi.Config("tenancy")
        return cls.from_config({f"tenancy:{k}": cfg.get(k) for k in KEYS if cfg.get(k) is not None}, environment)

    def require_rollout(self) -> "OperatorSettings":
        """What `--engine operator` needs, whether or not this platform stack installs the operator."""
        self._check(f"stacks/Pulumi.{self.environment}.yaml", required=True)
        return self

    def _check(self, where: str, required: bool) -> None:
        env = self.environment
        problems = []

        def need(key: str, value: str, hint: str) -> bool:
            if value:
                return True
            if required:
                problems.append(f"{where}: tenancy:{key} is required for the Pulumi Kubernetes Operator; set it with "
                                f"`pulumi config set tenancy:{key} <value> -s {env}` ({hint})")
            return False

        if not DNS_LABEL.fullmatch(self.namespace):
            problems.append(f"{where}: tenancy:operatorNamespace '{self.namespace[:63]}' is not a Kubernetes namespace name")
        if need("operatorDeployer", self.deployer, "the deploying identity, e.g. deployer@<project>.iam.gserviceaccount.com") \
                and not GSA_EMAIL.fullmatch(self.deployer):
            problems.append(f"{where}: tenancy:operatorDeployer '{self.deployer[:80]}' is not a service account email "
                            "(<account>@<project>.iam.gserviceaccount.com)")
        if need("projectRepo", self.project_repo, "the git URL of this repository") \
                and not REPO_URL.fullmatch(self.project_repo):
            problems.append(f"{where}: tenancy:projectRepo '{self.project_repo[:80]}' is not a git URL (https://, ssh:// or git@)")
        if need("stateBackend", self.backend, "the state bucket, e.g. gs://acme-pulumi-state") \
                and not self.backend.startswith(BACKENDS):
            problems.append(f"{where}: tenancy:stateBackend '{self.backend[:80]}' must start with one of "
                            f"{', '.join(BACKENDS)} (workspaces are pods: a file:// backend would vanish with them)")
        if need("secretsProvider", self.secrets_provider, "gcpkms://projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>, "
                "or passphrase") and not (self.passphrase or self.secrets_provider.startswith(SECRETS_PROVIDERS)):
            problems.append(f"{where}: tenancy:secretsProvider '{self.secrets_provider[:80]}' must be passphrase or a "
                            f"key URL ({', '.join(SECRETS_PROVIDERS)})")
        if self.repo_dir.startswith("/") or ".." in self.repo_dir.split("/"):
            problems.append(f"{where}: tenancy:repoDir '{self.repo_dir[:80]}' must be a path inside the repository")
        if not 1 <= self.max_concurrent_reconciles <= 500:
            problems.append(f"{where}: tenancy:operatorMaxConcurrentReconciles must be between 1 and 500")
        if self.git_auth_secret and not DNS_LABEL.fullmatch(self.git_auth_secret):
            problems.append(f"{where}: tenancy:gitAuthSecret '{self.git_auth_secret[:63]}' is not a Secret name")
        if required and not self.workspace_image:
            problems.append(f"{where}: tenancy:workspaceImage must name the workspace image")
        if problems:
            raise ConfigError("\n".join(problems))
