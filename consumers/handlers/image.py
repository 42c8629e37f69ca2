"""generate_image: the configured image provider draws (the bot counts the photo once)."""

from __future__ import annotations

import base64

from consumers.providers.base import ImageClient
from consumers.task_run import TaskRun
from shared.tasks import ImagePayload, ImageResult, QueueTask


class ImageHandler:
    def __init__(self, images: ImageClient) -> None:
        self._images = images

    async def __call__(self, task: QueueTask, run: TaskRun) -> ImageResult:
        payload = task.payload_as(ImagePayload)
        image = await self._images.generate(payload.prompt, payload.negative_prompt)
        return ImageResult(
            image_base64=base64.b64encode(image).decode(),
            image_size=len(image),
            dialog_id=payload.dialog_id,
            girl_id=payload.girl_id,
        )
