"""Offline LLM and image clients, and the Live3D placeholder."""

from __future__ import annotations

import struct
import zlib

import pytest

from consumers.providers.live3d import Live3DImageClient
from consumers.providers.offline import OfflineImageClient, OfflineLLMClient
from shared.errors import ProviderNotImplementedError

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def parse_png(data: bytes) -> tuple[int, int, bytes]:
    """Walk every chunk, checking CRCs; return width, height and the decompressed pixel rows."""
    assert data[:8] == SIGNATURE
    offset, chunks = 8, []
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        payload = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert crc == zlib.crc32(kind + payload), kind
        chunks.append((kind, payload))
        offset += 12 + length
    assert [kind for kind, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    width, height, depth, colour, *_ = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, colour) == (8, 2)
    return width, height, zlib.decompress(chunks[1][1])


async def test_offline_png_is_valid_and_sized() -> None:
    data = await OfflineImageClient().generate("girl in a cafe", "lowres")

    width, height, raw = parse_png(data)
    assert (width, height) == (256, 256)
    assert len(raw) == height * (1 + width * 3)
    assert all(raw[y * (1 + width * 3)] == 0 for y in range(height))  # filter byte "None"


async def test_offline_png_is_deterministic_per_prompt() -> None:
    client = OfflineImageClient(size=32)

    first = await client.generate("girl", None)
    assert first == await client.generate("girl", None)
    assert first != await client.generate("another girl", None)
    assert first != await client.generate("girl", "blurry")


async def test_offline_png_corners_use_two_colours() -> None:
    _, _, raw = parse_png(await OfflineImageClient(size=16).generate("x"))

    row = 1 + 16 * 3
    top_left, bottom_right = raw[1:4], raw[15 * row + 1 + 15 * 3 : 15 * row + 1 + 16 * 3]
    assert top_left != bottom_right


async def test_offline_reply_is_deterministic_russian_echo() -> None:
    client = OfflineLLMClient()
    messages = [
        {"role": "system", "content": "Ты Мира."},
        {"role": "assistant", "content": "Привет!"},
        {"role": "user", "content": "Как   дела?"},
    ]

    reply = await client.chat(messages)

    assert reply == await client.chat(messages)
    assert reply.endswith("Ты написал: «Как дела?»")
    assert any("а" <= ch <= "я" for ch in reply.split("Ты написал")[0].lower())
    other = [{"role": "system", "content": "Ты Лена."}, messages[-1]]
    assert await client.chat(other) == await client.chat(other)


async def test_offline_image_prompt_request_gets_tags() -> None:
    messages = [
        {"role": "system", "content": "Write a Stable Diffusion prompt for the character."},
        {"role": "user", "content": "Мира, бариста; диалог про кофе"},
    ]

    prompt = await OfflineLLMClient().chat(messages)

    assert prompt.startswith("1girl, solo, anime style, ")
    assert prompt == await OfflineLLMClient().chat(messages)


async def test_live3d_refuses_without_network() -> None:
    client = Live3DImageClient()

    with pytest.raises(ProviderNotImplementedError, match="no public API") as caught:
        await client.generate("girl")
    assert caught.value.provider == "live3d"
    assert "IMAGE_PROVIDER=local|replicate|venice|offline" in str(caught.value)
    await client.aclose()


async def test_offline_png_is_labelled_as_a_placeholder() -> None:
    width, height, raw = parse_png(await OfflineImageClient().generate("girl in a cafe"))
    stride = 1 + width * 3
    rows = [raw[y * stride + 1 : (y + 1) * stride] for y in range(height // 3, height * 2 // 3)]
    pixels = {row[x : x + 3] for row in rows for x in range(0, len(row), 3)}
    # White letters on a dark band across the middle; the corners keep the gradient.
    assert {b"\xff\xff\xff", b"\x20\x20\x28"} <= pixels
    # An image too small to read a label gets none.
    _, _, tiny = parse_png(await OfflineImageClient(size=16).generate("x"))
    assert b"\xff\xff\xff" not in tiny
