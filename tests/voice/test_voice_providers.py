"""The speech-to-text and text-to-speech clients against the loopback fake audio server
(multipart and JSON as the OpenAI-compatible contract has them, errors, timeouts, bad
answers), and the offline providers' OGG/Opus, checked page by page."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator

import pytest

from consumers.providers.audio import OpenAISpeaker, OpenAITranscriber
from consumers.providers.base import RetryPolicy
from consumers.providers.offline_audio import (
    OFFLINE_TRANSCRIPT,
    OfflineSpeaker,
    OfflineTranscriber,
    ogg_crc,
    silent_ogg_opus,
)
from producer.voice import readable
from shared.config_values import Secret
from shared.errors import ProviderRejectedError, ProviderUnavailableError
from tests.support.fakes.audio import SPEECH_PATH, TRANSCRIPTIONS_PATH, FakeAudio
from tests.support.fakes.http import Reply, hang

FAST = RetryPolicy(budget_seconds=3.0, max_attempts=3, initial_wait=0.01, max_wait=0.05)
VOICE = silent_ogg_opus(2.0)


@pytest.fixture
async def audio() -> AsyncIterator[FakeAudio]:
    async with FakeAudio() as fake:
        yield fake


@pytest.fixture
async def stt(audio: FakeAudio) -> AsyncIterator[OpenAITranscriber]:
    client = OpenAITranscriber(
        Secret(audio.api_key), base_url=audio.url, model="stt-test", timeout=2.0, retry=FAST
    )
    yield client
    await client.aclose()


@pytest.fixture
async def tts(audio: FakeAudio) -> AsyncIterator[OpenAISpeaker]:
    client = OpenAISpeaker(
        Secret(audio.api_key), base_url=audio.url, model="tts-test", timeout=2.0, retry=FAST
    )
    yield client
    await client.aclose()


def ogg_pages(data: bytes) -> list[tuple[int, int, list[bytes]]]:
    """(flags, granule, packets) of each page; AssertionError on a bad page or CRC."""
    pages: list[tuple[int, int, list[bytes]]] = []
    offset = 0
    while offset < len(data):
        magic, version, flags, granule, _, sequence, crc, count = struct.unpack_from(
            "<4sBBqIIIB", data, offset
        )
        assert (magic, version, sequence) == (b"OggS", 0, len(pages))
        lacing = data[offset + 27 : offset + 27 + count]
        end = offset + 27 + count + sum(lacing)
        page = data[offset:end]
        assert ogg_crc(page[:22] + b"\0\0\0\0" + page[26:]) == crc
        packets, body = [], page[27 + count :]
        for size in lacing:  # every packet here is under 255 bytes
            packets.append(body[:size])
            body = body[size:]
        pages.append((flags, granule, packets))
        offset = end
    return pages


def test_the_offline_voice_is_a_valid_ogg_opus_file() -> None:
    pages = ogg_pages(VOICE)
    head, tags, *audio_pages = pages
    assert head[0] == 0x02 and head[2][0].startswith(b"OpusHead")
    version, channels, pre_skip, rate = struct.unpack_from("<BBHI", head[2][0], 8)
    assert (version, channels, rate) == (1, 1, 48_000)
    assert tags[2][0].startswith(b"OpusTags")
    frames = sum(len(packets) for _, _, packets in audio_pages)
    assert frames == 100  # 2 s of 20 ms frames
    assert audio_pages[-1][0] == 0x04  # end of stream
    assert audio_pages[-1][1] == pre_skip + 2 * 48_000
    assert all(packet[0] == 0xF8 for _, _, packets in audio_pages for packet in packets)


async def test_the_offline_providers_need_no_network() -> None:
    assert await OfflineTranscriber().transcribe(VOICE, "v.ogg", "audio/ogg") == OFFLINE_TRANSCRIPT
    spoken = await OfflineSpeaker().synthesize("Привет, как дела?", "af_sky")
    assert ogg_pages(spoken)[-1][0] == 0x04


async def test_a_transcription_sends_the_file_and_model_as_multipart(
    stt: OpenAITranscriber, audio: FakeAudio
) -> None:
    text = await stt.transcribe(VOICE, "voice.oga", "audio/ogg")

    assert text == audio.transcript
    (request,) = audio.transcriptions
    assert request.headers["authorization"] == f"Bearer {audio.api_key}"
    (parts,) = audio.uploads
    assert parts["model"].data == b"stt-test"
    assert (parts["file"].data, parts["file"].filename) == (VOICE, "voice.oga")
    assert parts["file"].content_type == "audio/ogg"


async def test_a_synthesis_asks_for_opus_and_returns_the_ogg(
    tts: OpenAISpeaker, audio: FakeAudio
) -> None:
    spoken = await tts.synthesize("Привет!", "af_sky")

    assert spoken == audio.speech
    (request,) = audio.syntheses
    assert request.json == {
        "model": "tts-test",
        "input": "Привет!",
        "voice": "af_sky",
        "response_format": "opus",
    }


async def test_a_wrong_key_is_refused_for_good_without_the_key_in_the_error(
    audio: FakeAudio,
) -> None:
    client = OpenAITranscriber(Secret("wrong-key-42"), base_url=audio.url, model="m", retry=FAST)
    with pytest.raises(ProviderRejectedError) as caught:
        await client.transcribe(VOICE, "v.ogg", "audio/ogg")
    await client.aclose()
    assert caught.value.status == 401
    assert "wrong-key-42" not in str(caught.value)
    assert len(audio.transcriptions) == 1  # a 4xx is not retried


async def test_server_errors_are_retried_then_succeed(
    stt: OpenAITranscriber, tts: OpenAISpeaker, audio: FakeAudio
) -> None:
    audio.script(Reply(status=503, json={"error": "busy"}), path=TRANSCRIPTIONS_PATH)
    audio.script(Reply(status=500, json={"error": "oops"}), path=SPEECH_PATH)
    assert await stt.transcribe(VOICE, "v.ogg", "audio/ogg") == audio.transcript
    assert await tts.synthesize("Привет", "af_sky") == audio.speech
    assert (len(audio.transcriptions), len(audio.syntheses)) == (2, 2)
    # The multipart body was sent whole again on the retry.
    assert [parts["file"].data for parts in audio.uploads] == [VOICE]


async def test_lasting_outages_and_timeouts_are_unavailable(audio: FakeAudio) -> None:
    client = OpenAITranscriber(
        Secret(audio.api_key), base_url=audio.url, model="m", timeout=0.25, retry=FAST
    )
    audio.script(hang(), hang(), hang())
    with pytest.raises(ProviderUnavailableError, match="timed out"):
        await client.transcribe(VOICE, "v.ogg", "audio/ogg")
    audio.script(*[Reply(status=502, json={"error": "down"})] * 3)
    with pytest.raises(ProviderUnavailableError) as caught:
        await client.transcribe(VOICE, "v.ogg", "audio/ogg")
    await client.aclose()
    assert caught.value.status == 502


@pytest.mark.parametrize(
    "reply",
    [
        Reply(body=b"<html>not json</html>", content_type="text/html"),
        Reply(json=["text"]),
        Reply(json={"text": "   "}),
        Reply(json={"segments": []}),
    ],
)
async def test_a_transcription_without_text_is_refused(
    stt: OpenAITranscriber, audio: FakeAudio, reply: Reply
) -> None:
    audio.script(reply, path=TRANSCRIPTIONS_PATH)
    with pytest.raises(ProviderRejectedError):
        await stt.transcribe(VOICE, "v.ogg", "audio/ogg")


@pytest.mark.parametrize(
    "reply",
    [
        Reply(body=b"ID3\x03mp3 data", content_type="audio/mpeg"),
        Reply(json={"error": "ok but json"}),
        Reply(body=b"", content_type="audio/ogg"),
    ],
)
async def test_a_synthesis_that_is_not_ogg_opus_is_refused(
    tts: OpenAISpeaker, audio: FakeAudio, reply: Reply
) -> None:
    audio.script(reply, path=SPEECH_PATH)
    with pytest.raises(ProviderRejectedError, match="no OGG/Opus"):
        await tts.synthesize("Привет", "af_sky")


def test_a_long_reply_is_read_up_to_its_last_whole_sentence() -> None:
    text = "Первое предложение. Второе предложение! Третье, которое не влезает целиком"
    assert readable(text, 1000) == text
    assert readable(text, 50) == "Первое предложение. Второе предложение!"
    assert readable("слово " * 20, 30) == ("слово " * 5).strip()
