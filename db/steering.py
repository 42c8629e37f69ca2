"""Steering a dialog's history: the reply a button names, replacing or extending it once by
the task that redid it, and undoing the last exchange."""

from __future__ import annotations

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import ChatMessage, Delivery, MessageRole

_NO_SPACE_BEFORE = ".,!?;:…)»"


async def reply_by_task(session: AsyncSession, task_id: str) -> ChatMessage | None:
    """The reply the task `task_id` stored (it names the reply while it is the latest text)."""
    found: ChatMessage | None = await session.scalar(
        select(ChatMessage).where(ChatMessage.task_id == task_id)
    )
    return found


async def is_latest(session: AsyncSession, message: ChatMessage) -> bool:
    """Nothing was said in the dialog after `message`."""
    newest = await session.scalar(
        select(func.max(ChatMessage.id)).where(ChatMessage.dialog_id == message.dialog_id)
    )
    return newest == message.id


async def message_before(session: AsyncSession, message: ChatMessage) -> ChatMessage | None:
    found: ChatMessage | None = await session.scalar(
        select(ChatMessage)
        .where(ChatMessage.dialog_id == message.dialog_id, ChatMessage.id < message.id)
        .order_by(ChatMessage.id.desc())
        .limit(1)
    )
    return found


async def replace_reply(
    session: AsyncSession, old_task_id: str, new_task_id: str, content: str
) -> bool:
    """The reply stored by `old_task_id` gets the text of `new_task_id`, which names it from
    now on; the row keeps its place in the dialog. True only for the call that did it (a
    repeat finds no row named `old_task_id`)."""
    replaced = await session.scalar(
        update(ChatMessage)
        .where(ChatMessage.task_id == old_task_id, ChatMessage.role == MessageRole.ASSISTANT)
        .values(content=content, task_id=new_task_id)
        .returning(ChatMessage.id)
    )
    return replaced is not None


def joined(text: str, addition: str) -> str:
    """A reply and its continuation: a space between them unless the continuation starts
    with punctuation (the reply was stored trimmed)."""
    addition = addition.strip()
    if not text or not addition or addition[0] in _NO_SPACE_BEFORE:
        return f"{text}{addition}"
    return f"{text} {addition}"


async def extend_reply(
    session: AsyncSession, old_task_id: str, new_task_id: str, addition: str
) -> bool:
    """Append `addition` to the reply stored by `old_task_id`, which `new_task_id` names from
    now on; True only for the call that did it."""
    reply = await session.scalar(
        select(ChatMessage).where(ChatMessage.task_id == old_task_id).with_for_update()
    )
    if reply is None:
        return False
    reply.content = joined(reply.content, addition)
    reply.task_id = new_task_id
    await session.flush()
    return True


async def user_message(
    session: AsyncSession, dialog_id: int, telegram_message_id: int
) -> ChatMessage | None:
    found: ChatMessage | None = await session.scalar(
        select(ChatMessage).where(
            ChatMessage.dialog_id == dialog_id,
            ChatMessage.telegram_message_id == telegram_message_id,
            ChatMessage.role == MessageRole.USER,
        )
    )
    return found


async def is_last_user_message(session: AsyncSession, message: ChatMessage) -> bool:
    newest = await session.scalar(
        select(func.max(ChatMessage.id)).where(
            ChatMessage.dialog_id == message.dialog_id, ChatMessage.role == MessageRole.USER
        )
    )
    return newest == message.id


async def drop_replies_after(session: AsyncSession, message: ChatMessage) -> list[str]:
    """Delete the replies stored after `message` (the dialog's last user message): the
    model no longer sees them; return the task ids that named them."""
    gone = await session.scalars(
        delete(ChatMessage)
        .where(
            ChatMessage.dialog_id == message.dialog_id,
            ChatMessage.id > message.id,
            ChatMessage.role == MessageRole.ASSISTANT,
        )
        .returning(ChatMessage.task_id)
    )
    return [task_id for task_id in gone.all() if task_id is not None]


async def replies_in_flight(session: AsyncSession, chat_id: int) -> bool:
    """A reply (or its regeneration or continuation) owed to the chat is not applied yet."""
    kinds = ("reply", "regenerate", "continue", "edit")
    found = await session.scalar(
        select(Delivery.task_id)
        .where(
            Delivery.chat_id == chat_id, Delivery.applied_at.is_(None), Delivery.kind.in_(kinds)
        )
        .limit(1)
    )
    return found is not None


async def undo_last_exchange(session: AsyncSession, dialog_id: int) -> int:
    """Delete the dialog's last exchange: its newest user message and everything after it
    (the replies to it); return how many messages went."""
    last_user = await session.scalar(
        select(func.max(ChatMessage.id)).where(
            ChatMessage.dialog_id == dialog_id, ChatMessage.role == MessageRole.USER
        )
    )
    if last_user is None:
        return 0
    gone = await session.scalars(
        delete(ChatMessage)
        .where(ChatMessage.dialog_id == dialog_id, ChatMessage.id >= last_user)
        .returning(ChatMessage.id)
    )
    return len(gone.all())
