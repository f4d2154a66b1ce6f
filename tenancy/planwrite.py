"""Writes a plan as its stacks finish: `manifests/<stack>/*.yaml` and each stack's plan.json entry.

A streaming plan (`tenancy plan`) opens a `PlanWriter` on the output directory, worker processes `add()` each
stack as soon as it is planned (its manifests, and its plan.json entry up to its outputs, go to files in a
staging directory), and the parent keeps only a light record per stack. `close()` then writes plan.json by
copying those entries in the plan's order, each followed by what is only known once every stack is done
(violations, reasons, placement), and moves the new manifests in place. The bytes are those of
`json.dumps(result.to_json(), indent=1)` for the same plan. Nothing in the output directory changes until
`close()`; a failed plan (`abort()`) leaves the previous plan as it was.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any, Iterable

import yaml
from yaml.emitter import Emitter

from tenancy.errors import PlanError
from tenancy.recorder import SECRET

K8S_NOT_OBJECTS = ("kubernetes:helm.sh/", "pulumi:providers:")
HEAD_KEYS = ("name", "kind", "tenant", "model", "resources", "outputs")   # an entry's keys up to add(), in order
STAGING = ".plan-staging"
ENTRY_INDENT = "  "   # a stack entry sits two levels deep in plan.json: {"stacks": [{...}]}


# ------------------------------------------------------------------------------------------ manifests

def manifests(stack: Any) -> dict[str, dict[str, Any]]:
    """Every Kubernetes object of a stack, as file name -> manifest."""
    out: dict[str, dict[str, Any]] = {}
    for r in stack.resources:
        if not r["type"].startswith("kubernetes:") or r["type"].startswith(K8S_NOT_OBJECTS):
            continue
        inputs = r["inputs"]
        if "apiVersion" not in inputs or "kind" not in inputs:
            continue
        meta = inputs.get("metadata") or {}
        ns = meta.get("namespace")
        fname = "-".join(p for p in (inputs["kind"].lower(), ns, meta.get("name") or r["name"]) if p) + ".yaml"
        manifest = {"apiVersion": inputs["apiVersion"], "kind": inputs["kind"], "metadata": meta,
                    **{k: v for k, v in inputs.items() if k not in ("apiVersion", "kind", "metadata")}}
        _redact_secret_maps(manifest)
        if fname in out:
            raise PlanError(f"stack '{stack.name}': two Kubernetes objects would be written as {fname}")
        out[fname] = manifest
    return out


def _redact_secret_maps(manifest: dict[str, Any]) -> None:
    """A Secret's data is one secret value to the engine; the manifest keeps the shape, says what was held back."""
    if manifest.get("kind") != "Secret":
        return
    redacted = [k for k in ("data", "stringData") if manifest.get(k) == SECRET]
    for key in redacted:
        manifest[key] = {}
    if redacted:
        meta = dict(manifest.get("metadata") or {})
        meta["annotations"] = {**(meta.get("annotations") or {}), "tenancy.io/redacted": ",".join(redacted)}
        manifest["metadata"] = meta


# YAML is most of what writing a stack costs. libyaml's emitter (CSafeDumper) writes what PyYAML's writes --
# PyYAML's is a port of it -- except for double-quoted scalars, which it folds and escapes its own way. So a
# manifest goes to libyaml unless PyYAML would write one of its scalars double-quoted (or a long or multiline
# key); those manifests stay with PyYAML, which remembers what it wrote for a long scalar in a given emitter
# state and writes it again (every tenant's copy of the tenancy SQL). Either way: `yaml.safe_dump`'s text.
MEMO_MIN_CHARS = 256
MEMO_ENTRIES = 4096
_EMITTER_STATE = ("column", "indent", "whitespace", "indention", "open_ended", "root_context", "best_width",
                  "best_indent", "best_line_break", "allow_unicode")
_WRITTEN: dict[tuple, tuple] = {}
_ANALYSED: dict[tuple, Any] = {}


class _Capture:
    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, data: str) -> None:
        self.parts.append(data)


def _remembered(base):
    def write(self, text, *args):
        if len(text) < MEMO_MIN_CHARS or self.encoding:
            return base(self, text, *args)
        key = (base.__name__, text, args, *(getattr(self, a) for a in _EMITTER_STATE))
        hit = _WRITTEN.get(key)
        if hit is None:
            stream, capture, line = self.stream, _Capture(), self.line
            self.stream = capture
            try:
                base(self, text, *args)
            finally:
                self.stream = stream
            hit = ("".join(capture.parts), self.column, self.whitespace, self.indention, self.open_ended, self.line - line)
            if len(_WRITTEN) >= MEMO_ENTRIES:
                _WRITTEN.clear()
            _WRITTEN[key] = hit
        data, self.column, self.whitespace, self.indention, self.open_ended, lines = hit
        self.line += lines
        self.stream.write(data)
    return write


class ManifestDumper(yaml.SafeDumper):
    """`yaml.SafeDumper`, with the analysis of scalars and the writing of long ones remembered (same output)."""

    write_plain = _remembered(Emitter.write_plain)
    write_single_quoted = _remembered(Emitter.write_single_quoted)
    write_double_quoted = _remembered(Emitter.write_double_quoted)
    write_folded = _remembered(Emitter.write_folded)
    write_literal = _remembered(Emitter.write_literal)

    def analyze_scalar(self, scalar):
        key = (scalar, self.allow_unicode)
        hit = _ANALYSED.get(key)
        if hit is None:
            if len(_ANALYSED) >= MEMO_ENTRIES:
                _ANALYSED.clear()
            hit = _ANALYSED[key] = super().analyze_scalar(scalar)
        return hit


_ANALYSER = ManifestDumper(io.StringIO())
LIBYAML = getattr(yaml, "CSafeDumper", None)
SIMPLE_KEY_CHARS = 128     # longer keys are written in the explicit `? key` form


def _libyaml_writes_it_alike(node: Any) -> bool:
    stack = [(node, False)]
    while stack:
        value, is_key = stack.pop()
        if isinstance(value, dict):
            stack.extend((k, True) for k in value)
            stack.extend((v, False) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, False) for v in value)
        elif isinstance(value, str):
            analysis = _ANALYSER.analyze_scalar(value)
            if not analysis.allow_single_quoted or (is_key and (analysis.multiline or len(value) >= SIMPLE_KEY_CHARS)):
                return False
    return True


def manifest_yaml(manifest: dict[str, Any]) -> str:
    """A manifest file's text: `yaml.safe_dump(manifest, sort_keys=False, default_flow_style=False)`."""
    dumper = LIBYAML if LIBYAML is not None and _libyaml_writes_it_alike(manifest) else ManifestDumper
    return yaml.dump(manifest, Dumper=dumper, sort_keys=False, default_flow_style=False)


def write_manifests(stack: Any, mdir: Path) -> int:
    """The stack's manifests under mdir/<stack>/; how many."""
    files = manifests(stack)
    if files:
        sdir = mdir / stack.name
        sdir.mkdir(parents=True, exist_ok=True)
        for fname, manifest in files.items():
            (sdir / fname).write_text(manifest_yaml(manifest))
    return len(files)


# ------------------------------------------------------------------------------------------ plan.json

def entry_head(stack: Any) -> str:
    """A stack's plan.json entry up to its outputs, as it sits in plan.json, without the closing brace."""
    text = json.dumps({k: getattr(stack, k) for k in HEAD_KEYS}, indent=1, sort_keys=False)
    return ENTRY_INDENT + text[:-2].replace("\n", "\n" + ENTRY_INDENT)


def entry_tail(tail: dict[str, Any]) -> str:
    """The rest of an entry (violations, reasons, placement), closing brace included."""
    text = json.dumps(tail, indent=1, sort_keys=False)
    return ",\n" + ENTRY_INDENT + text[2:].replace("\n", "\n" + ENTRY_INDENT)


def stack_tail(stack: Any) -> dict[str, Any]:
    """What follows the outputs in a stack's entry (StackPlan.to_json's order)."""
    tail: dict[str, Any] = {"violations": stack.violations}
    if stack.reasons:
        tail["reasons"] = stack.reasons
    if stack.placement is not None:
        tail["placement"] = stack.placement
    return tail


class PlanWriter:
    """open(out_dir) -> add(stack) for each stack, from any process -> close(version, environment, stacks) | abort()."""

    def __init__(self, out_dir: str | Path):
        self.out = Path(out_dir)
        self.staging = self.out / STAGING

    @classmethod
    def open(cls, out_dir: str | Path) -> PlanWriter:
        w = cls(out_dir)
        try:
            w.out.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(w.staging, ignore_errors=True)
            (w.staging / "manifests").mkdir(parents=True)
            (w.staging / "entries").mkdir()
            (w.staging / "views").mkdir()
        except OSError as exc:
            raise PlanError(f"{w.out}: cannot write the plan there: {exc.strerror or exc}") from exc
        return w

    def _entry(self, name: str) -> Path:
        return self.staging / "entries" / f"{name}.json"

    def add(self, stack: Any) -> None:
        """Writes a planned stack's manifests and the head of its plan.json entry (the stack keeps its resources)."""
        write_manifests(stack, self.staging / "manifests")
        self._entry(stack.name).write_text(entry_head(stack))

    def spill_view(self, name: str, view: dict[str, Any]) -> Path:
        """A stack's plan view (tenancy.policycheck.plan_view) kept in the staging directory until the plan-wide
        rules read it, so that the parent holds no stack's resources: its memory does not grow with the fleet."""
        from tenancy.policycheck import save_view

        return save_view(self.staging / "views" / f"{name}.marshal", view)

    def close(self, version: int, environment: str, stacks: Iterable[Any], changes: dict[str, Any] | None = None) -> Path:
        """plan.json from the entries added, in the order of `stacks` (each with its violations, reasons and
        placement), and the manifests of those stacks moved in place; stacks added but not listed (run only
        for their outputs) are left out. Returns plan.json's path."""
        stacks = list(stacks)
        outer: dict[str, Any] = {"version": version, "environment": environment, "stacks": [0] if stacks else []}
        if changes is not None:
            outer["changes"] = changes
        before, _, after = json.dumps(outer, indent=1, sort_keys=False).partition("\n" + ENTRY_INDENT + "0\n")
        tmp = self.staging / "plan.json"
        with open(tmp, "w") as f:
            f.write(before if stacks else "")
            for i, s in enumerate(stacks):
                entry = self._entry(s.name)
                if not entry.exists():
                    raise PlanError(f"stack '{s.name}' was not planned into {self.out}")
                f.write("\n" if i == 0 else ",\n")
                with open(entry) as part:
                    shutil.copyfileobj(part, f)
                f.write(entry_tail(stack_tail(s)))
            f.write(("\n" + after) if stacks else json.dumps(outer, indent=1, sort_keys=False))
            f.write("\n")
        listed = {s.name for s in stacks}
        for sdir in (self.staging / "manifests").iterdir():
            if sdir.name not in listed:
                shutil.rmtree(sdir)
        mdir = self.out / "manifests"
        if mdir.exists():
            shutil.rmtree(mdir)
        (self.staging / "manifests").rename(mdir)
        path = self.out / "plan.json"
        tmp.replace(path)
        shutil.rmtree(self.staging, ignore_errors=True)
        return path

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
