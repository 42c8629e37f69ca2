"""What a card becomes: the system prompt, greeting and blurb, with `{{char}}` and `{{user}}`.

Placeholders are read as SillyTavern does, case-insensitively: `{{char}}` and `<BOT>` name the
character, `{{user}}` and `<USER>` the person chatting. The character's name is known at
import and put in then; the user's is known only per dialog, so every user placeholder is
stored as `{{user}}` and filled when the text is used (`fill_user`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shared.cards.card import Card
from shared.errors import InvalidCardError

USER = "{{user}}"
# Reply tasks carry the system prompt; this leaves room for the history in MAX_PAYLOAD_BYTES.
MAX_PROMPT_BYTES = 32_000
MAX_GREETING_CHARS = 8_000
# How much of the description the character list's "chosen" message shows.
BLURB_CHARS = 300
# Image prompts start with the character's appearance: for a card, its name and first tags.
APPEARANCE_TAGS = 8
_CHAR = re.compile(r"\{\{char\}\}|<BOT>", re.IGNORECASE)
_USER = re.compile(r"\{\{user\}\}|<USER>", re.IGNORECASE)
# A card's own system prompt may include the default one where it says {{original}}.
_ORIGINAL = re.compile(r"\{\{original\}\}", re.IGNORECASE)
_DEFAULT_PROMPT = (
    "You are {{char}}. Write {{char}}'s next reply in a chat with {{user}}: stay in character, "
    "never speak for {{user}}, and answer in {{user}}'s language."
)


@dataclass(frozen=True, slots=True)
class Persona:
    """A card as a character row stores it (character name filled, user placeholders kept)."""

    name: str
    system_prompt: str
    greeting: str | None
    description: str
    appearance: str


def resolve(text: str, name: str) -> str:
    """`text` with the character's name in and every user placeholder as `{{user}}`.

    One pass per kind, so a name that itself looks like a placeholder is left as it is."""
    text = _USER.sub(lambda _: USER, text)
    return _CHAR.sub(lambda _: name, text)


def fill_user(text: str, user_name: str) -> str:
    """`text` with the user's name for `{{user}}` (as `resolve` stored it)."""
    return text.replace(USER, user_name) if USER in text else text


def _system_prompt(card: Card) -> str:
    own = card.system_prompt.strip()
    head = _ORIGINAL.sub(lambda _: _DEFAULT_PROMPT, own) if own else _DEFAULT_PROMPT
    parts = [head]
    if card.description.strip():
        parts.append(f"{{{{char}}}}'s description:\n{card.description.strip()}")
    if card.personality.strip():
        parts.append(f"{{{{char}}}}'s personality: {card.personality.strip()}")
    if card.scenario.strip():
        parts.append(f"Scenario: {card.scenario.strip()}")
    if card.mes_example.strip():
        parts.append(f"Examples of how {{{{char}}}} writes:\n{card.mes_example.strip()}")
    return "\n\n".join(parts)


def _blurb(text: str) -> str:
    words = " ".join(text.split())
    if len(words) <= BLURB_CHARS:
        return words
    return words[:BLURB_CHARS].rsplit(" ", 1)[0] + "…"


def persona_of(card: Card) -> Persona:
    """The character a card makes; InvalidCardError if its prompt or greeting is too long."""
    name = card.name
    prompt = resolve(_system_prompt(card), name)
    if len(prompt.encode()) > MAX_PROMPT_BYTES:
        raise InvalidCardError(
            f"the card's texts make a system prompt over {MAX_PROMPT_BYTES} bytes"
        )
    greeting = resolve(card.first_mes.strip(), name) or None
    if greeting is not None and len(greeting) > MAX_GREETING_CHARS:
        raise InvalidCardError(f"`first_mes` is longer than {MAX_GREETING_CHARS} characters")
    description = _blurb(resolve(card.description, name)) or name
    tags = [tag.strip() for tag in card.tags if tag.strip() and tag.strip().lower() != "nsfw"]
    appearance = ", ".join([name, *tags[:APPEARANCE_TAGS]])
    return Persona(name, prompt, greeting, description, appearance)
