"""PNG chunks read with the stdlib: the card's text chunks out, the picture without them.

A card's PNG comes from anyone (a file an operator downloaded, a document sent to the bot),
so every length is checked against what is left, every CRC is verified, and the walk stops
at IEND: a hostile file fails with InvalidCardError, never with an exception of its own.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from shared.errors import InvalidCardError

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The card keywords: V2 and V1 write `chara`, V3 writes `ccv3` (and usually `chara` too).
CARD_KEYWORDS = frozenset({b"chara", b"ccv3"})
# Telegram refuses a photo whose sides add up to more than this.
_MAX_SIDES = 10_000
_HEADER = struct.Struct(">I4s")


@dataclass(frozen=True, slots=True)
class Chunk:
    kind: bytes
    data: bytes
    raw: bytes  # the whole chunk as stored: length, type, data, CRC


@dataclass(frozen=True, slots=True)
class PngCard:
    """The text chunks a card keeps (keyword -> value) and the picture without them."""

    texts: dict[str, bytes]
    picture: bytes
    width: int
    height: int

    @property
    def photo_ok(self) -> bool:
        """Whether Telegram would take the picture as a photo (else the greeting goes alone)."""
        return self.width > 0 and self.height > 0 and self.width + self.height <= _MAX_SIDES


def is_png(data: bytes) -> bool:
    return data.startswith(SIGNATURE)


def _chunks(data: bytes) -> list[Chunk]:
    chunks: list[Chunk] = []
    at = len(SIGNATURE)
    while True:
        if at + _HEADER.size > len(data):
            raise InvalidCardError("PNG is cut short: no IEND chunk")
        length, kind = _HEADER.unpack_from(data, at)
        end = at + _HEADER.size + length + 4
        if end > len(data):
            raise InvalidCardError(f"PNG chunk {kind!r} claims {length} bytes past the file's end")
        body = data[at + _HEADER.size : end - 4]
        (crc,) = struct.unpack_from(">I", data, end - 4)
        if zlib.crc32(kind + body) != crc:
            raise InvalidCardError(f"PNG chunk {kind!r} is damaged (CRC mismatch)")
        chunks.append(Chunk(kind, body, data[at:end]))
        at = end
        if kind == b"IEND":
            return chunks


def _size(chunks: list[Chunk]) -> tuple[int, int]:
    if not chunks or chunks[0].kind != b"IHDR" or len(chunks[0].data) != 13:
        raise InvalidCardError("PNG has no valid IHDR chunk")
    width, height = struct.unpack_from(">II", chunks[0].data)
    return int(width), int(height)


def read_png(data: bytes) -> PngCard:
    """The card chunks (tEXt `chara`/`ccv3`) and the picture with every tEXt chunk removed.

    Raises InvalidCardError for anything that is not a well-formed PNG.
    """
    if not is_png(data):
        raise InvalidCardError("not a PNG file")
    chunks = _chunks(data)
    width, height = _size(chunks)
    texts: dict[str, bytes] = {}
    kept = [SIGNATURE]
    for chunk in chunks:
        if chunk.kind != b"tEXt":
            kept.append(chunk.raw)
            continue
        keyword, separator, value = chunk.data.partition(b"\0")
        if separator and keyword in CARD_KEYWORDS:
            texts[keyword.decode("ascii")] = value
    return PngCard(texts, b"".join(kept), width, height)
