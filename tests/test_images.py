"""Pictures in the chat: `ovchat run --image`, the REPL's /image, the Python API, `ovchat serve`'s image_url parts,
`ovchat show`, and the errors, on a tiny random Gemma 3 that sees images. Random weights: the tests compare replies
with references computed the same way, never with words."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import openai
import openvino as ov
import openvino_genai
import pexpect
import pexpect.fdpexpect
import pytest
from PIL import Image

import ovgenai_chat
from ovgenai_chat.engine import ACCURATE, PIPELINE_PROPERTIES
from served import Served

TOKENS = 8


@pytest.fixture(scope="session")
def vlm(converted_vlm) -> Path:
    return converted_vlm("gemma3-vision")


@pytest.fixture(scope="session")
def pictures(tmp_path_factory) -> list[Path]:
    """Two random pictures: a PNG and a JPEG of other sizes."""
    folder = tmp_path_factory.mktemp("pictures")
    paths = [folder / "first.png", folder / "second picture.jpg"]
    for seed, (path, shape) in enumerate(zip(paths, [(40, 60, 3), (70, 50, 3)])):
        Image.fromarray(np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)).save(path)
    return paths


def pixels(path: Path) -> ov.Tensor:
    return ov.Tensor(np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8))


def reference(model_dir: Path, turns: list[tuple[str, list[Path]]]) -> list[str]:
    """Greedy replies to each turn from a VLMPipeline run directly, as GenAI documents a chat with pictures: one
    ChatHistory, each call given the last message's pictures."""
    pipe = openvino_genai.VLMPipeline(model_dir, "CPU", **PIPELINE_PROPERTIES, **ACCURATE)
    config = pipe.get_generation_config()
    config.max_new_tokens, config.do_sample = TOKENS, False
    history, replies = openvino_genai.ChatHistory(), []
    for text, paths in turns:
        history.append({"role": "user", "content": [*({"type": "image"} for _ in paths), {"type": "text", "text": text}]})
        replies.append(pipe.generate(history, images=[pixels(p) for p in paths], generation_config=config).texts[0])
        history.append({"role": "assistant", "content": replies[-1]})
    return replies


def ovchat(*args, env, input=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ovgenai_chat.cli", *map(str, args)], input=input,
                          capture_output=True, text=True, env=env, timeout=600)


def test_one_shot_and_stdin_with_pictures(vlm, pictures, env):
    first = pictures[0]
    expected = reference(vlm, [("What is this?", [first]), ("And now?", [])])
    shot = ovchat("run", vlm, "--image", first, "-p", "What is this?", "--greedy", "--max-new-tokens", TOKENS, env=env)
    assert shot.returncode == 0, shot.stderr
    assert shot.stdout == expected[0] + "\n"
    # stdin: the pictures go with the first line, and the second turn still sees them
    lines = ovchat("run", vlm, "--image", first, "--json", "--greedy", "--max-new-tokens", TOKENS, env=env,
                   input="What is this?\nAnd now?\n")
    assert lines.returncode == 0, lines.stderr
    replies = [json.loads(line) for line in lines.stdout.splitlines()]
    assert [r["reply"] for r in replies] == expected
    assert replies[0]["metrics"]["output_tokens"] == TOKENS and replies[1]["metrics"]["ttft_ms"] > 0


def test_two_pictures_and_the_first_kept_in_a_later_turn(vlm, pictures):
    first, second = pictures
    turns = [("Look.", [first]), ("And this one?", [second]), ("Compare them.", [])]
    expected = reference(vlm, turns)
    chat = ovgenai_chat.load(vlm, max_new_tokens=TOKENS, temperature=0)
    assert chat.send(turns[0][0], images=turns[0][1]) == expected[0]
    assert "".join(chat.stream(turns[1][0], images=turns[1][1])) == expected[1]
    assert chat.send(turns[2][0]) == expected[2]
    # The same conversation in a new chat (no ChatHistory of GenAI's to go on in) goes as one prompt with every
    # picture, and answers the same.
    chat.messages = chat.messages[:-2]
    again = ovgenai_chat.load(vlm, max_new_tokens=TOKENS, temperature=0)
    again.messages = list(chat.messages)
    assert again.send(turns[2][0]) == expected[2]
    # two pictures in one message
    together = ovgenai_chat.load(vlm, max_new_tokens=TOKENS, temperature=0)
    assert together.send("Both?", images=[first, second]) == reference(vlm, [("Both?", [first, second])])[0]


def test_saved_chat_keeps_its_pictures(vlm, pictures, tmp_path):
    chat = ovgenai_chat.load(vlm, max_new_tokens=TOKENS, temperature=0)
    chat.send("What is this?", images=[pictures[0]])
    chat.save(tmp_path / "chat.json")
    follow_up = chat.send("And now?")
    loaded = ovgenai_chat.load(vlm, max_new_tokens=TOKENS, temperature=0)
    loaded.load(tmp_path / "chat.json")
    assert np.array_equal(np.asarray(loaded.messages[0]["images"][0].rgb), np.asarray(Image.open(pictures[0])))
    assert loaded.send("And now?") == follow_up


def test_repl_image_command_and_dropped_path(vlm, pictures, env):
    first, second = pictures
    expected = reference(vlm, [("What is this?", [first, second])])[0]
    controller, terminal = os.openpty()
    process = subprocess.Popen([sys.executable, "-m", "ovgenai_chat.cli", "run", str(vlm), "--greedy",
                                "--max-new-tokens", str(TOKENS)], stdin=terminal, stdout=terminal, stderr=terminal,
                               env={**env, "OVCHAT_NOHISTORY": "1"}, start_new_session=True)
    os.close(terminal)
    child = pexpect.fdpexpect.fdspawn(controller, encoding="utf-8", timeout=120)
    try:
        child.expect(">>> ")
        child.sendline("/image")
        child.expect("no pictures attached")
        child.sendline(f"/image {first}")
        child.expect("attached .*first.png, 60×40; 1 for the next message")
        child.sendline("/image /nonexistent.png")
        child.expect("cannot read /nonexistent.png")
        # a file dragged onto a terminal arrives quoted (its name has a space), with the message typed after it
        child.sendline(f"'{second}' What is this?")
        child.expect("2 for the next message")
        child.expect_exact(expected.replace("\n", "\r\n"))
        child.expect(">>> ")
        child.sendline("/image")
        child.expect("no pictures attached")  # they went with the message
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        process.kill() if process.poll() is None else None
        process.wait()


def test_bad_pictures_are_one_line_errors(vlm, converted, pictures, env, tmp_path):
    text_file = tmp_path / "notes.png"
    text_file.write_text("not a picture")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(pictures[0].read_bytes()[:200])
    huge = tmp_path / "huge.png"
    Image.new("L", (10_000, 10_000)).save(huge)  # 100 megapixels, a few hundred kB
    for path, said in ((tmp_path / "missing.png", "cannot read"), (text_file, "is not an image"),
                       (truncated, "damaged image"), (huge, "megapixels")):
        result = ovchat("run", vlm, "--image", path, "-p", "Hi", env=env)
        assert result.returncode == 1
        assert result.stderr.startswith("Error: ") and said in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    text_model = ovchat("run", converted("llama"), "--image", pictures[0], "-p", "Hi", env=env)
    assert text_model.returncode == 1 and "does not see images" in text_model.stderr
    assert "Traceback" not in text_model.stderr
    typed_tag = ovchat("run", vlm, "-p", "What is <ov_genai_image_0>?", env=env)  # GenAI's tag, typed: no picture
    assert typed_tag.returncode == 1 and "picture's place" in typed_tag.stderr and "Traceback" not in typed_tag.stderr


def test_show_says_whether_a_model_sees_images(vlm, converted, converted_vlm, env):
    assert json.loads(ovchat("show", vlm, "--json", env=env).stdout)["sees_images"] is True
    assert json.loads(ovchat("show", converted("llama"), "--json", env=env).stdout)["sees_images"] is False
    assert "Sees images:       yes" in ovchat("show", vlm, env=env).stdout
    # The vision tower's weights apart from the language model's: int8 beside an int4 language model by default.
    shown = json.loads(ovchat("show", converted_vlm("gemma3-vision", "int4"), "--json", env=env).stdout)
    assert set(shown["vision_layers"]) == {"int8_asym"} and any(p.startswith("int4") for p in shown["layers"])


def data_url(path: Path, size: int | None = None) -> str:
    data = path.read_bytes()[:size]
    return f"data:image/png;base64,{base64.b64encode(data).decode()}"


def picture_message(text: str, *urls: str) -> dict:
    return {"role": "user", "content": [*({"type": "image_url", "image_url": {"url": u}} for u in urls),
                                        {"type": "text", "text": text}]}


def test_server_takes_pictures_as_data_urls(vlm, converted, pictures, tmp_path):
    first, second = pictures
    expected = reference(vlm, [("What is this?", [first]), ("And this one?", [second]), ("Compare them.", [])])
    served = Served(vlm, "--api-key", "test-key", home=tmp_path)
    try:
        client = served.client()
        model = vlm.name
        reply = client.chat.completions.create(model=model, messages=[picture_message("What is this?", data_url(first))],
                                               max_tokens=TOKENS, temperature=0)
        assert reply.choices[0].message.content == expected[0]
        # stateless: the whole conversation each time, its older pictures too
        conversation = [picture_message("What is this?", data_url(first)), {"role": "assistant", "content": expected[0]},
                        picture_message("And this one?", data_url(second)), {"role": "assistant", "content": expected[1]},
                        {"role": "user", "content": "Compare them."}]
        stream = client.chat.completions.create(model=model, messages=conversation, max_tokens=TOKENS, temperature=0,
                                                stream=True)
        assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == expected[2]
        png = Image.new("RGB", (10_000, 10_000))
        big = io.BytesIO()
        png.save(big, "PNG")
        for url, said in (("https://example.com/cat.png", "only data: URLs"), ("data:image/png;base64,@@@", "base64"),
                          (data_url(first, 200), "damaged"), (f"data:image/png;base64,{base64.b64encode(b'hi').decode()}",
                                                              "not an image"),
                          (f"data:image/png;base64,{base64.b64encode(big.getvalue()).decode()}", "megapixels")):
            with pytest.raises(openai.BadRequestError) as refused:
                client.chat.completions.create(model=model, messages=[picture_message("Hi", url)], max_tokens=2)
            assert said in refused.value.body["message"]
        with pytest.raises(openai.BadRequestError) as refused:  # GenAI's picture tag typed in a message
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": "<ov_genai_image_0>?"}],
                                           max_tokens=2)
        assert "picture's place" in refused.value.body["message"]
        text = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
        assert text.choices[0].message.content  # still serving, text too
        assert served.health()["status"] == "ok"
    finally:
        assert served.stop() == 0


def test_server_refuses_pictures_to_a_text_model(converted, pictures, tmp_path):
    served = Served(converted("llama"), "--api-key", "test-key", home=tmp_path)
    try:
        with pytest.raises(openai.BadRequestError) as refused:
            served.client().chat.completions.create(model=served.model, max_tokens=2,
                                                    messages=[picture_message("Hi", data_url(pictures[0]))])
        assert "does not see images" in refused.value.body["message"]
    finally:
        assert served.stop() == 0


def test_chat_page_sends_an_attached_picture_in_headless_chromium(vlm, pictures, tmp_path):
    """The chat page's Picture… button: the attached picture shows in the message, goes to the server as a data: URL,
    and the reply is the one the API gives for the same message with that picture."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "the page test needs Debian's chromium (apt-get install chromium)"
    served = Served(vlm, "--api-key", "test-key", home=tmp_path)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page()
            page.add_init_script("sessionStorage.setItem('ovchat-key', 'test-key')")
            page.goto(served.url + "/")
            page.wait_for_function("document.getElementById('model').value !== 'connecting…'")
            page.set_input_files("#picture", str(pictures[0]))
            page.wait_for_selector("#attached img")
            page.fill("#input", "What is this?")
            page.press("#input", "Enter")
            page.wait_for_function("document.getElementById('stats').textContent.includes('tokens/s')", timeout=120000)
            shown = page.eval_on_selector_all(".user img", "images => images.length")
            reply = page.inner_text(".assistant")
            browser.close()
        assert shown == 1 and reply.strip()
        message = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(pictures[0])}},
                                               {"type": "text", "text": "What is this?"}]}
        expected = httpx.post(served.url + "/v1/chat/completions", json={"model": vlm.name, "messages": [message]},
                              headers={"Authorization": "Bearer test-key"}, timeout=120).json()
        assert reply == expected["choices"][0]["message"]["content"]
    finally:
        assert served.stop() == 0
