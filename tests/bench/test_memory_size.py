"""`python -m bench.memory_size`: a reply's request stays bounded however long the dialog,
and its memory still holds what the user said first."""

from __future__ import annotations

import pytest

from bench.memory_size import run
from consumers.handlers.reply import MEMORY_INTRO
from consumers.handlers.summary import summary_request
from consumers.providers.offline import OfflineLLMClient
from shared.tasks import ChatTurn, SummaryPayload

pytestmark = pytest.mark.timeout(120)
OFFLINE_MEMORY_CHARS = 1500


async def test_a_reply_request_stays_bounded_while_the_dialog_grows() -> None:
    measures = await run(60, [10, 30, 60], window=4)
    assert [m.turn for m in measures] == [10, 30, 60]
    first, *later = measures
    # The whole history grows with every turn; the request by the summary, which is capped.
    bound = first.request_chars + OFFLINE_MEMORY_CHARS + len(MEMORY_INTRO) + 50
    for measure in later:
        assert measure.whole_history_chars > 2 * first.whole_history_chars
        assert 0 < measure.summary_chars <= OFFLINE_MEMORY_CHARS
        assert measure.request_chars <= bound
    assert later[0].messages == later[1].messages


async def test_the_offline_memory_keeps_the_first_thing_the_user_said() -> None:
    llm = OfflineLLMClient()
    summary = None
    for turn in range(200):
        text = "меня зовут Вася" if turn == 0 else f"новость номер {turn}, " * 4
        turns = [ChatTurn(role="user", content=text)]
        payload = SummaryPayload(dialog_id=1, upto=turn + 1, summary=summary, turns=turns)
        summary = await llm.chat(summary_request(payload))
    assert summary is not None
    assert summary.startswith("- меня зовут Вася\n")
    assert len(summary) <= OFFLINE_MEMORY_CHARS
    assert "номер 199" in summary
