"""`ovchat serve` over a store, as ollama serves: models loaded on demand, kept warm for their keep-alive, evicted
least recently used first; and the client commands `ovchat run`, `ps` and `stop` talking to it through OVCHAT_HOST.
No timing is asserted (benchmarks/README.md measures them)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from served import KEY, Served

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def store(converted, tmp_path_factory) -> Path:
    """A store of two working models (the real SmolLM2 as `smol`, a tiny random Llama as `tiny`) and one whose
    weights file was cut short (`broken`)."""
    store = tmp_path_factory.mktemp("store")
    (store / "smol").symlink_to(converted("smollm2", "int4"))
    (store / "tiny").symlink_to(converted("llama", "int4"))
    broken = shutil.copytree(converted("llama", "int4"), store / "broken")
    weights = broken / "openvino_model.bin"
    weights.write_bytes(weights.read_bytes()[:weights.stat().st_size // 2])
    return store


def start(store: Path, tmp_path: Path, *options: str) -> Served:
    return Served(None, "--api-key", KEY, *options, home=tmp_path, env={"OVCHAT_MODELS": str(store)})


@pytest.fixture(scope="module")
def server(store, tmp_path_factory):
    served = start(store, tmp_path_factory.mktemp("home"), "--keep-alive", "3s")
    yield served
    assert served.stop() == 0, "".join(served.log)


def ovchat(served: Served | None, *args: str, key: str | None = KEY, timeout: float = 600) -> subprocess.CompletedProcess:
    """`ovchat ARGS` as a client of `served` (OVCHAT_HOST and OVCHAT_API_KEY), with the same store."""
    env = {**os.environ, "OVCHAT_MODELS": served.env["OVCHAT_MODELS"] if served else os.environ.get("OVCHAT_MODELS", ""),
           "OVCHAT_HOST": served.url if served else "127.0.0.1:9"}
    if served:
        env["HOME"], env["OVCHAT_CACHE_DIR"] = served.env["HOME"], served.env["OVCHAT_CACHE_DIR"]
    env.pop("OVCHAT_API_KEY", None)
    if key:
        env["OVCHAT_API_KEY"] = key
    return subprocess.run([sys.executable, "-m", "ovgenai_chat.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def ps(served: Served) -> list[str]:
    listed = ovchat(served, "ps", "--json")
    assert listed.returncode == 0, listed.stderr
    return [model["name"] for model in json.loads(listed.stdout)]


def wait_until(condition, seconds: float = 60):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_nothing_is_loaded_until_a_request_names_a_model(server):
    assert httpx.get(f"{server.url}/health").json()["loaded"] == 0
    assert server.ps() == []
    models = httpx.get(f"{server.url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}).json()["data"]
    listed = [m["id"] for m in models if not m["loaded"]]
    assert {"smol", "tiny", "broken"} <= set(listed)


def test_two_models_answer_concurrent_requests_and_ps_lists_both(server):
    client = server.client()
    replies: dict[str, object] = {}

    def ask(model: str):
        replies[model] = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": QUESTION}], max_tokens=24,
            extra_body={"keep_alive": "5m"})  # outlives the server's 3 s for the rest of the test

    threads = [threading.Thread(target=ask, args=(model,)) for model in ("smol", "tiny")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert "Paris" in replies["smol"].choices[0].message.content
    assert replies["tiny"].choices[0].message.content and replies["tiny"].model == "tiny"
    assert sorted(ps(server)) == ["smol", "tiny"]
    [smol] = [m for m in json.loads(ovchat(server, "ps", "--json").stdout) if m["name"] == "smol"]
    assert smol["memory_bytes"] > 0 and smol["size_bytes"] > 0 and smol["device"] == "CPU"
    assert smol["precision"] == "accurate" and smol["expires_at"] and smol["keep_alive"] == 300
    table = ovchat(server, "ps").stdout.splitlines()
    assert table[0].split() == ["NAME", "MEMORY", "SIZE", "DEVICE", "PRECISION", "UNTIL"] and len(table) == 3


def test_stop_then_run_through_the_server_loads_it_again(server):
    server.client().chat.completions.create(model="smol", messages=[{"role": "user", "content": "Hi"}], max_tokens=2,
                                            extra_body={"keep_alive": "5m"})
    stopped = ovchat(server, "stop", "smol")
    assert stopped.returncode == 0 and stopped.stdout.strip() == "Stopped smol", stopped.stderr
    assert "smol" not in ps(server)
    requests_before = sum("POST /v1/chat/completions 200" in line for line in server.log)
    through = ovchat(server, "run", "smol", "-p", QUESTION, "--keep-alive", "5m")
    local = ovchat(server, "run", "smol", "-p", QUESTION, "--local")
    assert through.returncode == 0 and local.returncode == 0, through.stderr + local.stderr
    assert "Paris" in through.stdout and through.stdout == local.stdout  # the same greedy reply either way
    assert sum("POST /v1/chat/completions 200" in line for line in server.log) == requests_before + 1
    assert "smol" in ps(server)
    again = ovchat(server, "stop", "smol")
    assert again.returncode == 0
    gone = ovchat(server, "stop", "smol")
    assert gone.returncode == 1 and gone.stderr.strip().splitlines() == [gone.stderr.strip()]
    assert "smol is not loaded" in gone.stderr


def test_a_run_through_the_server_reports_the_same_metrics_and_settings(server):
    ran = ovchat(server, "run", "smol", "-p", QUESTION, "--json", "--temperature", "0.7", "--top-k", "20", "--seed", "3")
    assert ran.returncode == 0, ran.stderr
    result = json.loads(ran.stdout)
    metrics = result["metrics"]
    assert set(metrics) == {"ttft_ms", "tpot_ms", "throughput_tps", "input_tokens", "output_tokens", "precision",
                            "draft_tokens", "accepted_tokens", "tokens_per_pass"}
    assert (metrics["draft_tokens"], metrics["accepted_tokens"], metrics["tokens_per_pass"]) == (0, 0, 1.0)
    assert metrics["ttft_ms"] > 0 and metrics["input_tokens"] > 5 and metrics["output_tokens"] > 0
    assert metrics["precision"] == "accurate"
    repeated = json.loads(ovchat(server, "run", "smol", "-p", QUESTION, "--json", "--temperature", "0.7", "--top-k",
                                 "20", "--seed", "3").stdout)
    assert repeated["reply"] == result["reply"]  # seeded sampling, on the server
    refused = ovchat(server, "run", "smol", "-p", QUESTION, "--top-p", "0")
    assert refused.returncode == 1 and refused.stderr.startswith("Error: ") and "Traceback" not in refused.stderr


def test_the_client_path_imports_no_openvino(server):
    """A client's process start stays a fraction of an in-process one: it never loads OpenVINO."""
    ran = ovchat(server, "run", "smol", "-p", "Hi", "--max-new-tokens", "4")
    assert ran.returncode == 0, ran.stderr
    probe = ("import sys, runpy; sys.argv = ['ovchat', 'run', 'smol', '-p', 'Hi', '--max-new-tokens', '4'];\n"
             "try: runpy.run_module('ovgenai_chat.cli', run_name='__main__')\n"
             "except SystemExit: pass\n"
             "print('\\nIMPORTED', sorted(m for m in sys.modules if m.startswith(('openvino', 'numpy', 'fastapi'))))")
    env = {**os.environ, "OVCHAT_HOST": server.url, "OVCHAT_API_KEY": KEY, "OVCHAT_MODELS": server.env["OVCHAT_MODELS"]}
    checked = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=300)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip().splitlines()[-1] == "IMPORTED []", checked.stdout
    for command in (("ps",), ("stop", "tiny")):
        listed = subprocess.run([sys.executable, "-c", probe.replace("'run', 'smol', '-p', 'Hi', '--max-new-tokens', '4'",
                                                                      ", ".join(repr(a) for a in command))],
                                capture_output=True, text=True, env=env, timeout=300)
        assert listed.stdout.strip().splitlines()[-1] == "IMPORTED []", listed.stdout


def test_models_unload_after_their_keep_alive_and_health_stays_up(server):
    client = server.client()
    for model in ("smol", "tiny"):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    assert sorted(ps(server)) == ["smol", "tiny"]  # with the server's --keep-alive 3s
    wait_until(lambda: ps(server) == [], 30)
    health = httpx.get(f"{server.url}/health")
    assert health.status_code == 200 and health.json()["loaded"] == 0
    assert any(re.search(r"unloaded smol \(\d+ MB freed\)", line) for line in server.log)
    client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=2,
                                   extra_body={"keep_alive": 0})
    wait_until(lambda: ps(server) == [], 10)  # keep_alive 0: unloaded as soon as its request ended


def test_a_model_that_fails_to_load_is_an_error_for_its_request_only(server):
    failed = server.post("/v1/chat/completions", {"model": "broken", "messages": [{"role": "user", "content": "Hi"}]})
    assert failed.status_code == 500 and failed.json()["error"]["code"] == "model_load_failed", failed.text
    assert failed.json()["error"]["message"].startswith("cannot load broken")
    missing = server.post("/v1/chat/completions", {"model": "nosuch", "messages": [{"role": "user", "content": "Hi"}]})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    assert "did you mean" in missing.json()["error"]["message"] or "the store has" in missing.json()["error"]["message"]
    path = server.post("/v1/chat/completions", {"model": "../smol", "messages": [{"role": "user", "content": "Hi"}]})
    assert path.status_code == 404  # a request names store models, never files
    ok = server.client().chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    assert ok.choices[0].message.content is not None
    through = ovchat(server, "run", "broken", "-p", "Hi")
    assert through.returncode == 1 and "Traceback" not in through.stderr
    assert through.stderr.strip().splitlines() == ["Loading broken on the server at " + server.url + "…",
                                                   through.stderr.strip().splitlines()[-1]]
    assert through.stderr.strip().splitlines()[-1].startswith("Error: ") and "cannot load broken" in through.stderr


def test_a_runner_that_dies_is_loaded_again_on_the_next_request(server):
    import psutil

    client = server.client()
    client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=2,
                                   extra_body={"keep_alive": "5m"})
    [runner] = [p for p in psutil.Process(server.process.pid).children() if "ovgenai_chat.serve.runner" in p.cmdline()]
    runner.kill()
    wait_until(lambda: "tiny" not in ps(server), 30)
    assert any("the process of tiny ended by itself" in line for line in server.log)
    again = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    assert again.choices[0].message.content is not None and "tiny" in ps(server)


def test_the_api_key_guards_the_new_endpoints(server):
    for method, path, body in (("GET", "/api/ps", None), ("POST", "/api/stop", {"model": "tiny"}),
                               ("POST", "/api/show", {"model": "tiny"}),
                               ("POST", "/api/tokenize", {"model": "tiny", "messages": [{"role": "user", "content": "a"}]})):
        response = httpx.request(method, server.url + path, json=body)
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key", path
    for key in (None, "wrong"):
        refused = ovchat(server, "ps", key=key)
        assert refused.returncode == 1 and "invalid or missing API key" in refused.stderr
        assert refused.stderr.strip().splitlines() == [refused.stderr.strip()]
        run = ovchat(server, "run", "tiny", "-p", "Hi", key=key)
        assert run.returncode == 1 and "invalid or missing API key" in run.stderr


def test_stop_waits_for_the_stream_in_flight(server):
    body = {"model": "smol", "messages": [{"role": "user", "content": "Tell me a long story about a lighthouse."}],
            "max_tokens": 200, "stream": True, "keep_alive": "5m"}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as response:
        lines = response.iter_lines()
        received = [next(lines) for _ in range(4)]
        stopped = ovchat(server, "stop", "smol")
        assert stopped.returncode == 0 and "unloads when its replies in progress end" in stopped.stdout, stopped.stderr
        assert "smol" in ps(server)
        received += [line for line in lines if line]
    assert received[-1] == "data: [DONE]" and '"finish_reason": "length"' in received[-2], received[-3:]
    wait_until(lambda: "smol" not in ps(server), 10)


@pytest.mark.parametrize("limit", [("--max-loaded", "1"), ("--max-memory", "1GB")])
def test_the_least_recently_used_model_is_evicted(store, tmp_path, limit):
    """Under --max-loaded 1, or a budget one runner and a second's estimate (its weights and a 1 GB KV pool) cross."""
    served = start(store, tmp_path, *limit, "--keep-alive", "-1")
    try:
        client = served.client()
        for model in ("tiny", "smol"):
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
            assert [m["name"] for m in served.ps()] == [model]
        assert any("unloading tiny to make room" in line for line in served.log)
        assert served.ps()[0]["expires_at"] is None  # --keep-alive -1: for ever
    finally:
        assert served.stop() == 0


def test_the_client_says_in_one_line_when_the_server_goes_away(store, tmp_path):
    served = start(store, tmp_path)
    client = subprocess.Popen([sys.executable, "-m", "ovgenai_chat.cli", "run", "smol", "-p",
                               "Tell me a long story about a lighthouse.", "--max-new-tokens", "2000"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "OVCHAT_HOST": served.url, "OVCHAT_API_KEY": KEY,
                                   "OVCHAT_MODELS": str(store)})
    try:
        assert client.stdout.read(20)  # the reply has begun
        served.process.send_signal(signal.SIGKILL)
        served.process.wait(timeout=60)
        _, errors = client.communicate(timeout=60)
    finally:
        client.kill()
    assert client.returncode == 1
    assert errors.strip().splitlines()[-1] == f"Error: the server at {served.url} went away in the middle of the reply"
    assert "Traceback" not in errors, errors


def test_without_a_server_ps_says_so_and_run_works_in_process(store):
    env_store = {"OVCHAT_MODELS": str(store)}
    refused = subprocess.run([sys.executable, "-m", "ovgenai_chat.cli", "ps"], capture_output=True, text=True,
                             env={**os.environ, **env_store, "OVCHAT_HOST": "127.0.0.1:9"}, timeout=60)
    assert refused.returncode == 1 and "no ovchat server answers at http://127.0.0.1:9" in refused.stderr
    bad = subprocess.run([sys.executable, "-m", "ovgenai_chat.cli", "ps"], capture_output=True, text=True,
                         env={**os.environ, "OVCHAT_HOST": "ftp://x"}, timeout=60)
    assert bad.returncode == 1 and "OVCHAT_HOST" in bad.stderr and "Traceback" not in bad.stderr
    ran = subprocess.run([sys.executable, "-m", "ovgenai_chat.cli", "run", "smol", "-p", QUESTION],
                         capture_output=True, text=True, env={**os.environ, **env_store, "OVCHAT_HOST": "127.0.0.1:9"},
                         timeout=600)
    assert ran.returncode == 0 and "Paris" in ran.stdout, ran.stderr


def test_the_interactive_chat_through_the_server(server):
    """The REPL through a server: the same /commands, Ctrl-C ending a reply (and its generation on the server)."""
    from test_runtime import spawn_in_terminal

    env = {**os.environ, "OVCHAT_HOST": server.url, "OVCHAT_API_KEY": KEY, "OVCHAT_MODELS": server.env["OVCHAT_MODELS"],
           "OVCHAT_NOHISTORY": "1"}
    process, child = spawn_in_terminal(["run", "smol", "--max-new-tokens", "300", "--verbose"], env)
    try:
        child.expect_exact(f"Server: {server.url}")
        child.expect_exact(">>> ")
        child.sendline(QUESTION)
        child.expect("Paris")
        child.expect_exact(">>> ")
        child.sendline("/show")
        child.expect(r"model\s+smol \(")
        child.expect(r"precision\s+accurate")
        child.expect(r"context\s+\d+ of 8192 tokens in use")
        child.sendline("/set top_p 0")
        child.expect_exact("/set top_p:")
        child.sendline("/set temperature 0")
        child.expect_exact("(temperature 0)")
        child.sendline("Write a very long story about a ship, at least a thousand words.")
        child.expect_exact("thousand words.")
        child.expect(r"\w+ \w+ \w+ \w+")
        process.send_signal(signal.SIGINT)
        child.expect_exact(">>> ")
        child.sendline("/stats")
        child.expect(r"(\d+) tokens in, (\d+) out")
        assert int(child.match.group(1)) > 20 and int(child.match.group(2)) < 300
        wait_until(lambda: all(m["active_requests"] == 0 for m in server.ps()), 30)  # cancelled on the server too
        child.sendline("/exit")
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
        child.close()


def test_serve_in_the_background(store, tmp_path):
    """`ovchat serve --background` returns once the server answers (and has loaded the model it names), detached
    and logging to the state directory; a server that cannot start is its one-line error."""
    import psutil

    env = {**os.environ, "OVCHAT_MODELS": str(store), "XDG_STATE_HOME": str(tmp_path), "HOME": str(tmp_path)}
    started = subprocess.run([sys.executable, "-m", "ovgenai_chat.cli", "serve", "tiny", "--background", "--port", "0"],
                             capture_output=True, text=True, env=env, timeout=300)
    assert started.returncode == 0, started.stderr
    found = re.search(r"Serving in the background at (http://\S+) \(pid (\d+), log (\S+)\)", started.stdout)
    assert found, started.stdout
    url, pid, log = found[1], int(found[2]), Path(found[3])
    try:
        listed = subprocess.run([sys.executable, "-m", "ovgenai_chat.cli", "ps", "--json"], capture_output=True,
                                text=True, env={**env, "OVCHAT_HOST": url}, timeout=60)
        assert [m["name"] for m in json.loads(listed.stdout)] == ["tiny"]  # loaded before --background returned
        assert log == tmp_path / "ovgenai-chat" / "serve.log" and "serving " + url in log.read_text()
        assert psutil.Process(pid).ppid() != os.getpid()  # detached: not a child of whoever started it
    finally:
        os.kill(pid, signal.SIGINT)
        psutil.Process(pid).wait(timeout=60)
    refused = subprocess.run([sys.executable, "-m", "ovgenai_chat.cli", "serve", "nosuch", "--background", "--port",
                              "0"], capture_output=True, text=True, env=env, timeout=300)
    assert refused.returncode == 1 and refused.stderr.strip().splitlines() == [refused.stderr.strip()]
    assert refused.stderr.startswith("Error: no model named nosuch")
