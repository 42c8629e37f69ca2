"""Offline providers: deterministic replies and locally drawn PNGs, for demos and tests."""

from __future__ import annotations

import asyncio
import hashlib
import re
import struct
import zlib
from collections.abc import AsyncGenerator, Sequence

from consumers.providers.placeholder import LABEL, draw_label
from consumers.task_run import wait_for_admission

_REPLY_OPENINGS = (
    "Ой, как интересно!",
    "Знаешь, я как раз об этом думала.",
    "Хм, дай подумать…",
    "Ты всегда умеешь удивить меня.",
    "Мне нравится, когда ты так пишешь.",
    "Правда? Расскажи подробнее!",
    "Ха, ты меня рассмешил.",
    "Я скучала по нашим разговорам.",
)
_SCENES = ("cozy cafe", "city street at night", "sunny beach", "library", "rooftop at sunset")
_LIGHTS = ("soft light", "warm golden light", "neon glow", "natural daylight", "candle light")
_MOODS = ("gentle smile", "playful wink", "thoughtful look", "bright laugh", "shy glance")
# A request mentioning these asks for an image prompt rather than an in-character reply.
_PROMPT_MARKERS = ("prompt", "промпт", "stable diffusion")
_ECHO_CHARS = 200
# A first system message with this phrase asks to fold turns into a dialog's memory.
_SUMMARY_MARKER = "long-term memory"
# The offline memory: one line per user turn, the oldest dropped past this size.
_FACT_CHARS = 80
_MEMORY_CHARS = 1500
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\x1f".join(parts).encode()).digest()


class OfflineLLMClient:
    """LLMClient that needs no network: the same messages always give the same Russian reply."""

    name = "offline"

    def __init__(self, delay: float = 0.0, word_delay: float = 0.0) -> None:
        self._delay = delay
        self._word_delay = word_delay

    async def chat(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> str:
        await wait_for_admission()  # a stand-in for a provider: gated like one
        if self._delay:
            await asyncio.sleep(self._delay)
        system = "\n".join(m.get("content", "") for m in messages if m.get("role") == "system")
        users = [m.get("content", "") for m in messages if m.get("role") == "user"]
        last_user = users[-1] if users else ""
        if messages and _SUMMARY_MARKER in messages[0].get("content", ""):
            return _memory(last_user)
        digest = _digest(system, last_user)
        if any(marker in f"{system}\n{last_user}".lower() for marker in _PROMPT_MARKERS):
            return _image_prompt(digest)
        opening = _REPLY_OPENINGS[digest[0] % len(_REPLY_OPENINGS)]
        if messages and messages[-1].get("role") == "assistant":  # continue that reply
            return f"И ещё: {opening.lower()}"
        echo = " ".join(last_user.split())[:_ECHO_CHARS]
        return f"{opening} Ты написал: «{echo}»" if echo else opening

    async def stream(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AsyncGenerator[str, None]:
        """The `chat` answer word by word (each with its trailing space), `word_delay` apart."""
        text = await self.chat(messages, max_tokens=max_tokens, temperature=temperature)
        for index, word in enumerate(re.findall(r"\S+\s*", text)):
            if index and self._word_delay:
                await asyncio.sleep(self._word_delay)
            yield word

    async def aclose(self) -> None:
        return None


def _memory(request: str) -> str:
    """A deterministic memory: the lines of the memory so far (`- …`) and one line per new
    user turn (`user: …`); past _MEMORY_CHARS the oldest go, except the first (how the
    user introduced themselves)."""
    lines: list[str] = []
    for line in request.splitlines():
        if line.startswith("- "):
            fact = line
        elif line.startswith("user: "):
            fact = "- " + line.removeprefix("user: ").strip()[:_FACT_CHARS]
        else:
            continue
        if fact not in lines:
            lines.append(fact)
    while len(lines) > 2 and len("\n".join(lines)) > _MEMORY_CHARS:
        lines.pop(1)
    return "\n".join(lines) or "- (nothing yet)"


def _image_prompt(digest: bytes) -> str:
    scene = _SCENES[digest[1] % len(_SCENES)]
    light = _LIGHTS[digest[2] % len(_LIGHTS)]
    mood = _MOODS[digest[3] % len(_MOODS)]
    return f"1girl, solo, anime style, {scene}, {light}, {mood}, detailed face, high quality"


class OfflineImageClient:
    """ImageClient that draws a diagonal two-colour gradient PNG chosen by the prompt's hash,
    labelled "OFFLINE PLACEHOLDER" across the middle."""

    name = "offline_image"

    def __init__(self, size: int = 256, delay: float = 0.0) -> None:
        self.size = size
        self._delay = delay

    async def generate(self, prompt: str, negative_prompt: str | None = None) -> bytes:
        await wait_for_admission()  # a stand-in for a provider: gated like one
        if self._delay:
            await asyncio.sleep(self._delay)
        digest = _digest(prompt, negative_prompt or "")
        return render_gradient_png(self.size, self.size, digest[0:3], digest[3:6], LABEL)

    async def aclose(self) -> None:
        return None


def render_gradient_png(
    width: int, height: int, start: bytes, end: bytes, label: Sequence[str] = ()
) -> bytes:
    """A valid 8-bit RGB PNG fading from `start` (top left) to `end` (bottom right) colour,
    with `label` written across the middle when the image is big enough to read it."""
    steps = max(width + height - 2, 1)
    # Every pixel on a diagonal has the same colour, so each row is a slice of one palette.
    palette = b"".join(
        bytes(a + (b - a) * i // steps for a, b in zip(start, end, strict=True))
        for i in range(width + height - 1)
    )
    pixels = [bytearray(palette[y * 3 : (y + width) * 3]) for y in range(height)]
    if label:
        draw_label(pixels, width, label)
    rows = b"".join(b"\x00" + row for row in pixels)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"".join(
        (
            PNG_SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(rows, 6)),
            _chunk(b"IEND", b""),
        )
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data)
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)
