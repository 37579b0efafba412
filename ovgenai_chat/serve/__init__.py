"""`ovchat serve`, one room per job:

- schemas.py: the API's request shapes and errors (OpenAI's, and ovchat's /api);
- batching.py: one model's ContinuousBatchingPipeline, stepped on its own thread;
- runner.py: a loaded model's own process, which holds its pipeline;
- registry.py: the loaded models, with keep-alive and least-recently-used eviction;
- structured.py: structured output and tool calls;
- app.py: the routes, the request log and the uvicorn server.

Nothing is imported here: a runner imports its modules without the web framework.
"""
