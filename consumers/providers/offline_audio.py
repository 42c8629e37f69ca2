"""Offline voice providers: a fixed transcript, and real OGG/Opus audio built in code
(Ogg pages with OpusHead and OpusTags, then Opus silence frames), for demos and tests."""

from __future__ import annotations

import asyncio
import struct

from consumers.task_run import wait_for_admission

OFFLINE_TRANSCRIPT = "Привет! Это голосовое сообщение."
VENDOR = b"ai-girls offline"
SAMPLE_RATE = 48_000
PRE_SKIP = 312
# One 20 ms Opus frame of silence (TOC 0xF8: CELT, fullband, 20 ms, mono, one frame).
SILENT_FRAME = b"\xf8\xff\xfe"
FRAME_SAMPLES = SAMPLE_RATE // 50
_FRAMES_PER_PAGE = 50
_BOS, _EOS = 0x02, 0x04


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return table


_CRC = _crc_table()


def ogg_crc(data: bytes) -> int:
    """Ogg's CRC-32 (polynomial 0x04C11DB7, no reflection, no final xor)."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC[((crc >> 24) ^ byte) & 0xFF]
    return crc


def ogg_page(
    packets: list[bytes], *, granule: int, serial: int, sequence: int, flags: int
) -> bytes:
    """One Ogg page holding whole packets (each under 255 bytes times the lacing)."""
    lacing = bytearray()
    for packet in packets:
        lacing += b"\xff" * (len(packet) // 255) + bytes([len(packet) % 255])
    if len(lacing) > 255:
        raise ValueError("too many segments for one Ogg page")
    header = struct.pack(
        "<4sBBqIIIB", b"OggS", 0, flags, granule, serial, sequence, 0, len(lacing)
    )
    page = header + bytes(lacing) + b"".join(packets)
    return page[:22] + struct.pack("<I", ogg_crc(page)) + page[26:]


def opus_head(channels: int = 1) -> bytes:
    return struct.pack("<8sBBHIhB", b"OpusHead", 1, channels, PRE_SKIP, SAMPLE_RATE, 0, 0)


def opus_tags() -> bytes:
    return b"OpusTags" + struct.pack("<I", len(VENDOR)) + VENDOR + struct.pack("<I", 0)


def silent_ogg_opus(seconds: float = 1.0, serial: int = 0x5EED) -> bytes:
    """A valid mono OGG/Opus file of `seconds` of silence (what sendVoice takes)."""
    frames = max(1, round(seconds * 50))
    pages = [
        ogg_page([opus_head()], granule=0, serial=serial, sequence=0, flags=_BOS),
        ogg_page([opus_tags()], granule=0, serial=serial, sequence=1, flags=0),
    ]
    done = 0
    while done < frames:
        count = min(_FRAMES_PER_PAGE, frames - done)
        done += count
        pages.append(
            ogg_page(
                [SILENT_FRAME] * count,
                granule=PRE_SKIP + done * FRAME_SAMPLES,
                serial=serial,
                sequence=len(pages),
                flags=_EOS if done == frames else 0,
            )
        )
    return b"".join(pages)


class OfflineTranscriber:
    """SpeechToTextClient that hears the same sentence in every voice message."""

    name = "offline"

    def __init__(self, delay: float = 0.0, transcript: str = OFFLINE_TRANSCRIPT) -> None:
        self._delay = delay
        self._transcript = transcript

    async def transcribe(self, audio: bytes, filename: str, mime_type: str) -> str:
        await wait_for_admission()  # a stand-in for a provider: gated like one
        if self._delay:
            await asyncio.sleep(self._delay)
        return self._transcript

    async def aclose(self) -> None:
        return None


class OfflineSpeaker:
    """TextToSpeechClient reading any text as silence, about 60 ms per character (1-30 s)."""

    name = "offline"

    def __init__(self, delay: float = 0.0) -> None:
        self._delay = delay

    async def synthesize(self, text: str, voice: str) -> bytes:
        await wait_for_admission()  # a stand-in for a provider: gated like one
        if self._delay:
            await asyncio.sleep(self._delay)
        return silent_ogg_opus(min(30.0, max(1.0, len(text) * 0.06)))

    async def aclose(self) -> None:
        return None
