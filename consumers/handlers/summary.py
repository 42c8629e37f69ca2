"""summarize_dialog: the LLM folds the turns that left a dialog's history window into the
dialog's running summary (the bot stores it once, keyed by the task id)."""

from __future__ import annotations

from consumers.providers.base import LLMClient
from consumers.task_run import TaskRun
from shared.errors import ProviderRejectedError
from shared.tasks import QueueTask, SummaryPayload, SummaryResult

# The offline LLM recognises a summary request by this phrase in its first system message.
INSTRUCTION = (
    "You keep the long-term memory of a role-play chat between a user and a character. "
    "Merge the memory so far with the new turns into one updated memory: facts about the "
    "user (name, age, work, places, people, pets, plans, likes and dislikes), promises and "
    "events of the story, and how the relationship goes. Keep every earlier fact unless the "
    "new turns change it. Write short bullet points in the language of the chat, at most "
    "150 words, no greetings, no explanations."
)
MEMORY_HEADER = "MEMORY SO FAR:"
TURNS_HEADER = "NEW TURNS:"
NO_MEMORY = "(empty)"
# A summary is sent with every reply: its size is capped whatever the model writes.
MAX_SUMMARY_CHARS = 2000
MAX_SUMMARY_TOKENS = 400


def summary_request(payload: SummaryPayload) -> list[dict[str, str]]:
    """The chat request that folds the payload's turns into its summary."""
    turns = "\n".join(f"{t.role}: {' '.join(t.content.split())}" for t in payload.turns)
    memory = payload.summary or NO_MEMORY
    return [
        {"role": "system", "content": INSTRUCTION},
        {"role": "user", "content": f"{MEMORY_HEADER}\n{memory}\n\n{TURNS_HEADER}\n{turns}"},
    ]


def cap_summary(text: str) -> str:
    """At most MAX_SUMMARY_CHARS, cut at a line end when there is one."""
    text = text.strip()
    if len(text) <= MAX_SUMMARY_CHARS:
        return text
    head = text[:MAX_SUMMARY_CHARS]
    cut = head.rfind("\n")
    return (head[:cut] if cut > 0 else head).rstrip()


class SummaryHandler:
    def __init__(self, llm: LLMClient) -> None:
        self._llm = llm

    async def __call__(self, task: QueueTask, run: TaskRun) -> SummaryResult:
        payload = task.payload_as(SummaryPayload)
        text = await self._llm.chat(summary_request(payload), max_tokens=MAX_SUMMARY_TOKENS)
        summary = cap_summary(text)
        if not summary:
            raise ProviderRejectedError("the model returned an empty summary", self._llm.name)
        return SummaryResult(summary=summary, dialog_id=payload.dialog_id, upto=payload.upto)
