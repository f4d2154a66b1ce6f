"""Loading a catalogue: the file read within its size limit, then two passes, so that one run reports every
problem, not only the first:
  1. structure: YAML syntax, then the pydantic models (types, formats, unknown keys);
  2. meaning: rules that need the whole file (tenancy.catalog.rules).
The result is one `Catalog`, or one CatalogError carrying every problem (and the catalogue of the entries that
had none)."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from tenancy.catalog.models import CATALOG_VERSION, Catalog, CatalogFile, TenantSpec
from tenancy.catalog.plans import BUILTIN_PLANS
from tenancy.catalog.problems import (MAX_PROBLEMS, Who, ordered, syntax_problem, too_large,
                                      validation_problems)
from tenancy.catalog.reader import MAX_FILE_BYTES, line_for, read_yaml
from tenancy.catalog.rules import apply_rules, partial_spec
from tenancy.errors import CatalogError, Problem


def parse_catalog(text: str, path: str = "tenants.yaml") -> Catalog:
    """Parse and validate catalogue text; raise CatalogError with every problem found."""
    size = len(text) if len(text) * 4 <= MAX_FILE_BYTES else len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_FILE_BYTES:
        raise CatalogError([too_large(path, size)])
    try:
        raw, lines = read_yaml(text, path)
    except yaml.YAMLError as exc:
        raise CatalogError([syntax_problem(exc, path)]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise CatalogError([Problem(path, 1, None, "(file)", "the catalogue must be a mapping with 'plans' and 'tenants' keys")])
    who = Who(raw)
    problems: list[Problem] = []

    # Pass 1 -- structure. Validate tenant entries one by one so that one bad tenant does not hide the others.
    tenants_raw = raw.get("tenants", [])
    head = {k: v for k, v in raw.items() if k != "tenants"}
    parsed_head: CatalogFile | None = None
    try:
        parsed_head = CatalogFile.model_validate({**head, "tenants": []})
    except ValidationError as exc:
        problems.extend(validation_problems(exc, path, lines, who, ()))
        # Still resolve tenants against the declared plans when only the file's other keys are wrong
        # (e.g. a missing version), so that tenants on those plans are not also reported as unknown.
        try:
            parsed_head = CatalogFile.model_validate({"version": CATALOG_VERSION, "plans": head.get("plans", {}), "tenants": []})
        except ValidationError:
            pass
    specs: list[tuple[int, TenantSpec]] = []
    whole: set[int] = set()        # entries that passed pass 1 as written (not rebuilt around broken fields)
    if not isinstance(tenants_raw, list):
        problems.append(Problem(path, line_for(lines, ("tenants",)), None, "tenants", "must be a list of tenants (each entry starts with '- id: ...')"))
        tenants_raw = []
    capped = False
    for i, entry in enumerate(tenants_raw):
        if len(problems) >= MAX_PROBLEMS:
            tenants_raw, capped = tenants_raw[:i], True  # pass 2 checks only the entries pass 1 looked at
            break
        try:
            specs.append((i, TenantSpec.model_validate(entry)))
            whole.add(i)
        except ValidationError as exc:
            problems.extend(validation_problems(exc, path, lines, who, ("tenants", i)))
            partial = partial_spec(entry, exc)
            if partial is not None:
                specs.append((i, partial))

    # Pass 2 -- meaning.
    plans = dict(BUILTIN_PLANS)
    if parsed_head is not None:
        plans.update(parsed_head.plans)
    tenants = apply_rules(tenants_raw, specs, plans, path, lines, who, problems)
    if problems:
        partial = None
        if not capped and len(problems) < MAX_PROBLEMS:
            partial = Catalog(path=path, plans=plans, tenants=tuple(
                t for (i, _), t in zip(specs, tenants) if t is not None and i in whole))
        raise CatalogError(ordered(problems, path, capped), partial)
    return Catalog(path=path, plans=plans, tenants=tuple(t for t in tenants if t is not None))


def load_catalog(path: str | Path = "tenants.yaml") -> Catalog:
    p = Path(path)
    try:
        # Read at most one byte past the limit: /dev/zero or a 50 MB file costs no more than 16 MiB.
        with p.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise CatalogError([too_large(str(path), len(data))])
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise CatalogError([Problem(str(path), None, None, "(file)", "file not found; pass --tenants FILE or create tenants.yaml")]) from None
    except IsADirectoryError:
        raise CatalogError([Problem(str(path), None, None, "(file)", "is a directory; pass the catalogue file")]) from None
    except PermissionError:
        raise CatalogError([Problem(str(path), None, None, "(file)", "permission denied; check the file's permissions")]) from None
    except UnicodeDecodeError:
        raise CatalogError([Problem(str(path), None, None, "(file)", "not UTF-8 text; save the file as UTF-8")]) from None
    return parse_catalog(text, str(path))
