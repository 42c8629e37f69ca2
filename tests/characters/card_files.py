"""Character card files for the tests: a real PNG (chunks, CRCs, pixels) with the card in a
tEXt chunk, and its JSON, built the way SillyTavern writes them."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from pathlib import Path
from typing import Any

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def text_chunk(keyword: str, value: bytes) -> bytes:
    return chunk(b"tEXt", keyword.encode("latin-1") + b"\0" + value)


def picture_chunks(width: int = 4, height: int = 4) -> tuple[bytes, bytes, bytes]:
    """IHDR, IDAT (red RGB pixels) and IEND of a real image."""
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return header, chunk(b"IDAT", zlib.compress(rows)), chunk(b"IEND", b"")


def encoded(card: dict[str, Any]) -> bytes:
    # The stdlib's encoder: it writes integers of any size, as other card editors may.
    return base64.b64encode(json.dumps(card, ensure_ascii=False).encode())


def card_png(texts: dict[str, bytes], width: int = 4, height: int = 4) -> bytes:
    """A PNG with a tEXt chunk per (keyword, raw value), after IHDR as SillyTavern puts it."""
    header, pixels, end = picture_chunks(width, height)
    body = b"".join(text_chunk(keyword, value) for keyword, value in texts.items())
    return SIGNATURE + header + body + pixels + end


def v1(name: str = "Луна", **fields: Any) -> dict[str, Any]:
    return {"name": name, "description": "{{char}} is a test character.", **fields}


def v2(name: str = "Луна", **fields: Any) -> dict[str, Any]:
    data = {"name": name, "description": "{{char}} is a test character.", **fields}
    return {"spec": "chara_card_v2", "spec_version": "2.0", "data": data}


def v3(name: str = "Луна", **fields: Any) -> dict[str, Any]:
    data = {"name": name, "description": "{{char}} is a test character.", **fields}
    return {"spec": "chara_card_v3", "spec_version": "3.0", "data": data}


def v2_png(card: dict[str, Any], width: int = 4, height: int = 4) -> bytes:
    return card_png({"chara": encoded(card)}, width, height)


def write(directory: Path, name: str, data: bytes) -> Path:
    path = directory / name
    path.write_bytes(data)
    return path
