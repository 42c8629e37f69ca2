"""generate_image: the configured image provider draws; the dialog's photo counter bumps once."""

from __future__ import annotations

import base64

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from consumers.providers.base import ImageClient
from shared.db import repositories as repo
from shared.tasks import ImagePayload, ImageResult, QueueTask


class ImageHandler:
    def __init__(self, images: ImageClient, db: async_sessionmaker[AsyncSession]) -> None:
        self._images = images
        self._db = db

    async def __call__(self, task: QueueTask) -> ImageResult:
        payload = ImagePayload.model_validate(task.data)
        image = await self._images.generate(payload.prompt, payload.negative_prompt)
        if payload.dialog_id is not None:
            # Idempotent by task id: a redelivered task does not count the photo twice.
            async with self._db.begin() as session:
                await repo.bump_photo_counter(session, payload.dialog_id, task.task_id)
        return ImageResult(
            image_base64=base64.b64encode(image).decode(),
            image_size=len(image),
            dialog_id=payload.dialog_id,
            girl_id=payload.girl_id,
        )
