"""Load on a running OpenAI-compatible server (`ovchat serve`, OVMS, llama-server): N clients at once,
each streaming chat completions of distinct prompts, for a number of rounds.

    python benchmarks/serve_load.py [--url http://127.0.0.1:8000/v1] [--clients 1,8] [--rounds 3] [--max-tokens 64]

Prints, per client count: requests/s, generated tokens/s (all clients together), and TTFT and per-token
latency as each client saw them (median and 90th percentile). Standard library only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
import urllib.request


def stream_chat(url: str, key: str | None, question: str, max_tokens: int) -> dict:
    """One streamed chat completion, timed on the client: start, first content, end, chunks."""
    body = {"messages": [{"role": "user", "content": question}], "max_tokens": max_tokens, "stream": True,
            "stream_options": {"include_usage": True}}
    request = urllib.request.Request(f"{url}/chat/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})})
    start, first, tokens = time.perf_counter(), None, None
    with urllib.request.urlopen(request, timeout=600) as response:
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            if first is None and any(c.get("delta", {}).get("content") for c in chunk.get("choices", [])):
                first = time.perf_counter()
    end = time.perf_counter()
    if first is None or not tokens:
        raise RuntimeError(f"no reply to {question!r}")
    return {"start": start, "first": first, "end": end, "tokens": tokens,
            "ttft_ms": (first - start) * 1000, "tpot_ms": (end - first) * 1000 / max(1, tokens - 1)}


def run(url: str, key: str | None, clients: int, rounds: int, max_tokens: int, offset: int) -> list[dict]:
    results, errors = [], []

    def client(index: int) -> None:
        for round_ in range(rounds):
            question = f"Request {offset + round_ * clients + index}: tell me a story about the number {index + 7}."
            try:
                results.append(stream_chat(url, key, question, max_tokens))
            except Exception as e:  # reported below; the other clients go on
                errors.append(str(e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise SystemExit(f"{len(errors)} of {clients * rounds} requests failed; first: {errors[0]}")
    return results


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--api-key")
    parser.add_argument("--clients", default="1,8", help="client counts to measure, one after another")
    parser.add_argument("--rounds", type=int, default=3, help="requests per client")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()

    stream_chat(args.url, args.api_key, "Warm-up: say hi.", 8)
    print("| clients | requests | requests/s | tokens/s | TTFT ms median / p90 | TPOT ms median / p90 |")
    print("|---|---|---|---|---|---|")
    offset = 0
    for clients in map(int, args.clients.split(",")):
        results = run(args.url, args.api_key, clients, args.rounds, args.max_tokens, offset)
        offset += clients * args.rounds
        seconds = max(r["end"] for r in results) - min(r["start"] for r in results)
        ttft, tpot = [r["ttft_ms"] for r in results], [r["tpot_ms"] for r in results]
        print(f"| {clients} | {len(results)} | {len(results) / seconds:.2f} | {sum(r['tokens'] for r in results) / seconds:.0f} | "
              f"{statistics.median(ttft):.0f} / {percentile(ttft, 0.9):.0f} | "
              f"{statistics.median(tpot):.1f} / {percentile(tpot, 0.9):.1f} |", flush=True)


if __name__ == "__main__":
    main()
