"""`ovchat serve`, one room per job:

- schemas.py: the API's request shapes and errors (OpenAI's, and ovchat's /api);
- batching.py: one model's ContinuousBatchingPipeline, stepped on its own thread;
- registry.py: the loaded models, with keep-alive and least-recently-used eviction;
- structured.py: structured output and tool calls;
- app.py: the routes, the request log and the uvicorn server.
"""

from .app import create_app, serve

__all__ = ["create_app", "serve"]
