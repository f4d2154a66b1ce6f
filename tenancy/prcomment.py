"""The pull-request comment: which stacks change and why, resource counts, policy violations, where each
affected tenant is placed (cell, pool shard, data project), and a Mermaid diagram of them by placement. Pure text from two catalogues (and,
when given, the head's offline plan and `tenancy affected`'s output), so it is checked without GitHub.

At fleet size the comment stays within GitHub's 65,536 characters: beyond ROW_LIMIT stacks the table is
summarised by model (and by cell, when the plan names cells), the diagram draws groups instead of tenants,
and the full table goes to a job artifact (`full=True`). It says how many stacks were previewed for real
and which only offline.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from tenancy import naming
from tenancy.catalog import Catalog, Model
from tenancy.changes import Changes
from tenancy.fleet import report
from tenancy.fleet.placement import Placement

MARKER = "<!-- tenancy:preview -->"   # the workflow finds and edits its own comment by this line
COMMENT_LIMIT = 65_536                # GitHub: characters in a comment body
SOFT_LIMIT = 60_000                   # room for the workflow's own additions
ROW_LIMIT = 150                       # stacks listed one per row; beyond: a summary
MERMAID_LIMIT = 60                    # tenants drawn one by one; beyond: one node per group
VIOLATION_LIMIT = 50
LIST_LIMIT = 20


def _node(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def _cell(text: str) -> str:
    """Text inside a Markdown table cell."""
    return text.replace("|", "\\|")


def _label(text: str) -> str:
    return text.replace('"', "'")


def _affected_tenants(changes: Changes) -> set[str]:
    affected: set[str] = set(changes.tenants)
    for stack in [*changes.reasons, *changes.removed]:
        kind, _, tid = naming.stack_kind(stack)
        if kind == naming.TENANT_STACK:     # a unit stack's name (`dev.cell-1`) names no tenant
            affected.add(tid)
    return affected


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


def mermaid(base: Catalog | None, head: Catalog, changes: Changes, env: str, limit: int | None = MERMAID_LIMIT,
            placement: Placement | None = None) -> str:
    """Affected tenants grouped by placement: pool shards, cells, own clusters; arrows for tier moves.
    Beyond `limit` tenants each group is one node with its count, and moves are counted per direction."""
    affected = _affected_tenants(changes)
    head_by_id = {t.id: t for t in head.tenants}
    base_by_id = {t.id: t for t in base.tenants} if base else {}
    summarise = limit is not None and len(affected) > limit
    lines = ["flowchart LR"]
    shown = sorted(tid for tid in affected if tid in head_by_id and head_by_id[tid].in_directory)
    for gid, title, members in _groups(head, shown, env, placement):
        lines.append(f'  subgraph {gid}["{_label(title)}"]')
        if summarise:
            lines.append(f'    {gid}_n["{len(members):,} tenants"]')
        else:
            for tid in members:
                t = head_by_id[tid]
                suffix = f" ({t.state.value})" if t.state.value != "active" else ""
                lines.append(f'    {_node(tid)}["{_label(tid)}: {t.plan_name}{suffix}"]')
        lines.append("  end")
    gone = sorted(tid for tid in affected if tid not in head_by_id or not head_by_id[tid].in_directory)
    if gone:
        lines.append('  subgraph gone["removed / offboarded"]')
        if summarise:
            lines.append(f'    gone_n["{len(gone):,} tenants"]')
        else:
            for tid in gone:
                lines.append(f'    {_node(tid)}_gone["{_label(tid)}"]')
        lines.append("  end")
    moves: Counter = Counter()
    for tid in sorted(affected):
        b, h = base_by_id.get(tid), head_by_id.get(tid)
        if b and h and b.model is not h.model:
            if summarise:
                moves[(b.model, h.model)] += 1
            else:
                lines.append(f'  {_node(tid)}_was(("{_label(b.plan_name)}")) -->|"{b.model.value} → {h.model.value}"| {_node(tid)}')
    for (frm, to), n in sorted(moves.items(), key=lambda kv: (kv[0][0].value, kv[0][1].value)):
        lines.append(f'  {groups[frm][0]}_n -->|"{n:,} moving: {frm.value} → {to.value}"| {groups[to][0]}_n')
    if len(lines) == 1:
        lines.append('  none["no tenant affected"]')
    return "\n".join(lines)


def placement_section(head: Catalog, changes: Changes, env: str, placement: Placement | None,
                      refused: str | None) -> list[str]:
    """Where each affected tenant is (or would be) placed; a refused placement said plainly."""
    if refused:
        return ["", "**Placement refused** — this change cannot be deployed as it is:", "",
                *(f"- {line}" for line in refused.splitlines()), ""]
    if placement is None:
        return []
    by_id = {t.id: t for t in head.tenants}
    rows = [tid for tid in sorted(_affected_tenants(changes)) if tid in by_id and by_id[tid].in_directory]
    if not rows:
        return []
    out = ["", "| tenant | placement | how |", "|---|---|---|"]
    for tid in rows:
        how = {"placed": "placed by capacity", "pinned": "pinned in tenants.yaml", "deployed": "as deployed",
               "own": "own cluster"}.get(placement.decided.get(tid, ""), "")
        out.append(f"| `{tid}` | {report.where(by_id[tid], placement.tenants.get(tid), env)} | {how} |")
    return out


def render(base: Catalog | None, head: Catalog, changes: Changes, env: str, plan: dict[str, Any] | None = None,
           base_label: str = "base", affected: dict[str, Any] | None = None, details_url: str | None = None,
           full: bool = False, placement: Placement | None = None, placement_refused: str | None = None) -> str:
    """The comment. `full`: every stack's row whatever the size (the job artifact); otherwise a summary
    beyond ROW_LIMIT stacks, always within GitHub's limit."""
    rows = len(changes.reasons) + len(changes.removed)
    if full or rows <= ROW_LIMIT:
        text = _render(base, head, changes, env, plan, base_label, affected, details_url, summarise=False, full=full,
                       placed=(placement, placement_refused))
        if full or len(text) <= SOFT_LIMIT:
            return text
    text = _render(base, head, changes, env, plan, base_label, affected, details_url, summarise=True,
                   placed=(placement, placement_refused))
    if len(text) > SOFT_LIMIT:
        text = _render(base, head, changes, env, plan, base_label, affected, details_url, summarise=True, diagram=False,
                       placed=(placement, placement_refused))
    if len(text) > SOFT_LIMIT:
        text = text[:SOFT_LIMIT] + "\n\n… cut at GitHub's comment limit: the full table is in the job artifact.\n"
    return text


def _stack_group(stack: str, s: dict[str, Any] | None, head: Catalog, env: str) -> str:
    """Summary rows: the stack's cell (when the plan names one) and model."""
    kind = naming.stack_kind(stack)[0]
    if kind == naming.ENV_STACK:
        return "platform"
    if kind != naming.TENANT_STACK:
        return f"platform: {kind} stacks"      # cells, pool shards, identity shards
    model = (s or {}).get("model")
    if model is None:
        tid = naming.parse_stack_name(stack)[1]
        model = next((t.model.value for t in head.tenants if t.id == tid), "unknown")
    cell = (s or {}).get("cell")
    return f"{cell} / {model}" if cell else model


def _violations_cell(s: dict[str, Any] | None) -> str:
    if s is None:
        return "—"
    mand = [v for v in s["violations"] if v["enforcement"] == "mandatory"]
    return f"**{len(mand)} mandatory**" if mand else ("none" if not s["violations"] else f"{len(s['violations'])} advisory")


def _names(stacks: list[str], limit: int = LIST_LIMIT) -> str:
    shown = ", ".join(f"`{s}`" for s in stacks[:limit])
    return shown + (f" and {len(stacks) - limit:,} more (full table)" if len(stacks) > limit else "")


def _previews(changes: Changes, plan: dict[str, Any] | None, affected: dict[str, Any] | None) -> str:
    """How many stacks were previewed for real, and which only offline."""
    planned = len(plan.get("stacks", [])) if plan else 0
    parts = [f"{planned:,} of {len(changes.reasons):,} stack(s) planned offline with the policy pack" if plan
             else "no offline plan (the plan step failed)"]
    if affected is not None:
        real, offline, new = affected.get("real", []), affected.get("offlineOnly", []), affected.get("new", [])
        parts.append(f"{len(real):,} previewed for real (`pulumi preview` in {affected.get('jobs', 0):,} job(s))")
        parts.append(f"{len(offline):,} offline only" + (f": {_names(offline)}" if offline else ""))
        if new:
            parts.append(f"{len(new):,} of those {'is a new stack' if len(new) == 1 else 'are new stacks'}, previewed "
                         "offline only: a preview never creates a stack (the preview account only reads the state)")
    return "**Previews:** " + "; ".join(parts) + "."


def _render(base: Catalog | None, head: Catalog, changes: Changes, env: str, plan: dict[str, Any] | None,
            base_label: str, affected: dict[str, Any] | None, details_url: str | None, *, summarise: bool,
            full: bool = False, diagram: bool = True,
            placed: tuple[Placement | None, str | None] = (None, None)) -> str:
    stacks = {s["name"]: s for s in (plan or {}).get("stacks", [])}
    real = set((affected or {}).get("real", []))
    new = set((affected or {}).get("new", []))
    out = [MARKER, f"### tenancy preview ({env})", ""]
    ordered = sorted(changes.reasons, key=lambda s: (s != naming.stack_name(env), s))
    if not changes.reasons and not changes.removed:
        out.append(f"No stack changes compared with `{base_label}`.")
    elif not summarise:
        preview_col = affected is not None
        out += ["| stack | why | resources | policy violations |" + (" preview |" if preview_col else ""),
                "|---|---|---:|---|" + ("---|" if preview_col else "")]
        for stack in ordered:
            s = stacks.get(stack)
            count = str(len(s["resources"])) if s else "—"
            why = _cell("; ".join(changes.reasons[stack]))
            extra = (" real |" if stack in real else " offline only (new stack) |" if stack in new
                     else " offline only |") if preview_col else ""
            out.append(f"| `{stack}` | {why} | {count} | {_violations_cell(s)} |{extra}")
        for stack, why in sorted(changes.removed.items()):
            out.append(f"| `{stack}` | {why} | destroy | — |" + (" — |" if preview_col else ""))
    else:
        groups: dict[str, list[str]] = {}
        for stack in ordered:
            groups.setdefault(_stack_group(stack, stacks.get(stack), head, env), []).append(stack)
        out += [f"{len(changes.reasons):,} stacks change: summarised by model"
                + (" and cell" if any("cell" in s for s in stacks.values()) else "")
                + (f"; every stack's row is in the [full table]({details_url})" if details_url
                   else "; every stack's row is in the job artifact `preview-details`") + ".", "",
                "| group | stacks | most common reasons | resources | mandatory violations |", "|---|---:|---|---:|---:|"]
        for group, members in sorted(groups.items(), key=lambda kv: (kv[0] != "platform", kv[0])):
            reasons = Counter(r for m in members for r in changes.reasons[m])
            common = _cell("; ".join(f"{r} ({n:,})" for r, n in reasons.most_common(3)))
            planned = [stacks[m] for m in members if m in stacks]
            resources = f"{sum(len(s['resources']) for s in planned):,}" if planned else "—"
            mand = sum(1 for s in planned for v in s["violations"] if v["enforcement"] == "mandatory")
            out.append(f"| {group} | {len(members):,} | {common} | {resources} | {f'**{mand}**' if mand else '0'} |")
        if changes.removed:
            out += ["", f"{len(changes.removed):,} stack(s) would be destroyed (export data first): "
                    + _names(sorted(changes.removed))]
    if changes.reasons:
        out += ["", _previews(changes, plan, affected)]
    violations = [(name, v) for name, s in stacks.items() for v in s["violations"] if name in changes.reasons]
    if violations:
        limit = None if full else VIOLATION_LIMIT
        out += ["", "<details><summary>Policy violations</summary>", ""]
        for name, v in violations[:limit]:
            out.append(f"- **[{v['enforcement']}]** `{name}` `{v['policy']}`: {v['message']}")
        if limit is not None and len(violations) > limit:
            out.append(f"- … and {len(violations) - limit:,} more in the full table")
        out += ["", "</details>"]
    if not summarise:
        out += placement_section(head, changes, env, *placed)
    elif placed[1]:
        out += placement_section(head, changes, env, None, placed[1])
    if diagram:
        out += ["", "```mermaid", mermaid(base, head, changes, env, None if full else MERMAID_LIMIT, placed[0]), "```", ""]
    return "\n".join(out)
