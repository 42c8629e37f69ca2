"""Every Lua step, the queue's and the bot's: the KEYS and ARGV it declares are the ones its
`keys()`/`args()` build, field by field, and the ones its script reads; and every script runs
through the one runner, announcing only through the topology's `publish()`."""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import redis.asyncio as aioredis

from producer.bot_steps import BudgetAnswered, BudgetRelease, BudgetTake, TurnLeave
from shared.queue.scripts import Scripts
from shared.queue.steps import Arg, Step, names
from tests.support.private_redis import PrivateRedis
from tests.support.step_contracts import contract_problems

ROOT = Path(__file__).resolve().parents[2]
_STEP_CLASS = re.compile(r"^class (\w+)\((\w*Step)\):", re.MULTILINE)
_PUBLISH_BY_HAND = re.compile(r"""call\(\s*['"]s?publish['"]""", re.IGNORECASE)


def _declared_in_source() -> dict[str, str]:
    """Class name -> module of every `class X(...Step)` outside the tests."""
    found: dict[str, str] = {}
    for package in ("shared", "db", "producer", "consumers", "dashboard", "scripts", "bench"):
        for path in sorted((ROOT / package).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            for name, _ in _STEP_CLASS.findall(path.read_text(encoding="utf-8")):
                found[name] = module
    return found


def _subclasses(cls: type[Step]) -> Iterator[type[Step]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def all_steps() -> list[type[Step]]:
    """Every concrete step of the project (a step names its script)."""
    declared = _declared_in_source()
    for module in set(declared.values()):
        importlib.import_module(module)
    # A slotted dataclass replaces its class: only the one its module holds counts.
    steps = {
        cls
        for cls in _subclasses(Step)
        if not cls.__module__.startswith("tests.")
        and "script" in dir(cls)
        and getattr(sys.modules[cls.__module__], cls.__name__, None) is cls
    }
    return sorted(steps, key=lambda cls: cls.__name__)


STEPS = all_steps()


def test_every_step_class_of_both_owners_is_checked() -> None:
    abstract = {"BotStep"}
    assert {cls.__name__ for cls in STEPS} == set(_declared_in_source()) - abstract
    assert {"shared.queue.steps", "producer.bot_steps"} <= {cls.__module__ for cls in STEPS}


@pytest.mark.parametrize("cls", STEPS, ids=lambda cls: cls.__name__)
def test_a_steps_declared_keys_and_args_are_what_it_builds_and_its_script_reads(
    cls: type[Step],
) -> None:
    problems = contract_problems(cls)
    assert not problems, "\n".join(problems)


def test_script_names_are_unique_across_owners_and_none_publishes_by_hand() -> None:
    libraries: list[Mapping[str, str]] = []
    for cls in STEPS:
        if all(cls.library is not seen for seen in libraries):
            libraries.append(cls.library)
    seen: dict[str, str] = {}
    for library in libraries:
        for name, body in library.items():
            assert seen.setdefault(name, body) == body, f"two scripts named {name}"
            assert not _PUBLISH_BY_HAND.search(body), name
    assert any(name.startswith("bot_") for name in seen)


def test_no_script_is_run_outside_the_runner() -> None:
    """No ad-hoc register_script or EVAL: every script is a step run by shared.queue.scripts."""
    pattern = re.compile(r"register_script|\.eval\(|\.evalsha\(|\.fcall\(")
    offenders = [
        str(path.relative_to(ROOT))
        for package in ("shared", "db", "producer", "consumers", "dashboard", "scripts", "bench")
        for path in (ROOT / package).rglob("*.py")
        if pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == ["shared/queue/scripts.py"]


# The check itself catches each kind of mismatch.

_LIBRARY = {
    "t_reads_more": "return redis.call('GET', KEYS[1]) .. ARGV[1] .. ARGV[2]",
    "t_reads_less": "return redis.call('GET', KEYS[1])",
    "t_pair": "return redis.call('SET', KEYS[1], ARGV[1] .. ARGV[2])",
    "t_loop": "return redis.call('GET', KEYS[1])",
}


class _TestStep(Step):
    library: ClassVar[Mapping[str, str]] = _LIBRARY


@dataclass(frozen=True, slots=True)
class _ReadsMore(_TestStep):
    script: ClassVar[str] = "t_reads_more"
    key_names = names("key")
    arg_names = names("first")
    key: str
    first: str


@dataclass(frozen=True, slots=True)
class _ReadsLess(_TestStep):
    script: ClassVar[str] = "t_reads_less"
    key_names = names("key")
    arg_names = names("first")
    key: str
    first: str


@dataclass(frozen=True, slots=True)
class _Swapped(_TestStep):
    script: ClassVar[str] = "t_pair"
    key_names = names("key")
    arg_names = names("first second")
    key: str
    first: str
    second: int

    def args(self) -> list[Arg]:
        return [self.second, self.first]


@dataclass(frozen=True, slots=True)
class _Forgotten(_TestStep):
    script: ClassVar[str] = "t_pair"
    key_names = names("key")
    arg_names = names("first second")
    key: str
    first: str
    second: int

    def args(self) -> list[Arg]:
        return [self.first]


@dataclass(frozen=True, slots=True)
class _UnreadTail(_TestStep):
    script: ClassVar[str] = "t_loop"
    key_names = names("key")
    arg_names = names("ids...")
    key: str
    ids: tuple[str, str]

    def args(self) -> list[Arg]:
        return list(self.ids)


@dataclass(frozen=True, slots=True)
class _Dropped(_TestStep):
    script: ClassVar[str] = "t_reads_less"
    key_names = names("key")
    arg_names = names("")
    key: str
    second: int


@pytest.mark.parametrize(
    ("cls", "says"),
    [
        (_ReadsMore, "reads ARGV [1, 2], the step declares [1]"),
        (_ReadsLess, "reads ARGV [], the step declares [1]"),
        (_Swapped, "ARGV[1] is declared 'first' but comes from ['second']"),
        (_Forgotten, "ARGV has 1 values, declared ('first', 'second')"),
        (_UnreadTail, "ARGV has a tail the script never reads"),
        (_Dropped, "field 'second' reaches neither KEYS nor ARGV"),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else "",
)
def test_the_check_catches_a_mismatch(cls: type[Step], says: str) -> None:
    problems = contract_problems(cls)
    assert any(says in problem for problem in problems), problems


# The bot's steps get what the runner gives the queue's: a script cache lost (a restart, a
# promoted replica) is refilled, on a server of the test's own (SCRIPT FLUSH is server-wide).


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    yield server
    server.cleanup()


async def test_the_bots_steps_run_through_a_lost_script_cache(private_redis: PrivateRedis) -> None:
    client = aioredis.Redis.from_url(private_redis.url)
    scripts = Scripts(client)
    try:
        take = BudgetTake("b:{1}:budget", 1000, True, 5000, "owner-1")
        assert await scripts.run(take) == 0  # first use: loaded, then run
        await client.script_flush()
        release = BudgetRelease("b:{1}:budget", "owner-1")
        assert await scripts.run(release) == 1  # NOSCRIPT: everything known is loaded again
        assert await client.hget("b:{1}:budget", "owner") is None
        await client.script_flush()
        [answered] = await scripts.run_all([BudgetAnswered("b:{1}:budget", 1000)])
        assert answered == 1
        assert await scripts.run(TurnLeave("b:{1}:turns", "b:{1}:leases", 1, "t")) == 0
    finally:
        await client.aclose()
