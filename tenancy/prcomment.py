"""The pull-request comment: which stacks change and why, resource counts, policy violations, and a
Mermaid diagram of the affected tenants and where they are placed. Pure text from two catalogues (and,
when given, the head's offline plan), so it is checked without GitHub."""

from __future__ import annotations

import re
from typing import Any

from tenancy import naming
from tenancy.catalog import Catalog, Model
from tenancy.changes import Changes

MARKER = "<!-- tenancy:preview -->"   # the workflow finds and edits its own comment by this line


def _node(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def _label(text: str) -> str:
    return text.replace('"', "'")


def mermaid(base: Catalog | None, head: Catalog, changes: Changes, env: str) -> str:
    """Affected tenants grouped by placement: pool, shared cluster, own clusters; arrows for tier moves."""
    affected: set[str] = set(changes.tenants)
    for stack in [*changes.reasons, *changes.removed]:
        tid = naming.parse_stack_name(stack)[1]
        if tid:
            affected.add(tid)
    head_by_id = {t.id: t for t in head.tenants}
    base_by_id = {t.id: t for t in base.tenants} if base else {}
    lines = ["flowchart LR"]
    groups = {Model.POOLED: ("pool", f"pooled: shared namespace and database ({env})"),
              Model.NAMESPACE: ("shared", f"namespace: shared cluster {naming.cluster(env)}"),
              Model.DEDICATED: ("dedicated", "dedicated: own clusters")}
    for model, (gid, title) in groups.items():
        members = sorted(tid for tid in affected if tid in head_by_id and head_by_id[tid].model is model
                         and head_by_id[tid].in_directory)
        if not members:
            continue
        lines.append(f'  subgraph {gid}["{_label(title)}"]')
        for tid in members:
            t = head_by_id[tid]
            suffix = f" ({t.state.value})" if t.state.value != "active" else ""
            lines.append(f'    {_node(tid)}["{_label(tid)}: {t.plan_name}{suffix}"]')
        lines.append("  end")
    gone = sorted(tid for tid in affected if tid not in head_by_id or not head_by_id[tid].in_directory)
    if gone:
        lines.append('  subgraph gone["removed / offboarded"]')
        for tid in gone:
            lines.append(f'    {_node(tid)}_gone["{_label(tid)}"]')
        lines.append("  end")
    for tid in sorted(affected):
        b, h = base_by_id.get(tid), head_by_id.get(tid)
        if b and h and b.model is not h.model:
            lines.append(f'  {_node(tid)}_was(("{_label(b.plan_name)}")) -->|"{b.model.value} → {h.model.value}"| {_node(tid)}')
    if len(lines) == 1:
        lines.append('  none["no tenant affected"]')
    return "\n".join(lines)


def render(base: Catalog | None, head: Catalog, changes: Changes, env: str, plan: dict[str, Any] | None = None,
           base_label: str = "base") -> str:
    stacks = {s["name"]: s for s in (plan or {}).get("stacks", [])}
    out = [MARKER, f"### tenancy preview ({env})", ""]
    if not changes.reasons and not changes.removed:
        out.append(f"No stack changes compared with `{base_label}`.")
    else:
        out += ["| stack | why | resources | policy violations |", "|---|---|---:|---|"]
        for stack in sorted(changes.reasons, key=lambda s: (s != naming.stack_name(env), s)):
            s = stacks.get(stack)
            count = str(len(s["resources"])) if s else "—"
            viol = "—"
            if s is not None:
                mand = [v for v in s["violations"] if v["enforcement"] == "mandatory"]
                viol = f"**{len(mand)} mandatory**" if mand else ("none" if not s["violations"] else f"{len(s['violations'])} advisory")
            why = "; ".join(changes.reasons[stack]).replace("|", "\\|")
            out.append(f"| `{stack}` | {why} | {count} | {viol} |")
        for stack, why in sorted(changes.removed.items()):
            out.append(f"| `{stack}` | {why} | destroy | — |")
    violations = [(name, v) for name, s in stacks.items() for v in s["violations"] if name in changes.reasons]
    if violations:
        out += ["", "<details><summary>Policy violations</summary>", ""]
        for name, v in violations:
            out.append(f"- **[{v['enforcement']}]** `{name}` `{v['policy']}`: {v['message']}")
        out += ["", "</details>"]
    out += ["", "```mermaid", mermaid(base, head, changes, env), "```", ""]
    return "\n".join(out)
