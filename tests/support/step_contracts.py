"""Checks a Lua step's positional contract three ways: its declared `key_names`/`arg_names`,
what its `keys()`/`args()` put at each position, and which KEYS[n]/ARGV[n] its script reads.

Positions are traced, not trusted: a step is built from sample values, each field is changed
in turn, and the positions that move are the ones that field feeds.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, get_args, get_origin, get_type_hints

from shared.queue.steps import Step

TAIL, OPTIONAL = "...", "?"
_LEN = re.compile(r"^len\((\w+)\)$")


@dataclass(frozen=True)
class Layout:
    """One side (KEYS or ARGV) of a declaration."""

    kind: str
    fixed: tuple[str, ...]  # the named positions, an optional last one included
    optional: bool  # the last fixed position may be left out
    tail: bool  # a tail of any length follows

    @classmethod
    def parse(cls, kind: str, names: Sequence[str]) -> Layout:
        tail = bool(names) and names[-1].endswith(TAIL)
        fixed = tuple(names[:-1] if tail else names)
        optional = bool(fixed) and fixed[-1].endswith(OPTIONAL)
        return cls(kind, tuple(n.removesuffix(OPTIONAL) for n in fixed), optional, tail)

    def field_of(self, position: int) -> str:
        name = self.fixed[position]
        found = _LEN.match(name)
        return found.group(1) if found else name


# Sample values, typed by the step's fields.


def _number(tag: str) -> int:
    return zlib.crc32(tag.encode()) % 1_000_000 + 2


def _inner(hint: Any) -> Any:
    """`X | None` -> X; anything else as it is."""
    if get_origin(hint) in (typing.Union, types.UnionType):
        return next(arg for arg in get_args(hint) if arg is not type(None))
    return hint


def sample(hint: Any, tag: str, length: int = 2) -> Any:
    """A value of type `hint` that differs for every `tag` (sequences of `length` items)."""
    hint = _inner(hint)
    origin = get_origin(hint)
    if origin in (list, Sequence):
        return [sample(get_args(hint)[0], f"{tag}.{i}") for i in range(length)]
    if origin is tuple:
        return tuple(sample(arg, f"{tag}.{i}") for i, arg in enumerate(get_args(hint)))
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return build(hint, tag)
    simple: dict[Any, Any] = {
        bool: True,
        int: _number(tag),
        float: _number(tag) + 0.25,
        str: tag,
        bytes: tag.encode(),
    }
    return simple[hint]


def _optional(hint: Any) -> bool:
    return get_origin(hint) in (typing.Union, types.UnionType) and type(None) in get_args(hint)


def build(cls: type[Any], tag: str, *, none: bool = False) -> Any:
    """`cls` with a sample in every field; with `none`, every optional field left empty."""
    hints = get_type_hints(cls)
    values = {
        f.name: None if none and _optional(hints[f.name]) else sample(hints[f.name], f.name + tag)
        for f in dataclasses.fields(cls)
    }
    return cls(**values)


def _changed(step: Any, name: str, hint: Any) -> Any:
    value = getattr(step, name)
    if isinstance(value, bool):
        return dataclasses.replace(step, **{name: not value})
    return dataclasses.replace(step, **{name: sample(hint, f"{name}'", length=3)})


def _holds_steps(hint: Any) -> bool:
    inner = get_args(hint)
    return get_origin(hint) is list and bool(inner) and issubclass(inner[0], Step)


def variations(step: Any) -> Iterator[tuple[str, Any]]:
    """(field, the step with that field changed); a field holding steps (a batch) is changed
    one inner field at a time, in every inner step at once, named by the inner field."""
    hints = get_type_hints(type(step))
    for f in dataclasses.fields(step):
        items = getattr(step, f.name)
        if _holds_steps(hints[f.name]):
            inner = get_args(hints[f.name])[0]
            for g in dataclasses.fields(inner):
                hint = get_type_hints(inner)[g.name]
                yield (
                    g.name,
                    dataclasses.replace(
                        step, **{f.name: [_changed(item, g.name, hint) for item in items]}
                    ),
                )
        else:
            yield f.name, _changed(step, f.name, hints[f.name])


# The checks.


def _moved(before: list[Any], after: list[Any]) -> set[int]:
    """Positions whose value differs, or that exist on one side only."""
    shared = min(len(before), len(after))
    differ = {i for i in range(shared) if before[i] != after[i]}
    return differ | set(range(shared, max(len(before), len(after))))


def _trace(step: Step) -> dict[str, dict[int, set[str]]]:
    """Per side, per position: the fields whose change moves it."""
    fed: dict[str, dict[int, set[str]]] = {"KEYS": {}, "ARGV": {}}
    for field_name, other in variations(step):
        for side, before, after in (
            ("KEYS", step.keys(), other.keys()),
            ("ARGV", step.args(), other.args()),
        ):
            for position in _moved(before, after):
                fed[side].setdefault(position, set()).add(field_name)
    return fed


def _length_problems(layout: Layout, values: list[Any], label: str) -> list[str]:
    least = len(layout.fixed) - layout.optional
    if len(values) < least or (not layout.tail and len(values) > len(layout.fixed)):
        return [f"{label}: {layout.kind} has {len(values)} values, declared {layout.fixed}"]
    return []


def python_problems(step: Step, label: str) -> list[str]:
    """`keys()`/`args()` against the declaration: lengths, and the field at each position."""
    problems: list[str] = []
    fed = _trace(step)
    for layout, values in (
        (Layout.parse("KEYS", step.key_names), step.keys()),
        (Layout.parse("ARGV", step.arg_names), step.args()),
    ):
        problems += _length_problems(layout, values, label)
        for position in range(min(len(layout.fixed), len(values))):
            found = fed[layout.kind].get(position, set())
            if found != {layout.field_of(position)}:
                problems.append(
                    f"{label}: {layout.kind}[{position + 1}] is declared "
                    f"{layout.fixed[position]!r} but comes from {sorted(found) or 'no field'}"
                )
    return problems


def _reads(body: str, side: str) -> tuple[set[int], bool]:
    """The literal positions the script reads, and whether it also reads computed ones."""
    literal = {int(n) for n in re.findall(rf"\b{side}\[(\d+)\]", body)}
    computed = bool(re.search(rf"\b{side}\[(?!\d+\])|#{side}\b|\(\s*{side}\s*[,)]", body))
    return literal, computed


def lua_problems(step: Step, label: str) -> list[str]:
    """The declaration against the script: every named position read, nothing else read by
    number, and a tail only where the script reads computed positions."""
    problems: list[str] = []
    body = step.body()
    for layout, values in (
        (Layout.parse("KEYS", step.key_names), step.keys()),
        (Layout.parse("ARGV", step.arg_names), step.args()),
    ):
        literal, computed = _reads(body, layout.kind)
        wanted = set(range(1, len(layout.fixed) + 1))
        if literal != wanted:
            problems.append(
                f"{label} ({step.name()}): the script reads {layout.kind} "
                f"{sorted(literal)}, the step declares {sorted(wanted)} {layout.fixed}"
            )
        if len(values) > len(layout.fixed) and not computed:
            problems.append(
                f"{label} ({step.name()}): {layout.kind} has a tail the script never reads"
            )
    return problems


def instances(cls: type[Step]) -> list[Step]:
    """The step with every field filled, and with its optional fields left empty."""
    full, empty = build(cls, ""), build(cls, "", none=True)
    return [full] if full == empty else [full, empty]


def _unused_fields(steps: list[Step], label: str) -> list[str]:
    """Fields that feed no position in any form of the step: dropped on the way to Lua. (A
    batch's inner steps are left out: a batch takes only the fields its kind of step uses.)"""
    cls: Any = type(steps[0])  # a dataclass, as `build` made it
    hints = get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if not _holds_steps(hints[f.name])}
    fed = {
        name
        for step in steps
        for side in _trace(step).values()
        for names_here in side.values()
        for name in names_here
    }
    return [f"{label}: field {name!r} reaches neither KEYS nor ARGV" for name in fields - fed]


def contract_problems(cls: type[Step]) -> list[str]:
    """Everything wrong with `cls`'s contract (empty: its declaration, its builders and its
    script agree)."""
    if not (hasattr(cls, "key_names") and hasattr(cls, "arg_names")):
        return [f"{cls.__name__}: declares no key_names/arg_names"]
    label = cls.__name__
    steps = instances(cls)
    problems = _unused_fields(steps, label)
    for step in steps:
        problems += python_problems(step, label) + lua_problems(step, label)
    return problems
