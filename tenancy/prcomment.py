"""The pull-request comment: which stacks change and why, resource counts, policy violations, where each
affected tenant is placed (cell, pool shard, data project), and a Mermaid diagram of them by placement. Pure text from two catalogues (and,
when given, the head's offline plan), so it is checked without GitHub."""

from __future__ import annotations

import re
from typing import Any

from tenancy import naming
from tenancy.catalog import Catalog, Model
from tenancy.changes import Changes
from tenancy.fleet import report
from tenancy.fleet.placement import Placement

MARKER = "<!-- tenancy:preview -->"   # the workflow finds and edits its own comment by this line


def _node(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def _label(text: str) -> str:
    return text.replace('"', "'")


def _groups(head: Catalog, members: list[str], env: str, placement: Placement | None) -> list[tuple[str, str, list[str]]]:
    """(subgraph id, title, tenant ids): pooled tenants by pool shard, namespace tenants by cell, dedicated
    tenants in their own clusters. Without a placement (it was refused), by model only."""
    by_id = {t.id: t for t in head.tenants}
    groups: dict[tuple[int, str], tuple[str, str, list[str]]] = {}
    for tid in members:
        t = by_id[tid]
        placed = placement.tenants.get(tid) if placement else None
        if t.model is Model.POOLED and placed and placed.pool_shard:
            key = (0, f"{naming.unit_index(placed.pool_shard):05d}")
            group = (_node(placed.pool_shard), f"pooled: pool shard {placed.pool_shard} "
                     f"({naming.pool_shard_instance(env, placed.pool_shard)})")
        elif t.model is Model.POOLED:
            key, group = (0, ""), ("pool", f"pooled: shared namespace and database ({env})")
        elif t.model is Model.NAMESPACE and placed and placed.cell:
            key = (1, f"{naming.unit_index(placed.cell):05d}")
            group = (_node(placed.cell), f"namespace: cell {placed.cell} (cluster {naming.cell_cluster(env, placed.cell)})")
        elif t.model is Model.NAMESPACE:
            key, group = (1, ""), ("shared", f"namespace: shared cluster {naming.cluster(env)}")
        else:
            key, group = (2, ""), ("dedicated", "dedicated: own clusters")
        groups.setdefault(key, (*group, []))[2].append(tid)
    return [groups[k] for k in sorted(groups)]


def mermaid(base: Catalog | None, head: Catalog, changes: Changes, env: str, placement: Placement | None = None) -> str:
    """Affected tenants grouped by placement: pool shards, cells, own clusters; arrows for tier moves."""
    affected = _affected(changes)
    head_by_id = {t.id: t for t in head.tenants}
    base_by_id = {t.id: t for t in base.tenants} if base else {}
    lines = ["flowchart LR"]
    members = sorted(tid for tid in affected if tid in head_by_id and head_by_id[tid].in_directory)
    for gid, title, ids in _groups(head, members, env, placement):
        lines.append(f'  subgraph {gid}["{_label(title)}"]')
        for tid in ids:
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


def _affected(changes: Changes) -> set[str]:
    affected: set[str] = set(changes.tenants)
    for stack in [*changes.reasons, *changes.removed]:
        tid = naming.parse_stack_name(stack)[1]
        if tid:
            affected.add(tid)
    return affected


def placement_section(head: Catalog, changes: Changes, env: str, placement: Placement | None,
                      refused: str | None) -> list[str]:
    """Where each affected tenant is (or would be) placed; a refused placement said plainly."""
    if refused:
        return ["", "**Placement refused** — this change cannot be deployed as it is:", "",
                *(f"- {line}" for line in refused.splitlines()), ""]
    if placement is None:
        return []
    by_id = {t.id: t for t in head.tenants}
    rows = [tid for tid in sorted(_affected(changes)) if tid in by_id and by_id[tid].in_directory]
    if not rows:
        return []
    out = ["", "| tenant | placement | how |", "|---|---|---|"]
    for tid in rows:
        how = {"placed": "placed by capacity", "pinned": "pinned in tenants.yaml", "deployed": "as deployed",
               "own": "own cluster"}.get(placement.decided.get(tid, ""), "")
        out.append(f"| `{tid}` | {report.where(by_id[tid], placement.tenants.get(tid), env)} | {how} |")
    return out


def render(base: Catalog | None, head: Catalog, changes: Changes, env: str, plan: dict[str, Any] | None = None,
           base_label: str = "base", placement: Placement | None = None, placement_refused: str | None = None) -> str:
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
    out += placement_section(head, changes, env, placement, placement_refused)
    out += ["", "```mermaid", mermaid(base, head, changes, env, placement), "```", ""]
    return "\n".join(out)
