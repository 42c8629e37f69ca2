"""Fake AUTOMATIC1111 / Forge WebUI API (`POST /sdapi/v1/txt2img`, `GET .../sd-models`)."""

from __future__ import annotations

import base64
from typing import Any

import orjson
from aiohttp import web

from tests.support.fakes.http import (
    FakeServer,
    RecordedRequest,
    json_response,
    make_png,
    read_json,
)

TXT2IMG_PATH = "/sdapi/v1/txt2img"

# The WebUI fills every missing field with the processing class's default.
DEFAULTS: dict[str, Any] = {
    "prompt": "",
    "negative_prompt": "",
    "steps": 50,
    "width": 512,
    "height": 512,
    "cfg_scale": 7.0,
    "sampler_name": None,
    "sampler_index": "Euler",
    "seed": -1,
    "batch_size": 1,
    "n_iter": 1,
    "send_images": True,
    "save_images": False,
}
_FIELD_TYPES = {"steps": int, "width": int, "height": int, "batch_size": int, "n_iter": int}


class FakeSD(FakeServer):
    """Answers txt2img with base64 PNGs of the requested size, `parameters` and string `info`."""

    def __init__(self, seed: int = 1234567) -> None:
        super().__init__()
        self.seed = seed

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(TXT2IMG_PATH, self._txt2img)
        app.router.add_get("/sdapi/v1/sd-models", self._models)

    @property
    def txt2img_requests(self) -> list[RecordedRequest]:
        return self.requests_to(TXT2IMG_PATH)

    async def _models(self, request: web.Request) -> web.Response:
        model = {"title": "fake.safetensors [0000]", "model_name": "fake", "hash": "0000"}
        return json_response([model])

    async def _txt2img(self, request: web.Request) -> web.Response:
        data = await read_json(request)
        if not isinstance(data, dict):
            return json_response({"detail": "Expecting value: line 1 column 1 (char 0)"}, 422)
        params = {**DEFAULTS, **data}
        wrong = [name for name, kind in _FIELD_TYPES.items() if not isinstance(params[name], kind)]
        if wrong:
            detail = [
                {
                    "loc": ["body", name],
                    "msg": "value is not a valid integer",
                    "type": "type_error.integer",
                }
                for name in wrong
            ]
            return json_response({"detail": detail}, 422)
        count = params["batch_size"] * params["n_iter"]
        # Tiny images keep tests fast; the size the client asked for is in `info`.
        images = [make_png(8, 8, seed=self.seed + i) for i in range(count)]
        seeds = [self.seed + i for i in range(count)]
        info = {
            "prompt": params["prompt"],
            "all_prompts": [params["prompt"]] * count,
            "negative_prompt": params["negative_prompt"],
            "seed": seeds[0],
            "all_seeds": seeds,
            "width": params["width"],
            "height": params["height"],
            "sampler_name": params["sampler_name"] or params["sampler_index"],
            "cfg_scale": params["cfg_scale"],
            "steps": params["steps"],
            "batch_size": params["batch_size"],
            "index_of_first_image": 0,
        }
        body = {
            "images": [base64.b64encode(image).decode() for image in images]
            if params["send_images"]
            else [],
            "parameters": params,
            "info": orjson.dumps(info).decode(),
        }
        return json_response(body)
