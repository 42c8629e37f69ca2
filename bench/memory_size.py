"""`python -m bench.memory_size`: the size of a reply's request to the model at turns 10, 100
and 500 of one dialog, with long-term memory on (it stays bounded) and, for comparison, what
sending the whole history would cost.

The dialog runs on a fresh SQLite database through the bot's own memory code (the window, the
fold, one summary in flight, storing it) and the consumers' own requests (the reply's and the
summary's), with the offline LLM; each summary completes before the next message, as it does
when the consumers keep up. Nothing touches Redis or the network.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path

import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from consumers.handlers.reply import reply_messages
from consumers.handlers.summary import cap_summary, summary_request
from consumers.providers.offline import OfflineLLMClient
from db import memory
from db import repositories as repo
from db.engine import create_engine, create_sessionmaker
from db.migrate import upgrade
from db.models import Dialog
from producer.memory import FOLD_MAX_TURNS, fit_fold, fit_history
from scripts.seed_characters import CHARACTERS
from shared.config import load_settings
from shared.tasks import ChatTurn, ReplyPayload, SummaryPayload

USER_ID = 1
# Room the bot keeps in a task for its envelope (as producer.conversation does).
_ENVELOPE_BYTES = 4096
_LINES = (
    "Сегодня был длинный день на работе, устал, но доволен: закрыли большой проект.",
    "Вечером гулял по набережной, было очень красиво, солнце садилось за мостом.",
    "Как думаешь, стоит ли мне записаться на курсы итальянского этой осенью?",
    "Вчера смотрел старый фильм про путешествия и вспомнил поездку в горы.",
    "Расскажи, как прошла твоя неделя? Что нового у тебя случилось?",
)


@dataclass(frozen=True)
class Measure:
    turn: int
    request_chars: int
    request_bytes: int
    messages: int
    summary_chars: int
    whole_history_chars: int


def user_text(turn: int) -> str:
    if turn == 1:
        return "Привет! Меня зовут Вася, мне 34, я инженер и живу в Казани, у меня кот Пушок."
    return f"{_LINES[turn % len(_LINES)]} (сообщение {turn})"


def size(messages: list[dict[str, str]]) -> tuple[int, int]:
    body = orjson.dumps({"messages": messages})
    return len(body.decode()), len(body)


async def run(turns: int, marks: list[int], window: int) -> list[Measure]:
    settings = load_settings(_env_file=None, history_messages=window)
    llm = OfflineLLMClient()
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite+aiosqlite:///{Path(folder) / 'memory.db'}"
        await asyncio.to_thread(upgrade, url)
        engine = create_engine(url)
        db = create_sessionmaker(engine)
        seed = CHARACTERS[0]
        dialog_id = await _new_dialog(db)
        measures: list[Measure] = []
        whole: list[dict[str, str]] = []
        for turn in range(1, turns + 1):
            text = user_text(turn)
            async with db.begin() as session:
                dialog = await session.get(Dialog, dialog_id, populate_existing=True)
                assert dialog is not None  # noqa: S101 - created above
                found = await memory.dialog_memory(
                    session, dialog, window, fold_max=FOLD_MAX_TURNS
                )
                await repo.save_user_message(session, dialog_id, text, turn)
            payload = _reply_payload(settings.max_payload_bytes, seed.system_prompt, found, text)
            request = reply_messages(payload)
            reply = await llm.chat(request)
            async with db.begin() as session:
                await repo.save_assistant_reply(session, dialog_id, f"reply-{turn}", reply)
            if found.fold:
                await _fold(
                    db,
                    llm,
                    dialog_id,
                    found,
                    max_bytes=settings.max_payload_bytes,
                    task_id=f"summary-{turn}",
                )
            full = [request[0], *whole, {"role": "user", "content": text}]
            whole += [{"role": "user", "content": text}, {"role": "assistant", "content": reply}]
            if turn in marks:
                chars, raw = size(request)
                summary = len(found.summary or "")
                measures.append(Measure(turn, chars, raw, len(request), summary, size(full)[0]))
        await engine.dispose()
    return measures


async def _new_dialog(db: async_sessionmaker[AsyncSession]) -> int:
    seed = CHARACTERS[0]
    async with db.begin() as session:
        await repo.get_or_create_user(
            session, USER_ID, "Вася", "ru", start_energy=100, start_diamonds=10
        )
        character_id = await repo.upsert_character(
            session,
            name=seed.name,
            description=seed.description,
            system_prompt=seed.system_prompt,
            appearance=seed.appearance,
        )
        return (await repo.start_dialog(session, USER_ID, character_id)).id


def _reply_payload(
    max_bytes: int, prompt: str, found: memory.DialogMemory, text: str
) -> ReplyPayload:
    budget = max_bytes - _ENVELOPE_BYTES - len(prompt.encode()) - len(text.encode())
    budget -= len((found.summary or "").encode())
    turns = [ChatTurn.from_json(turn.as_turn()) for turn in found.turns]
    return ReplyPayload(
        system_prompt=prompt,
        history=fit_history(turns, budget),
        dialog_id=1,
        user_message=text,
        summary=found.summary,
    )


async def _fold(
    db: async_sessionmaker[AsyncSession],
    llm: OfflineLLMClient,
    dialog_id: int,
    found: memory.DialogMemory,
    *,
    max_bytes: int,
    task_id: str,
) -> None:
    """Summarize as a consumer would, and store it as the bot does."""
    fold = fit_fold(found.fold, max_bytes - _ENVELOPE_BYTES - len((found.summary or "").encode()))
    payload = SummaryPayload(
        dialog_id=dialog_id,
        upto=fold[-1].id,
        summary=found.summary,
        turns=[ChatTurn.from_json(t.as_turn()) for t in fold],
    )
    summary = cap_summary(await llm.chat(summary_request(payload)))
    async with db.begin() as session:
        assert await memory.ask_summary(session, dialog_id, task_id)  # noqa: S101
        await memory.store_summary(session, dialog_id, task_id, summary, payload.upto)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory_size", description=__doc__)
    parser.add_argument("--turns", type=int, default=500, help="messages the user sends")
    parser.add_argument("--window", type=int, default=20, help="HISTORY_MESSAGES")
    args = parser.parse_args(argv)
    marks = [mark for mark in (10, 100, 500) if mark <= args.turns]
    measures = asyncio.run(run(args.turns, marks, args.window))
    print(f"HISTORY_MESSAGES={args.window}; request = the JSON `messages` a reply sends")
    print("turn  request chars  bytes  messages  summary chars  whole history chars")
    for m in measures:
        print(
            f"{m.turn:>4}  {m.request_chars:>13}  {m.request_bytes:>5}  {m.messages:>8}  "
            f"{m.summary_chars:>13}  {m.whole_history_chars:>19}"
        )


if __name__ == "__main__":
    main()
