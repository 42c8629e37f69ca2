"""IMAGE_PROVIDER=module:Class: a real plugin (the docs' Live3D example) generates through
its own HTTP API; a plugin that cannot be loaded stops the consumer's start with one clear
line. Stable Diffusion's SD_* settings reach the WebUI's txt2img request."""

from __future__ import annotations

import base64
import inspect
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from consumers.providers.factory import build_image_client, provider_for
from shared.config import Settings, load_settings
from shared.errors import ConfigError, ProviderRejectedError
from shared.queue import QueueService, TaskStatus, TaskType
from tests.characters.live3d_plugin import Live3DImageClient
from tests.characters.run_module import run_module
from tests.support.bot_harness import ROOT
from tests.support.consumer_helpers import consumer_env, start_consumer, stop_process
from tests.support.fakes.http import FakeServer, json_response, make_png, read_json
from tests.support.fakes.sd import FakeSD

PLUGIN = "tests.characters.live3d_plugin"
TOKEN = "live3d-secret-token"  # noqa: S105 - a fake token the fake server checks
IMAGE = make_png(6, 6, seed=3)
NOT_PLUGIN = "does not implement the image plugin protocol"


class FakeLive3D(FakeServer):
    """The example plugin's API: `POST /generate` → `{"image": base64 PNG}`."""

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/generate", self._generate)

    async def _generate(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return json_response({"error": "unauthorized"}, 401)
        body = await read_json(request)
        if not isinstance(body, dict) or not body.get("prompt"):
            return json_response({"error": "no prompt"}, 400)
        return json_response({"image": base64.b64encode(IMAGE).decode()})


def image_settings(provider: str, **values: Any) -> Settings:
    return load_settings(_env_file=None, image_provider=provider, **values)


async def test_a_plugin_is_loaded_and_generates_through_its_own_api(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with FakeLive3D() as live3d:
        monkeypatch.setenv("LIVE3D_URL", live3d.url)
        monkeypatch.setenv("LIVE3D_TOKEN", TOKEN)
        settings = image_settings(f"{PLUGIN}:Live3DImageClient")
        client = build_image_client(settings)
        try:
            image = await client.generate("portrait, anime style", "lowres")
            monkeypatch.setenv("LIVE3D_TOKEN", "wrong")
            refused = build_image_client(settings)
            with pytest.raises(ProviderRejectedError) as caught:
                await refused.generate("portrait")
            await refused.aclose()
        finally:
            await client.aclose()

    assert image == IMAGE
    assert client.name == "live3d"
    assert live3d.requests[0].json == {
        "prompt": "portrait, anime style",
        "negative_prompt": "lowres",
    }
    assert TOKEN not in str(caught.value)
    assert provider_for(settings, TaskType.GENERATE_IMAGE) == f"{PLUGIN}:Live3DImageClient"


def test_the_docs_example_is_the_plugin_the_tests_load() -> None:
    page = (ROOT / "docs" / "image-plugins.md").read_text()
    (example,) = [block for block in page.split("```python\n")[1:] if "class Live3D" in block]

    assert inspect.getsource(Live3DImageClient) in example.split("```")[0]


@pytest.mark.parametrize(
    ("provider", "expected"),
    [
        ("no_such_package.images:Client", "cannot import no_such_package.images"),
        (f"{PLUGIN}:Missing", f"{PLUGIN} has no class Missing"),
        (f"{PLUGIN}:NOT_A_CLASS", f"{PLUGIN} has no class NOT_A_CLASS"),
        (
            f"{PLUGIN}:SyncImageClient",
            "does not implement the image plugin protocol: no async def generate",
        ),
        (
            f"{PLUGIN}:NamelessImageClient",
            "does not implement the image plugin protocol: no `name`",
        ),
        (f"{PLUGIN}:Live3DImageClient", "Live3DImageClient() failed: KeyError: 'LIVE3D_URL'"),
    ],
)
def test_a_plugin_that_cannot_be_loaded_is_a_config_error_saying_why(
    provider: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LIVE3D_URL", raising=False)

    with pytest.raises(ConfigError) as caught:
        build_image_client(image_settings(provider))

    assert expected in str(caught.value)
    assert str(caught.value).startswith(f"IMAGE_PROVIDER={provider}")


@pytest.mark.parametrize(
    "value", ["live3d", "module:", ":Class", "a b:C", "mod:Class:x", "1mod:C"]
)
def test_an_image_provider_that_is_neither_known_nor_module_class_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="IMAGE_PROVIDER: must be one of local"):
        image_settings(value)


async def test_the_consumer_does_not_start_with_a_broken_plugin(settings: Settings) -> None:
    env = consumer_env(settings, "sqlite+aiosqlite://", IMAGE_PROVIDER=f"{PLUGIN}:SyncImageClient")

    args = ["--name", "plugin", "--types", "generate_image"]
    code, _, err = await run_module("consumers", args, env)

    assert code == 2, err
    (line,) = [line for line in err.splitlines() if not line.startswith("{")]
    assert line == (
        f"consumer cannot start: IMAGE_PROVIDER={PLUGIN}:SyncImageClient does not implement "
        "the image plugin protocol: no async def generate"
    )


@pytest.mark.timeout(90)
async def test_a_consumer_process_generates_images_with_the_plugin(
    settings: Settings, queue: QueueService, tmp_path: Path
) -> None:
    async with FakeLive3D() as live3d:
        env = consumer_env(
            settings,
            "sqlite+aiosqlite://",
            IMAGE_PROVIDER=f"{PLUGIN}:Live3DImageClient",
            LIVE3D_URL=live3d.url,
            LIVE3D_TOKEN=TOKEN,
        )
        consumer = start_consumer(
            env, "plugin", tmp_path / "consumer.log", "--types", "generate_image"
        )
        try:
            task_id = await queue.enqueue_task(
                TaskType.GENERATE_IMAGE, user_id=42, data={"prompt": "portrait", "girl_id": 7}
            )
            task = await queue.wait_for_task_result(task_id, timeout=60)
        finally:
            assert await stop_process(consumer) == 0

    assert task.status is TaskStatus.COMPLETED, task
    assert task.result is not None
    assert base64.b64decode(task.result["image_base64"]) == IMAGE
    assert live3d.requests[0].json["prompt"] == "portrait"
    assert TOKEN not in (tmp_path / "consumer.log").read_text()


async def test_stable_diffusion_takes_its_steps_size_sampler_and_cfg_from_settings() -> None:
    async with FakeSD() as sd:
        settings = load_settings(
            _env_file=None,
            image_provider="local",
            image_api_url=sd.url,
            sd_steps="12",
            sd_width="640",
            sd_height="832",
            sd_sampler="DPM++ 2M Karras",
            sd_cfg_scale="5.5",
        )
        client = build_image_client(settings)
        try:
            await client.generate("portrait")
        finally:
            await client.aclose()

    sent = sd.txt2img_requests[0].json
    assert (sent["steps"], sent["width"], sent["height"]) == (12, 640, 832)
    assert (sent["sampler_name"], sent["cfg_scale"]) == ("DPM++ 2M Karras", 5.5)


@pytest.mark.parametrize(
    ("name", "value"), [("sd_steps", "0"), ("sd_width", "32"), ("sd_cfg_scale", "0.5")]
)
def test_stable_diffusion_settings_out_of_range_fail_at_start(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name.upper()):
        load_settings(_env_file=None, **{name: value})
