"""Secrets: secret inputs come from secret outputs, and no credential sits in a ConfigMap, an env literal or a
URL."""

from __future__ import annotations

import re
from typing import Any

from pulumi_policy import ReportViolation, ResourceValidationArgs

from .common import SECRET_MARKER, UNKNOWN_MARKER, get, walk

SECRET_FIELDS = {
    "gcp:sql/user:User": ("password",),
    "gcp:secretmanager/secretVersion:SecretVersion": ("secretData",),
    "kubernetes:core/v1:Secret": ("data", "stringData"),
}
SECRETISH_KEY = re.compile(r"(password|passwd|token|apikey|api_key|privatekey|private_key|credentials)$", re.I)

URL_USERINFO = re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@\"']+:(?P<pw>[^/\s@\"']+)@", re.I)
SECRETISH_NAME = re.compile(r"(^|[_.-])(password|passwd|pwd|secret|token|api[_-]?key|private[_-]?key|credentials?|dsn)$", re.I)
SECRETISH_ASSIGN = re.compile(r"""\b(password|passwd|pwd|token|api[_-]?key|client_secret|private[_-]?key)["']?\s*[=:]\s*["']?"""
                              r"""(?P<v>[^\s"',;&}]+)""", re.I)
NOT_A_VALUE = re.compile(r"^(\$\(|\$\{|\[secret\]|\[unknown\]|<|\{\{)")


def no_plaintext_secrets(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """Only decidable where secrets are masked (the offline plan): the engine hands policies decrypted values."""
    if not args.get_config().get("secretsMasked"):
        return
    p = args.props
    for field in SECRET_FIELDS.get(args.resource_type, ()):
        value = p.get(field)
        if isinstance(value, dict):
            for k, v in value.items():
                if v not in (SECRET_MARKER, UNKNOWN_MARKER):
                    report(f"secret value {field}.{k} is plain text: it must come from a secret output (pulumi.Output.secret)")
        elif value is not None and value not in (SECRET_MARKER, UNKNOWN_MARKER):
            report(f"secret value {field} is plain text: it must come from a secret output (pulumi.Output.secret)")
    if args.resource_type == "kubernetes:helm.sh/v3:Release":
        for path, v in walk(p.get("values") or {}):
            if SECRETISH_KEY.search(path[-1]) and isinstance(v, str) and v not in (SECRET_MARKER, UNKNOWN_MARKER):
                report(f"Helm value {'.'.join(path)} looks like a secret in plain text; pass a secret name or a secret output")


def _literal_secret(v: Any) -> bool:
    return isinstance(v, str) and bool(v.strip()) and not NOT_A_VALUE.match(v.strip())


def no_credentials_in_config(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """Credentials live in Secret Manager or Kubernetes Secrets: never in ConfigMaps, env literals or URLs."""
    t, p = args.resource_type, args.props
    if t == "kubernetes:core/v1:ConfigMap":
        name = get(p, "metadata", "name")
        for field_ in ("data", "binaryData"):
            for key, value in (p.get(field_) or {}).items():
                if SECRETISH_NAME.search(str(key).rsplit(".", 1)[0] if "." in str(key) else str(key)) and _literal_secret(value):
                    report(f"ConfigMap {name}: key '{key}' holds a credential; ConfigMaps are readable by every reader "
                           "of the namespace: use a Secret")
                elif isinstance(value, str):
                    for m in SECRETISH_ASSIGN.finditer(value):
                        if _literal_secret(m["v"]):
                            report(f"ConfigMap {name}: key '{key}' contains a {m[1]} assignment (a DSN or config with "
                                   "a credential): use a Secret")
                            break
    for path, v in _walk_env(p):
        report(f"{t.split(':')[-1]}: environment variable {path} is set to a literal credential: use valueFrom "
               "a Secret (or a secret name the chart reads)")
    skip = set(SECRET_FIELDS.get(t, ()))
    for path, v in walk(p):
        if path[0] in skip or not isinstance(v, str):
            continue
        m = URL_USERINFO.search(v)
        if m and _literal_secret(m["pw"]):
            report(f"{t.split(':')[-1]}: input {'.'.join(path)} holds a URL with a password (user:password@host): "
                   "pass the credential through a secret")


def _walk_env(p: dict) -> list[tuple[str, Any]]:
    """`env` list entries {name, value} whose name says credential and whose value is a literal."""
    found: list[tuple[str, Any]] = []
    stack: list[tuple[tuple, Any]] = [((), p)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            stack.extend((path + (str(k),), v) for k, v in node.items())
        elif isinstance(node, list):
            is_env = bool(path) and path[-1].lower().endswith("env")
            for i, v in enumerate(node):
                if is_env and isinstance(v, dict) and isinstance(v.get("name"), str) \
                        and SECRETISH_NAME.search(v["name"]) and _literal_secret(v.get("value")):
                    found.append((".".join(path + (str(i),)) + f" ({v['name']})", v["value"]))
                stack.append((path + (str(i),), v))
    return sorted(found)
