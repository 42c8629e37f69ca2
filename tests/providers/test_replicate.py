"""ReplicateImageClient against the loopback FakeReplicate (predictions + file downloads)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from consumers.providers.base import RetryPolicy
from consumers.providers.replicate import ReplicateImageClient
from shared.config_values import Secret
from shared.errors import ConfigError, ProviderRejectedError, ProviderUnavailableError
from tests.support.fakes.http import Reply, hang
from tests.support.fakes.replicate import FakeReplicate

FAST = RetryPolicy(budget_seconds=3.0, max_attempts=4, initial_wait=0.01, max_wait=0.05)
OFFICIAL_PATH = "/v1/models/black-forest-labs/flux-schnell/predictions"
Factory = Callable[..., ReplicateImageClient]


@pytest.fixture
async def replicate() -> AsyncIterator[FakeReplicate]:
    async with FakeReplicate() as fake:
        yield fake


@pytest.fixture
async def make_client(replicate: FakeReplicate) -> AsyncIterator[Factory]:
    clients: list[ReplicateImageClient] = []

    def make(**overrides: object) -> ReplicateImageClient:
        options: dict[str, object] = {
            "base_url": replicate.url,
            "timeout": 2.0,
            "retry": FAST,
            "poll_interval": 0.01,
            "prefer_wait": 5,
        } | overrides
        client = ReplicateImageClient(Secret(replicate.token), **options)  # type: ignore[arg-type]
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


async def test_sync_create_returns_file_bytes(
    make_client: Factory, replicate: FakeReplicate
) -> None:
    data = await make_client().generate("anime girl", negative_prompt="lowres")

    assert data == next(iter(replicate.files.values()))
    [create] = replicate.create_requests
    assert create.path == OFFICIAL_PATH
    assert create.headers["authorization"] == f"Bearer {replicate.token}"
    assert create.headers["prefer"] == "wait=5"
    assert create.json == {"input": {"prompt": "anime girl", "negative_prompt": "lowres"}}
    [download] = replicate.file_requests
    assert download.headers["authorization"] == f"Bearer {replicate.token}"
    assert replicate.poll_requests == []


async def test_versioned_model_uses_predictions_route(
    make_client: Factory, replicate: FakeReplicate
) -> None:
    model = "stability-ai/sdxl:" + "a" * 64
    assert await make_client(model=model).generate("girl")

    [create] = replicate.create_requests
    assert create.path == "/v1/predictions"
    assert create.json == {"input": {"prompt": "girl"}, "version": model}


async def test_polls_until_succeeded(make_client: Factory, replicate: FakeReplicate) -> None:
    replicate.polls_to_finish = 3

    assert await make_client().generate("girl")

    assert len(replicate.poll_requests) == 3
    assert all(
        r.headers["authorization"] == f"Bearer {replicate.token}" for r in replicate.poll_requests
    )
    assert replicate.predictions["fakepred0001"]["status"] == "succeeded"


async def test_processing_with_output_is_accepted(
    make_client: Factory, replicate: FakeReplicate
) -> None:
    replicate.polls_to_finish = 5
    replicate.early_output = True

    assert await make_client().generate("girl")
    assert replicate.poll_requests == []


@pytest.mark.parametrize("kind", ["string", "data_url"])
async def test_output_shapes(make_client: Factory, replicate: FakeReplicate, kind: str) -> None:
    replicate.output_kind = kind  # type: ignore[assignment]

    data = await make_client().generate("girl")

    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(replicate.file_requests) == (1 if kind == "string" else 0)


async def test_failed_prediction_is_rejected(
    make_client: Factory, replicate: FakeReplicate
) -> None:
    replicate.polls_to_finish = 1
    replicate.fail_with = "NSFW content detected"

    with pytest.raises(ProviderRejectedError, match="failed: NSFW content detected"):
        await make_client().generate("girl")
    assert replicate.file_requests == []


async def test_deadline_cancels_the_prediction(
    make_client: Factory, replicate: FakeReplicate
) -> None:
    replicate.polls_to_finish = 10_000

    with pytest.raises(ProviderUnavailableError, match="not finished"):
        await make_client(timeout=0.3, poll_interval=0.05).generate("girl")

    assert replicate.requests_to("/v1/predictions/fakepred0001/cancel")
    assert replicate.predictions["fakepred0001"]["status"] == "canceled"


async def test_create_429_is_retried_after_retry_after(
    make_client: Factory, replicate: FakeReplicate
) -> None:
    throttled = {"detail": "Request was throttled. Your rate limit resets in ~1s.", "status": 429}
    replicate.script(
        Reply(
            429, throttled, headers={"Retry-After": "1"}, content_type="application/problem+json"
        ),
        path=OFFICIAL_PATH,
    )

    assert await make_client().generate("girl")

    first, second = replicate.create_requests
    assert 0.95 <= second.at - first.at < 2.5


async def test_poll_500_is_retried(make_client: Factory, replicate: FakeReplicate) -> None:
    replicate.polls_to_finish = 1
    replicate.script(Reply(500, {"detail": "Internal Server Error"}), path="/v1/predictions/")

    assert await make_client().generate("girl")
    assert len(replicate.poll_requests) == 2
    assert len(replicate.create_requests) == 1


async def test_download_503_is_retried(make_client: Factory, replicate: FakeReplicate) -> None:
    replicate.script(Reply(503, {"detail": "unavailable"}), path="/files/")

    assert await make_client().generate("girl")
    assert len(replicate.file_requests) == 2


async def test_create_timeout_is_unavailable(
    make_client: Factory, replicate: FakeReplicate
) -> None:
    policy = RetryPolicy(budget_seconds=1.0, max_attempts=3, initial_wait=0.01, max_wait=0.02)
    replicate.script(hang(), hang(), hang(), path=OFFICIAL_PATH)
    started = time.monotonic()

    with pytest.raises(ProviderUnavailableError) as caught:
        await make_client(timeout=0.25, retry=policy).generate("girl")

    assert caught.value.status is None
    assert len(replicate.create_requests) == 3
    assert time.monotonic() - started < 2.5


async def test_wrong_token_is_rejected_at_once(replicate: FakeReplicate) -> None:
    client = ReplicateImageClient(Secret("r8_wrong"), base_url=replicate.url, retry=FAST)
    try:
        with pytest.raises(ProviderRejectedError, match="Unauthenticated") as caught:
            await client.generate("girl")
    finally:
        await client.aclose()
    assert caught.value.status == 401
    assert len(replicate.requests) == 1


async def test_unknown_model_404_is_final(make_client: Factory, replicate: FakeReplicate) -> None:
    replicate.script(
        Reply(
            404,
            {"detail": "Model not found", "status": 404},
            content_type="application/problem+json",
        )
    )

    with pytest.raises(ProviderRejectedError, match="Model not found"):
        await make_client().generate("girl")
    assert len(replicate.requests) == 1


async def test_token_not_sent_to_foreign_plain_http_host(
    make_client: Factory, replicate: FakeReplicate
) -> None:
    # `localhost` is another host than the client's 127.0.0.1 base, reached over plain http.
    foreign = replicate.origin.replace("127.0.0.1", "localhost") + "/files/fakepred0001/out-0.png"
    replicate.script(
        Reply(201, {"id": "fakepred0001", "status": "succeeded", "output": [foreign]}),
        path=OFFICIAL_PATH,
    )
    replicate.files["fakepred0001"] = b"png"

    with pytest.raises(ProviderRejectedError) as caught:
        await make_client().generate("girl")

    assert caught.value.status == 401
    [download] = replicate.file_requests
    assert "authorization" not in download.headers


def test_bad_model_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="REPLICATE_MODEL"):
        ReplicateImageClient(Secret("x"), model="a/b/c")


@pytest.mark.parametrize("output", [["ftp://example.com/out.png"], "not a url", [], None])
async def test_unusable_output_is_rejected(
    make_client: Factory, replicate: FakeReplicate, output: object
) -> None:
    prediction = {"id": "fakepred0009", "status": "succeeded", "output": output}
    replicate.script(Reply(201, prediction), path=OFFICIAL_PATH)

    with pytest.raises(ProviderRejectedError, match=r"not a URL|no output"):
        await make_client().generate("girl")
    assert replicate.file_requests == []


@pytest.mark.parametrize(
    ("url", "sent"),
    [
        ("https://replicate.delivery/xezq/out.png", True),
        ("https://pbxt.replicate.delivery/out.png", True),
        ("http://replicate.delivery/out.png", False),
        ("https://attacker.example/out.png", False),
        ("https://replicate.delivery.attacker.example/out.png", False),
        ("https://127.0.0.1:1/out.png", False),
    ],
)
def test_token_goes_only_to_the_api_and_replicate_file_host(url: str, sent: bool) -> None:
    client = ReplicateImageClient(Secret("x"), base_url="https://api.replicate.com")
    assert client._may_send_token(httpx.URL(url)) is sent
