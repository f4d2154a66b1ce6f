"""What a single value of the catalogue must be: the formats of ids, emails, domains, projects and plan names,
the Google Cloud regions, the id and subdomain rule, and how a value is quoted back in a message; with the one
strict base every model of the catalogue builds on."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict

from tenancy import naming

# Every pattern is applied with fullmatch: `$` alone would also match before a trailing newline.
ID_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
EMAIL_PATTERN = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+")
DOMAIN_PATTERN = re.compile(r"(?=.{4,253}\Z)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
GCP_PROJECT_PATTERN = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]")
PLAN_NAME_PATTERN = re.compile(r"[a-z][a-z0-9-]{1,30}")

# Values echoed in messages are cut short, so a huge value never lands in a message.
ECHO_CHARS = 60


def echo(value: Any) -> str:
    """A value as a message quotes it: cut to ECHO_CHARS with an ellipsis, control characters escaped
    (a newline in a value must not split a problem over two lines)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return {"inf": ".inf", "-inf": "-.inf"}.get(str(value), ".nan")
    if isinstance(value, (dict, list, tuple)):
        return "a mapping" if isinstance(value, dict) else "a list"
    text = str(value)
    cut = text[:ECHO_CHARS] + ("…" if len(text) > ECHO_CHARS else "")
    return "'" + "".join(c if c.isprintable() else repr(c)[1:-1] for c in cut) + "'"


# Google Cloud regions. A region outside this list is almost always a typo ("europe-west" or "us-east").
GCP_REGIONS = frozenset({
    "africa-south1", "asia-east1", "asia-east2", "asia-northeast1", "asia-northeast2", "asia-northeast3",
    "asia-south1", "asia-south2", "asia-southeast1", "asia-southeast2", "australia-southeast1",
    "australia-southeast2", "europe-central2", "europe-north1", "europe-north2", "europe-southwest1",
    "europe-west1", "europe-west2", "europe-west3", "europe-west4", "europe-west6", "europe-west8",
    "europe-west9", "europe-west10", "europe-west12", "me-central1", "me-central2", "me-west1",
    "northamerica-northeast1", "northamerica-northeast2", "northamerica-south1", "southamerica-east1",
    "southamerica-west1", "us-central1", "us-east1", "us-east4", "us-east5", "us-south1", "us-west1",
    "us-west2", "us-west3", "us-west4",
})


class Strict(BaseModel):
    """One strict base: unknown keys are errors, values are immutable once loaded."""

    # Pattern fields use pydantic's Rust regex engine, where `$` matches only at the very end (a trailing
    # newline does not pass); pinned here because the Python engine would let it through.
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False, regex_engine="rust-regex")


def check_name(value: str, what: str) -> str:
    """The id/subdomain rule; the message names the value and the fix."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string")
    if not 3 <= len(value) <= 50:
        raise ValueError(f"{what} {echo(value)} has {len(value)} characters; use 3 to 50")
    if not ID_PATTERN.fullmatch(value):
        raise ValueError(
            f"{what} {echo(value)} may contain only lowercase letters, digits and hyphens, and must not start or end with a hyphen"
        )
    if "--" in value:
        raise ValueError(f"{what} '{value}' contains '--' (reserved for derived names and punycode); use single hyphens")
    if value in naming.RESERVED_NAMES:
        raise ValueError(f"{what} '{value}' is reserved; choose another {what}")
    if what == "id":
        reason = naming.platform_collision(value)
        if reason:
            raise ValueError(f"tenant id '{value}' is reserved: {reason}; choose another id")
    elif value in naming.PLATFORM_WORDS:
        raise ValueError(f"{what} '{value}' is reserved: it is the name of the platform's "
                         f"{naming.PLATFORM_WORDS[value]}; choose another {what}")
    return value
