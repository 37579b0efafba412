"""`Served`: an `ovchat serve` child process on a free loopback port, for the server's tests."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai

KEY = "test-key"


class Served:
    """An `ovchat serve` child process on a free port (`model_dir`: the model it loads at start, if any), with
    what /health said as it started and the answer to a chat request made then."""

    def __init__(self, model_dir: Path | None, *options: str, home: Path, env: dict | None = None):
        self.env = {**os.environ, "HOME": str(home), "OVCHAT_CACHE_DIR": str(home / "cache"), **(env or {})}
        model = [str(model_dir)] if model_dir else []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ovgenai_chat.cli", "serve", *model, "--port", "0", *options],
            stderr=subprocess.PIPE, text=True, errors="backslashreplace", env=self.env)  # C++ libraries may print raw bytes
        self.model = model_dir.name if model_dir else None
        self.url = self._announced_url()
        self.log: list[str] = []
        threading.Thread(target=self._keep_log, daemon=True).start()
        self.startup: list[tuple[int, dict]] = []  # (status, body) of /health and of a chat request
        if model_dir:
            health = httpx.get(f"{self.url}/health")
            chat = self.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1},
                             timeout=300)
            self.startup += [(health.status_code, health.json()), (chat.status_code, chat.json())]

    def _announced_url(self) -> str:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stderr], [], [], 1)
            if ready:
                line = self.process.stderr.readline()
                if found := re.search(r"serving (http://[\d.]+:\d+)/", line):
                    return found.group(1)
                if not line and self.process.poll() is not None:
                    break
        raise RuntimeError(f"the server did not start (exit status {self.process.poll()})")

    def _keep_log(self):
        for line in self.process.stderr:
            self.log.append(line)

    def post(self, path: str, body, key: str | None = KEY, timeout: float = 120, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        if isinstance(body, (dict, list)):
            return httpx.post(self.url + path, json=body, headers=headers, timeout=timeout, **kwargs)
        return httpx.post(self.url + path, content=body, headers={**headers, "Content-Type": "application/json"},
                          timeout=timeout, **kwargs)

    def ps(self, key: str | None = KEY) -> list[dict]:
        response = httpx.get(f"{self.url}/api/ps", headers={"Authorization": f"Bearer {key}"} if key else {})
        assert response.status_code == 200, response.text
        return response.json()["models"]

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=KEY, max_retries=0, timeout=120)

    def health(self) -> dict:
        response = httpx.get(f"{self.url}/health")
        assert response.status_code == 200, response.text
        return response.json()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=60)
