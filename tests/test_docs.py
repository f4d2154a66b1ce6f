"""The README and docs/ stay usable: a short quick start, links and anchors that resolve, troubleshooting entries
that quote messages the code really prints, and the README sections the code points readers to."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
# Where a message a user reads can come from: the code, the SQL and the scripts (tests and docs excluded, so an
# entry cannot quote itself or a test's expectation).
SOURCE_SUFFIXES = {".py", ".sql", ".sh", ".mjs"}
NOT_SOURCE = {"tests", "docs", "node_modules", "plan"}

LINK = re.compile(r"\[((?:[^\[\]]|\[[^\]]*\])*)\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    out, fence = [], None
    for n, line in enumerate(text.split("\n"), 1):
        m = re.match(r"\s*(```+|~~~+)", line)
        if m:
            if fence is None:
                fence = m.group(1)[0] * 3
            elif m.group(1).startswith(fence):
                fence = None
            continue
        if fence is None:
            out.append((n, line))
    return out


def headings(text: str) -> list[tuple[int, int, str]]:
    """(line number, level, text) of every ATX heading outside code blocks."""
    out = []
    for n, line in prose_lines(text):
        m = re.match(r"(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if m:
            out.append((n, len(m.group(1)), m.group(2)))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text lowercased, punctuation dropped, spaces to hyphens."""
    text = LINK.sub(lambda m: m.group(1), heading)
    text = CODE_SPAN.sub(lambda m: m.group(2), text)
    text = re.sub(r"[*]", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, _, h in headings(path.read_text()):
        s = slug(h)
        if s in seen:
            seen[s] += 1
            s = f"{s}-{seen[s]}"
        else:
            seen[s] = 0
        out.add(s)
    return out


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every Markdown link outside code blocks and code spans."""
    out = []
    for n, line in prose_lines(path.read_text()):
        spans = [m.span() for m in CODE_SPAN.finditer(line)]
        for m in LINK.finditer(line):
            if not any(a <= m.start() < b for a, b in spans):
                out.append((n, m.group(2)))
    return out


def section(text: str, title: str) -> list[str]:
    """The lines of the section whose heading is `title`, up to the next heading of the same or a higher level."""
    lines = text.split("\n")
    hs = headings(text)
    for i, (n, level, h) in enumerate(hs):
        if h == title:
            end = next((m for m, lv, _ in hs[i + 1:] if lv <= level), len(lines) + 1)
            return lines[n - 1:end - 1]
    raise AssertionError(f"{README.name} has no section '{title}'; headings: {[h for _, _, h in hs]}")


def source_text(suffixes: set[str] = SOURCE_SUFFIXES, hidden: tuple[str, ...] = ()) -> str:
    """The text of the project's own files with these suffixes (`hidden`: dot-directories to include)."""
    parts = []
    for p in sorted(ROOT.rglob("*")):
        rel = p.relative_to(ROOT).parts
        if p.suffix in suffixes and p.is_file() and rel[0] not in NOT_SOURCE \
                and not any(part.startswith(".") and part not in hidden for part in rel):
            parts.append(p.read_text(errors="replace"))
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------------------ tests


def test_the_slugs_are_githubs():
    assert slug("The catalogue (`tenants.yaml`)") == "the-catalogue-tenantsyaml"
    assert slug("The operation protocol: one registry, a lease per tenant, a preflight, resumable phases") == \
        "the-operation-protocol-one-registry-a-lease-per-tenant-a-preflight-resumable-phases"
    assert slug("How an application finds a tenant's stores: the client library") == \
        "how-an-application-finds-a-tenants-stores-the-client-library"
    assert slug("`is held by operation`: another command holds the tenant") == \
        "is-held-by-operation-another-command-holds-the-tenant"
    assert slug("Tier moves in CI: `moves.yaml`") == "tier-moves-in-ci-movesyaml"


def test_the_quick_start_is_short_and_gives_the_makefiles_commands_in_order():
    lines = section(README.read_text(), "Quick start")
    assert len(lines) < 60, f"README.md: the Quick start section has {len(lines)} lines; keep it under 60"
    text = "\n".join(lines)
    at = [text.find(c) for c in ("make plan", "make test", "make demo", "make demo-down")]
    assert -1 not in at and at == sorted(at), \
        f"README.md: the Quick start must give make plan, make test, make demo, make demo-down in that order (found at {at})"
    assert ".venv/bin/tenancy" in text, "README.md: the Quick start must name the command line, .venv/bin/tenancy"
    targets = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))
    assert {"plan", "test", "demo", "demo-down"} <= targets, f"Makefile targets: {sorted(targets)}"


def test_the_readme_is_laid_out_as_quick_start_guide_troubleshooting_layout():
    top = [h for _, level, h in headings(README.read_text()) if level == 2]
    order = ["Quick start", "Operating guide", "Troubleshooting", "Layout"]
    assert [h for h in top if h in order] == order, f"README.md: top-level sections {top}"


@pytest.mark.parametrize("doc", [README, *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_and_anchor_resolves(doc):
    assert DOCS, "docs/ holds the reference pages"
    broken = []
    for n, target in links(doc):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):      # http(s):, mailto: -- not checked offline
            continue
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.exists():
            broken.append(f"{doc.relative_to(ROOT)}:{n}: {target}: no file {path}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{doc.relative_to(ROOT)}:{n}: {target}: no heading with anchor #{anchor} in "
                          f"{dest.relative_to(ROOT)}")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_readme_links_to_each_reference_page():
    targets = {t.partition("#")[0] for _, t in links(README)}
    for page in ("docs/performance.md", "docs/security.md", "docs/internals.md"):
        assert page in targets and (ROOT / page).is_file(), f"README.md does not link to {page}"


def test_every_troubleshooting_entry_quotes_a_message_the_code_prints():
    entries = [line for line in section(README.read_text(), "Troubleshooting") if line.startswith("### ")]
    assert len(entries) >= 15, f"README.md: Troubleshooting has {len(entries)} entries; expected at least 15"
    source = source_text()
    missing = []
    for heading in entries:
        m = CODE_SPAN.search(heading)
        assert m and heading.startswith("### `"), \
            f"README.md: troubleshooting entry {heading!r} must start with the message's words in a code span"
        fragment = m.group(2).strip()
        assert len(fragment) >= 10, f"README.md: troubleshooting fragment {fragment!r} is too short to identify a message"
        if fragment not in source:
            missing.append(fragment)
    assert not missing, ("README.md: these troubleshooting fragments occur in no message of the code (tenancy/, sql/, "
                         "scripts/, ...); quote the message as the code now words it:\n" + "\n".join(missing))


def test_each_troubleshooting_entry_shows_the_message_and_what_to_do():
    lines = section(README.read_text(), "Troubleshooting")
    starts = [i for i, line in enumerate(lines) if line.startswith("### ")] + [len(lines)]
    thin = []
    for a, b in zip(starts, starts[1:]):
        body = "\n".join(lines[a + 1:b])
        prose = re.sub(r"```.*?```", "", body, flags=re.S).strip()
        if "```text" not in body or len(prose) < 60:
            thin.append(lines[a])
    assert not thin, "README.md: entries without an example message (```text) or an explanation:\n" + "\n".join(thin)


def test_readme_sections_the_code_points_to_exist():
    """Messages and comments send readers to "README, <section>": each such section must be in the README."""
    titles = [h.lower() for _, _, h in headings(README.read_text())]
    refs = set()
    text = source_text(SOURCE_SUFFIXES | {".yaml", ".yml"}, hidden=(".github", ".ci"))
    for m in re.finditer(r'README,? "([^"]+)"|README, ([A-Z][A-Za-z ]+?)[);.]', text):
        refs.add((m.group(1) or m.group(2)).strip())
    assert {"CI and delivery", "Waves", "Cells, pool shards and placement", "Security"} <= refs, \
        f"the references this test reads: {sorted(refs)}"
    missing = [r for r in sorted(refs) if not any(t.startswith(r.lower()) for t in titles)]
    assert not missing, f"the code refers to README sections that do not exist: {missing}"
