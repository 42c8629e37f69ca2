"""Cards from PNG (V1/V2 `chara`, V3 `ccv3`) and JSON files, the persona they make, and
hostile files: each refused with one clear InvalidCardError, never another exception."""

from __future__ import annotations

import base64
import struct
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.cards.card import MAX_CARD_BYTES, MAX_FIELD_CHARS, Card, parse_card
from shared.cards.persona import fill_user, persona_of
from shared.cards.png import read_png
from shared.errors import InvalidCardError
from tests.characters.card_files import (
    SIGNATURE,
    card_png,
    encoded,
    picture_chunks,
    v1,
    v2,
    v2_png,
    v3,
)

FULL: dict[str, Any] = {
    "personality": "warm, curious",
    "scenario": "{{char}} meets <USER> in a café.",
    "first_mes": "Hi {{User}}! I'm <BOT>.",
    "mes_example": "<START>\n{{user}}: hi\n{{char}}: hello",
    "tags": ["Romance", "NSFW"],
    "creator": "tester",
}


@pytest.mark.parametrize("make", [v1, v2, v3], ids=["v1", "v2", "v3"])
def test_a_json_card_of_each_version_is_read(make: Any) -> None:
    card = parse_card(orjson.dumps(make(**FULL)))

    assert card.name == "Луна"
    assert card.version == {v1: 1, v2: 2, v3: 3}[make]
    assert card.first_mes == FULL["first_mes"]
    assert card.nsfw
    assert card.avatar is None
    assert card.key == "tester/луна"


def test_a_png_card_keeps_its_picture_without_the_card_as_the_avatar() -> None:
    data = v2_png(v2(**FULL))

    card = parse_card(data)

    assert card.name == "Луна"
    assert card.avatar is not None
    avatar = read_png(card.avatar)
    assert avatar.texts == {}
    assert (avatar.width, avatar.height) == (4, 4)
    assert b"tEXt" not in card.avatar
    assert len(card.avatar) < len(data)


def test_a_v3_chunk_is_preferred_to_the_v2_copy() -> None:
    data = card_png({"chara": encoded(v2(name="Old")), "ccv3": encoded(v3(name="New"))})

    card = parse_card(data)

    assert (card.name, card.version) == ("New", 3)


def test_a_v1_card_in_a_png_is_read() -> None:
    assert parse_card(v2_png(v1(name="Flat"))).name == "Flat"


def test_a_picture_telegram_would_refuse_as_a_photo_is_not_kept_as_avatar() -> None:
    card = parse_card(v2_png(v2(), width=9000, height=2000))

    assert card.name == "Луна"
    assert card.avatar is None


def test_the_persona_fills_the_characters_name_and_keeps_the_user_for_later() -> None:
    card = parse_card(orjson.dumps(v2(system_prompt="Be {{char}}. {{original}}", **FULL)))

    persona = persona_of(card)

    assert persona.greeting == "Hi {{user}}! I'm Луна."
    assert fill_user(persona.greeting, "Анна") == "Hi Анна! I'm Луна."
    prompt = fill_user(persona.system_prompt, "Анна")
    assert prompt.startswith("Be Луна. You are Луна.")
    for part in ("Луна is a test character.", "warm, curious", "Луна meets Анна in a café."):
        assert part in prompt
    assert "<START>\nАнна: hi\nЛуна: hello" in prompt
    assert "{{" not in prompt
    assert "<BOT>" not in prompt
    assert "<USER>" not in prompt
    assert "NSFW" not in persona.appearance
    assert persona.appearance == "Луна, Romance"


def test_a_card_without_a_greeting_has_none() -> None:
    assert persona_of(parse_card(orjson.dumps(v1()))).greeting is None


def test_a_card_may_name_its_voice_and_a_bad_name_is_refused() -> None:
    card = parse_card(orjson.dumps(v2(extensions={"voice": "af_nicole", "other": 1})))
    assert card.voice == "af_nicole"
    assert parse_card(orjson.dumps(v2(extensions={"other": 1}))).voice is None
    for bad in ("", "a voice", "x" * 101, 7):
        with pytest.raises(InvalidCardError, match=r"extensions\.voice"):
            parse_card(orjson.dumps(v2(extensions={"voice": bad})))


def _png_with(*chunks: bytes) -> bytes:
    return SIGNATURE + b"".join(chunks)


HEADER, PIXELS, END = picture_chunks()
HOSTILE: list[tuple[str, bytes, str]] = [
    ("empty", b"", "neither a PNG nor a JSON"),
    ("text", b"hello", "neither a PNG nor a JSON"),
    ("signature only", SIGNATURE, "cut short"),
    ("no IEND", _png_with(HEADER, PIXELS), "cut short"),
    ("bad CRC", _png_with(HEADER[:-1] + b"\x00", PIXELS, END), "CRC"),
    ("length past the end", _png_with(struct.pack(">I", 2**31) + b"tEXt" + b"x" * 8), "past"),
    ("no IHDR", _png_with(PIXELS, END), "IHDR"),
    ("no card chunk", _png_with(HEADER, PIXELS, END), "no character card"),
    ("bad base64", card_png({"chara": b"not base64!!"}), "base64"),
    ("base64 of garbage", card_png({"chara": base64.b64encode(b"\xff\xfe{")}), "JSON"),
    ("JSON array", b"[1, 2]", "neither"),
    ("JSON array in PNG", card_png({"chara": base64.b64encode(b"[1]")}), "must be an object"),
    ("bad JSON", b"{ nope", "not valid UTF-8 JSON"),
    ("no name", orjson.dumps({"description": "x"}), "no name"),
    ("blank name", orjson.dumps(v2(name="   ")), "no name"),
    ("long name", orjson.dumps(v2(name="x" * 101)), "name is longer"),
    ("number name", orjson.dumps({"name": 5}), "`name` must be text, not a number"),
    ("list field", orjson.dumps(v2(description=["a"])), "`description` must be text"),
    ("huge field", orjson.dumps(v2(scenario="x" * (MAX_FIELD_CHARS + 1))), "`scenario` is longer"),
    ("NUL", orjson.dumps(v2(personality="a\0b")), "NUL"),
    ("tags not a list", orjson.dumps(v2(tags="nsfw")), "`tags`"),
    ("tag not text", orjson.dumps(v2(tags=[1])), "`tags`"),
    ("unknown spec", orjson.dumps({"spec": "chara_card_v9", "data": {}}), "unknown card spec"),
    ("spec not text", orjson.dumps({"spec": 2, "data": {}}), "unknown card spec"),
    ("data not object", orjson.dumps({"spec": "chara_card_v2", "data": []}), "`data`"),
    ("deep JSON", b"{" + b'"a":[' * 5000 + b"]" * 5000 + b"}", "JSON"),
    ("huge number", b'{"name": 1' + b"0" * 400 + b"}", "JSON"),
]


@pytest.mark.parametrize(
    ("data", "expected"), [(d, e) for _, d, e in HOSTILE], ids=[n for n, _, _ in HOSTILE]
)
def test_a_hostile_file_is_refused_with_a_clear_reason(data: bytes, expected: str) -> None:
    with pytest.raises(InvalidCardError) as caught:
        parse_card(data)

    assert expected in str(caught.value)


def test_a_file_over_the_limit_is_refused_before_it_is_read() -> None:
    with pytest.raises(InvalidCardError, match="larger than"):
        parse_card(b"{" + b" " * MAX_CARD_BYTES + b"}")


def test_a_prompt_too_large_for_a_task_is_refused() -> None:
    fields = dict.fromkeys(("description", "personality"), "я" * (MAX_FIELD_CHARS - 10))

    with pytest.raises(InvalidCardError, match="system prompt over"):
        persona_of(parse_card(orjson.dumps(v2(**fields))))


def _outcome(data: bytes) -> Card | None:
    """The card, or None when refused; any other exception fails the test."""
    try:
        return parse_card(data)
    except InvalidCardError:
        return None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
card_like = st.fixed_dictionaries(
    {},
    optional={
        "spec": st.sampled_from(["chara_card_v2", "chara_card_v3", "x"]) | json_values,
        "name": st.text(max_size=120) | json_values,
        "description": st.text() | json_values,
        "first_mes": st.text() | json_values,
        "tags": st.lists(st.text(max_size=10)) | json_values,
        "data": json_values,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_else(data: bytes) -> None:
    _outcome(data)
    _outcome(SIGNATURE + data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(card_like)
def test_arbitrary_card_shaped_json_never_raises_anything_else(document: dict[str, Any]) -> None:
    card = _outcome(v2_png(document))
    if card is not None:
        try:
            persona = persona_of(card)
        except InvalidCardError:
            return
        assert persona.name == card.name


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0), st.integers(min_value=0, max_value=255))
def test_a_damaged_card_png_is_refused_or_read_never_crashes(where: int, value: int) -> None:
    data = bytearray(v2_png(v2(**FULL)))
    data[where % len(data)] = value
    _outcome(bytes(data))
