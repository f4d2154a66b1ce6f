"""Problems as a person reads them: each pydantic error and YAML error turned into one line naming the file, the
line, the tenant (its id, or its position when the id itself is bad) or plan, the field, and what to do; and the
list of them in the order of their lines, cut off past MAX_PROBLEMS."""

from __future__ import annotations

import difflib
from typing import Any, Iterable, Mapping

import yaml
from pydantic import BaseModel, ValidationError

from tenancy.catalog.models import CatalogFile
from tenancy.catalog.plans import Plan
from tenancy.catalog.reader import MAX_FILE_BYTES, line_for
from tenancy.catalog.values import check_name, echo
from tenancy.errors import Problem

# Past this many problems a file is not a catalogue with typos; stop rather than print a million lines.
MAX_PROBLEMS = 100


def _fix_for(err: Mapping[str, Any], model_fields: Iterable[str]) -> str:
    """Turn one pydantic error into a sentence that says what to do."""
    kind = err["type"]
    loc = err["loc"]
    field = str(loc[-1]) if loc else ""
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(field, list(model_fields), n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"allowed keys: {', '.join(sorted(model_fields))}"
        return f"unknown key {echo(field)}; remove it or fix the spelling ({hint})"
    if kind == "missing":
        if tuple(loc) == ("version",):
            return MISSING_VERSION
        return "is required; add it"
    if kind == "enum":
        expected = err.get("ctx", {}).get("expected", "")
        return f"{echo(err.get('input'))} is not allowed; use one of {expected}"
    if kind in _TYPE_FIXES:
        return f"{echo(err.get('input'))} {_TYPE_FIXES[kind]}"
    msg = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    if kind in ("string_pattern_mismatch",):
        return f"{echo(err.get('input'))} has the wrong format; {msg[0].lower() + msg[1:]}"  # the pattern keeps its case
    if kind.startswith(("int_", "float_", "greater_than", "less_than", "string_", "bool_", "list_", "dict_", "tuple_")):
        return f"{echo(err.get('input'))}: {msg[0].lower() + msg[1:]}"
    return msg


MISSING_VERSION = "the catalogue has no 'version' (an empty or truncated file?); add `version: 1`"
# Strict types: what a value of the wrong type gets told (YAML's `yes`, "5" and 5.5 are not counts).
_TYPE_FIXES = {
    "int_type": "is not a whole number; write digits without quotes, e.g. 5",
    "int_from_float": "is not a whole number; write digits without quotes, e.g. 5",
    "float_type": "is not a number; write it without quotes, e.g. 2 or 0.5",
    "finite_number": "is not a finite number; write a number, e.g. 2 or 0.5",
    "bool_type": "is not true or false; write true or false without quotes",
    "string_type": "is not text; write it as a string",
}


def _fields_at(loc: tuple) -> list[str]:
    """The keys allowed where `loc` points (for 'did you mean' hints on unknown keys)."""
    model: type[BaseModel] = CatalogFile
    parts = list(loc[:-1])
    i = 0
    while i < len(parts):
        part = parts[i]
        if isinstance(part, int):
            i += 1
            continue
        if model is CatalogFile and part == "plans":
            model, i = Plan, i + 2  # skip the plan's name
            continue
        field = model.model_fields.get(str(part))
        nxt = _model_in(field.annotation) if field else None
        if nxt is None:
            break
        model, i = nxt, i + 1
    return list(model.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


class Who:
    """Names the place a problem is in: a tenant (by id, or by position when the id is bad) or a plan."""

    def __init__(self, raw: Any):
        self.raw = raw if isinstance(raw, dict) else {}

    def tenant_label(self, index: int) -> str:
        tenants = self.raw.get("tenants")
        entry = tenants[index] if isinstance(tenants, list) and index < len(tenants) else None
        tid = entry.get("id") if isinstance(entry, dict) else None
        if isinstance(tid, str):
            try:
                check_name(tid, "id")
                return f"tenant '{tid}'"
            except ValueError:
                pass
        return f"tenants[{index}] (position {index + 1})"


def _where(who: Who, loc: tuple) -> tuple[str | None, str]:
    """(tenant-or-plan label, dotted field) for a pydantic location."""
    dotted = lambda parts: ".".join(echo(p)[1:-1] if isinstance(p, str) else str(p) for p in parts)  # noqa: E731
    if len(loc) >= 2 and loc[0] == "tenants" and isinstance(loc[1], int):
        return who.tenant_label(loc[1]), dotted(loc[2:]) or "(entry)"
    if len(loc) >= 2 and loc[0] == "plans":
        return f"plan {echo(loc[1])}", dotted(loc[2:]) or "(entry)"
    return None, dotted(loc) or "(file)"


def ordered(problems: list[Problem], path: str, capped: bool = False) -> list[Problem]:
    """Problems in the order of their lines, at most MAX_PROBLEMS of them (then a last line saying so)."""
    out = sorted(problems, key=lambda p: p.line or 0)
    if capped or len(out) > MAX_PROBLEMS:
        out = out[:MAX_PROBLEMS] + [Problem(path, None, None, "(file)", f"stopped after {MAX_PROBLEMS} problems (the "
                                            "limit); fix these and run again")]
    return out


def too_large(path: str, size: int) -> Problem:
    return Problem(path, None, None, "(file)", f"the file has {size:,} bytes or more, over the limit of "
                   f"{MAX_FILE_BYTES:,} bytes ({MAX_FILE_BYTES // 2**20} MiB); is it the catalogue you meant to pass?")


def _cut(text: str, limit: int) -> str:
    """One line of at most `limit` characters (parser messages can quote the input)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def validation_problems(exc: ValidationError, path: str, lines: Mapping[tuple, int], who: Who,
                        prefix: tuple) -> list[Problem]:
    """One problem per pydantic error, at its line, under the tenant or plan it is in (`prefix`: where the
    validated value sits in the file)."""
    out = []
    for err in exc.errors():
        loc = prefix + tuple(err["loc"])
        label, field = _where(who, loc)
        out.append(Problem(path, line_for(lines, loc), label, field, _fix_for(err, _fields_at(loc))))
    return out


def syntax_problem(exc: yaml.YAMLError, path: str) -> Problem:
    """The YAML parser's error as one line, at the line it points to when it says."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        what = _cut(exc.problem or str(exc), 200)
        return Problem(path, line, None, "(syntax)", f"YAML syntax error: {what}; fix the YAML at this line")
    return Problem(path, None, None, "(syntax)", f"YAML error: {_cut(str(exc), 200)}")
