"""generate_image_prompt: the LLM turns the character and the dialogue into an image prompt."""

from __future__ import annotations

from consumers.providers.base import LLMClient
from consumers.task_run import TaskRun
from shared.errors import ProviderRejectedError
from shared.tasks import ImagePromptPayload, ImagePromptResult, QueueTask

INSTRUCTION = (
    "You write prompts for an image generator. Describe, in English, one photo of the "
    "character as the dialogue suggests: appearance, clothes, pose, place, light. Use short "
    "comma-separated phrases, at most 60 words, no explanations, no quotes."
)
MAX_PROMPT_CHARS = 1000


class ImagePromptHandler:
    def __init__(self, llm: LLMClient) -> None:
        self._llm = llm

    async def __call__(self, task: QueueTask, run: TaskRun) -> ImagePromptResult:
        payload = task.payload_as(ImagePromptPayload)
        dialogue = "\n".join(f"{t.role}: {t.content}" for t in payload.recent_dialogue[-10:])
        request = (
            f"Character: {payload.girl_name}\nAppearance and description: "
            f"{payload.girl_description}\nRecent dialogue:\n{dialogue or '(none)'}"
        )
        messages = [
            {"role": "system", "content": INSTRUCTION},
            {"role": "user", "content": request},
        ]
        prompt = (await self._llm.chat(messages, max_tokens=200)).strip().strip('"')
        if not prompt:
            raise ProviderRejectedError("the model returned an empty image prompt", self._llm.name)
        return ImagePromptResult(prompt=prompt[:MAX_PROMPT_CHARS])
