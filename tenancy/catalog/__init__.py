"""The tenant catalogue: `tenants.yaml` parsed into validated, frozen models.

Loading happens in two passes so that one run reports every problem, not only the first: structure (YAML, then
the models) and meaning (rules that need the whole file). Every problem becomes one `Problem` naming the file, the
line, the tenant, the field, and what to do. The file is untrusted input: it is read within limits before
anything is built from it.

One module per role, lowest first:
  values     what a single value must be (formats, regions, the id rule), how a message quotes one
  plans      plans: isolation models, features, limits, the built-in plans
  models     tenants as written, the file, and the resolved Tenant and Catalog
  reader     the untrusted YAML read into a document and its lines (one walk, or the checked path)
  problems   pydantic and YAML errors as one line each, in the order of their lines
  rules      the second pass: the rules across the whole file
  load       parse_catalog and load_catalog: the two passes
  serialise  the JSON Schema, a catalogue written out, a catalogue with one tenant changed
The names below are the catalogue's public interface; import them from here.
"""

from tenancy.catalog.load import load_catalog, parse_catalog
from tenancy.catalog.models import (CATALOG_VERSION, PLACEMENT_KEYS, Catalog, CatalogFile, DedicatedSettings,
                                    PlacementPin, ProjectSettings, State, Tenant, TenantSpec, fit_entry_to_model)
from tenancy.catalog.plans import (BUILTIN_PLANS, DEDICATED_INFRA_FEATURES, DEFAULT_NODE_ISOLATION, LIMIT_FIELDS,
                                   LIMIT_RANGES, DatabaseName, Feature, LimitOverrides, Limits, Model, NodeIsolation,
                                   Plan)
from tenancy.catalog.problems import MAX_PROBLEMS, MISSING_VERSION, ordered
from tenancy.catalog.reader import MAX_DEPTH, MAX_FILE_BYTES, LineLoader, entry_lines, line_for, line_index
from tenancy.catalog.serialise import SCHEMA_PATH, json_schema, to_document, with_tenant
from tenancy.catalog.values import (DOMAIN_PATTERN, ECHO_CHARS, EMAIL_PATTERN, GCP_PROJECT_PATTERN, GCP_REGIONS,
                                    ID_PATTERN, PLAN_NAME_PATTERN, Strict, check_name, echo)
from tenancy.errors import CatalogError, Problem

__all__ = [
    "BUILTIN_PLANS", "CATALOG_VERSION", "DEDICATED_INFRA_FEATURES", "DEFAULT_NODE_ISOLATION", "DOMAIN_PATTERN",
    "ECHO_CHARS", "EMAIL_PATTERN", "GCP_PROJECT_PATTERN", "GCP_REGIONS", "ID_PATTERN", "LIMIT_FIELDS", "LIMIT_RANGES",
    "MAX_DEPTH", "MAX_FILE_BYTES", "MAX_PROBLEMS", "MISSING_VERSION", "PLACEMENT_KEYS", "PLAN_NAME_PATTERN",
    "SCHEMA_PATH", "Catalog", "CatalogError", "CatalogFile", "DatabaseName", "DedicatedSettings", "Feature",
    "LimitOverrides", "Limits", "LineLoader", "Model", "NodeIsolation", "PlacementPin", "Plan", "Problem",
    "ProjectSettings", "State", "Strict", "Tenant", "TenantSpec", "check_name", "echo", "entry_lines",
    "fit_entry_to_model", "json_schema", "line_for", "line_index", "load_catalog", "ordered", "parse_catalog",
    "to_document", "with_tenant",
]
