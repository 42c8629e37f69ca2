"""A character card read from a PNG (tEXt `ccv3` preferred, else `chara`) or a JSON file.

Card formats (public specs): V1 is a flat object (`name`, `description`, `personality`,
`scenario`, `first_mes`, `mes_example`); V2 is `{"spec": "chara_card_v2", "data": {...}}`
with those fields plus `system_prompt`, `tags`, `creator`...; V3 (`chara_card_v3`) keeps the
V2 fields inside `data`. The PNG keeps the card as base64 JSON in a tEXt chunk.
Everything here is untrusted: each failure is one InvalidCardError naming the problem.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from shared.cards.png import is_png, read_png
from shared.errors import InvalidCardError

# A card file (the bot downloads at most 20 MB, and a card PNG is rarely over 2).
MAX_CARD_BYTES = 10 * 1024 * 1024
# The characters table's name column.
MAX_NAME_CHARS = 100
# Each text field; the persona built from them is checked again as a whole.
MAX_FIELD_CHARS = 20_000
MAX_TAGS = 100
_SPECS = {"chara_card_v2": 2, "chara_card_v3": 3}
_TEXT_FIELDS = (
    "description",
    "personality",
    "scenario",
    "first_mes",
    "mes_example",
    "system_prompt",
    "creator",
)

# A voice name as TTS servers take it (e.g. af_sky), short and plain.
_VOICE = re.compile(r"[A-Za-z0-9_.-]{1,100}")


@dataclass(frozen=True, slots=True)
class Card:
    """The fields of a card this bot uses, each checked for type and size."""

    name: str
    description: str = ""
    personality: str = ""
    scenario: str = ""
    first_mes: str = ""
    mes_example: str = ""
    system_prompt: str = ""
    creator: str = ""
    tags: tuple[str, ...] = ()
    version: int = 1
    # A text-to-speech voice for 🔊 (`extensions.voice`, this bot's own extension field).
    voice: str | None = None
    # The PNG's picture without its text chunks; None for a JSON card or an unusable size.
    avatar: bytes | None = None

    @property
    def nsfw(self) -> bool:
        return any(tag.strip().lower() == "nsfw" for tag in self.tags)

    @property
    def key(self) -> str:
        """Stable across re-imports of the same card: its creator and name."""
        return f"{self.creator.strip().lower()}/{self.name.strip().lower()}"[:255]


def parse_card(data: bytes) -> Card:
    """The card in a PNG or JSON file's bytes; InvalidCardError if it is not a usable one."""
    if len(data) > MAX_CARD_BYTES:
        raise InvalidCardError(f"file is larger than {MAX_CARD_BYTES // (1024 * 1024)} MB")
    if is_png(data):
        return _from_png(data)
    if data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
        return card_from_json(data.lstrip(b"\xef\xbb\xbf"))
    raise InvalidCardError("neither a PNG nor a JSON file")


def _from_png(data: bytes) -> Card:
    png = read_png(data)
    # V3 first where present: it is the newer copy of the same card.
    keyword = "ccv3" if "ccv3" in png.texts else "chara"
    encoded = png.texts.get(keyword)
    if encoded is None:
        raise InvalidCardError("PNG has no character card (no tEXt chunk `chara` or `ccv3`)")
    try:
        decoded = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidCardError(f"PNG chunk `{keyword}` is not valid base64") from None
    avatar = png.picture if png.photo_ok else None
    return dataclasses.replace(card_from_json(decoded), avatar=avatar)


def card_from_json(raw: bytes) -> Card:
    try:
        document = orjson.loads(raw)
    except (ValueError, RecursionError):  # orjson's decode error is a ValueError
        raise InvalidCardError("card is not valid UTF-8 JSON") from None
    if not isinstance(document, Mapping):
        raise InvalidCardError("card JSON must be an object")
    spec = document.get("spec")
    if spec is None:
        return _fields(document, version=1)
    version = _SPECS.get(spec) if isinstance(spec, str) else None
    if version is None:
        raise InvalidCardError("unknown card spec (expected chara_card_v2 or chara_card_v3)")
    body = document.get("data")
    if not isinstance(body, Mapping):
        raise InvalidCardError(f"{spec}: `data` must be an object")
    return _fields(body, version=version)


def _fields(body: Mapping[str, Any], version: int) -> Card:
    name = _text(body, "name").strip()
    if not name:
        raise InvalidCardError("card has no name")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidCardError(f"name is longer than {MAX_NAME_CHARS} characters")
    texts = {field: _text(body, field) for field in _TEXT_FIELDS}
    return Card(
        name=name,
        description=texts["description"],
        personality=texts["personality"],
        scenario=texts["scenario"],
        first_mes=texts["first_mes"],
        mes_example=texts["mes_example"],
        system_prompt=texts["system_prompt"],
        creator=texts["creator"].strip(),
        tags=_tags(body),
        version=version,
        voice=_voice(body),
    )


def _text(body: Mapping[str, Any], field: str) -> str:
    value = body.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidCardError(f"`{field}` must be text, not {_kind(value)}")
    if len(value) > MAX_FIELD_CHARS:
        raise InvalidCardError(f"`{field}` is longer than {MAX_FIELD_CHARS} characters")
    if "\0" in value:
        raise InvalidCardError(f"`{field}` contains a NUL character")
    return value


def _tags(body: Mapping[str, Any]) -> tuple[str, ...]:
    tags = body.get("tags")
    if tags is None:
        return ()
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise InvalidCardError("`tags` must be a list of text")
    if len(tags) > MAX_TAGS:
        raise InvalidCardError(f"more than {MAX_TAGS} tags")
    return tuple(tag[:100] for tag in tags)


def _voice(body: Mapping[str, Any]) -> str | None:
    extensions = body.get("extensions")
    voice = extensions.get("voice") if isinstance(extensions, Mapping) else None
    if voice is None:
        return None
    if not isinstance(voice, str) or not _VOICE.fullmatch(voice):
        raise InvalidCardError("`extensions.voice` must be a voice name (letters, digits, _ - .)")
    return voice


def _kind(value: object) -> str:
    return {bool: "true/false", int: "a number", float: "a number", list: "a list"}.get(
        type(value), "an object" if isinstance(value, Mapping) else type(value).__name__
    )
