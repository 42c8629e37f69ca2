"""External model providers behind two small protocols, LLMClient and ImageClient."""

from consumers.providers.base import ImageClient, LLMClient, RetryPolicy
from consumers.providers.factory import build_image_client, build_llm_client

__all__ = ["ImageClient", "LLMClient", "RetryPolicy", "build_image_client", "build_llm_client"]
