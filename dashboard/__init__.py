"""The operator dashboard: a small server-rendered aiohttp app over the queue's Redis keys."""
