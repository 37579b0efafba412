"""Pictures in a chat: image files and data: URLs checked and decoded with Pillow into what GenAI's vision models
take (u8 RGB, height × width × 3), and the messages that carry them put into the form a chat template renders.

Pillow is not in the runtime's dependencies (it would take the venv past its size budget): `ovgenai-chat[images]`
adds it, and the serve extra has it.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

# Larger pictures are refused before they are decoded: a small file can declare billions of pixels (a
# decompression bomb), and vision models shrink every picture to under a megapixel anyway.
MAX_PIXELS = 50_000_000
FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?((?:;[^,;]*)*?);base64,(.*)$", re.DOTALL)


class ImageError(ValueError):
    """A picture that cannot be used; the message is one line for the user."""


@dataclass(eq=False)  # pictures are the same only when they are the same object (the chat history compares them)
class Picture:
    """A checked picture: its encoded bytes as given (what a server is sent) and its pixels, upright."""

    data: bytes
    mime: str
    name: str
    rgb: object = field(repr=False)  # a PIL image in RGB mode

    def data_url(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"

    def tensor(self):
        """The pixels as GenAI takes them: an ov.Tensor of u8 [height, width, 3]."""
        import numpy as np
        import openvino as ov

        return ov.Tensor(np.ascontiguousarray(np.asarray(self.rgb, dtype=np.uint8)))


def _pillow():
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise ImageError('reading images needs Pillow: pip install "ovgenai-chat[images]"') from None
    return Image, ImageOps


def decode_image(data: bytes, name: str) -> Picture:
    """`data` as a Picture (PNG, JPEG or WebP, EXIF orientation applied); ImageError naming `name` when it is none
    of those, is truncated or damaged, or has more than MAX_PIXELS pixels."""
    Image, ImageOps = _pillow()
    try:
        with warnings.catch_warnings():  # Pillow warns of pictures this large; they are refused just below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        if image.format not in FORMATS:
            raise ImageError(f"{name} is a {image.format} image; PNG, JPEG and WebP are read")
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise ImageError(f"{name} is {width}×{height} pixels, more than the {MAX_PIXELS / 1e6:.0f} megapixels "
                             f"a picture may have")
        image.load()  # a truncated or damaged file fails here, not in the middle of a reply
        mime = FORMATS[image.format]
        rgb = ImageOps.exif_transpose(image).convert("RGB")
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(f"{name} has more than the {MAX_PIXELS / 1e6:.0f} megapixels a picture may have") from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"{name} is not an image (PNG, JPEG or WebP)") from None
    except (OSError, ValueError, SyntaxError) as e:  # Pillow's errors for damaged files
        raise ImageError(f"{name} is a damaged image: {e}") from None
    return Picture(data, mime, name, rgb)


def read_image(path) -> Picture:
    """The image file at `path` as a Picture; ImageError for a file that cannot be read or used."""
    path = Path(path).expanduser()
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageError(f"cannot read {path}: {e.strerror or e}") from None
    return decode_image(data, str(path))


def from_data_url(url: str, name: str = "the image") -> Picture:
    """A data: URL (base64 PNG, JPEG or WebP) as a Picture. Other URLs are refused: a server that fetched them
    would fetch whatever a client names."""
    found = DATA_URL.match(url)
    if not found:
        if re.match(r"^(https?|ftp|file):", url, re.IGNORECASE):
            raise ImageError(f"{name} is a URL; only data: URLs are taken (the server fetches nothing): "
                             f"send the picture as data:image/png;base64,…")
        raise ImageError(f"{name} is not a data: URL with base64 content (data:image/png;base64,…)")
    try:
        data = base64.b64decode(found[3], validate=True)
    except (binascii.Error, ValueError):
        raise ImageError(f"{name} is not valid base64") from None
    return decode_image(data, name)


# GenAI reads these anywhere in a prompt as the place of a picture (or video) it was given.
GENAI_TAG = re.compile(r"<ov_genai_(?:image|video)_\d+>")


def check_text(messages: list[dict]) -> None:
    """ImageError when a message's text holds one of GenAI's picture tags: a model that sees images would take it for
    a picture's place (and fail on a picture it was not given)."""
    for message in messages:
        if isinstance(message.get("content"), str) and (tag := GENAI_TAG.search(message["content"])):
            raise ImageError(f"a message's text holds {tag.group()}, which a model that sees images takes for a "
                             f"picture's place; attach pictures instead of writing their tags")


def image_tags(messages: list[dict]) -> tuple[list[dict], list]:
    """(messages, their images in order): each message's `images` (pictures, or anything standing for one) made
    GenAI's tags <ov_genai_image_N> before its text, which any chat template renders as text and GenAI then
    expands into the model's own image tokens; for a whole conversation in one prompt."""
    tagged, images = [], []
    for message in messages:
        pictures = message.get("images") or ()
        tags = "".join(f"<ov_genai_image_{len(images) + i}>" for i in range(len(pictures)))
        images += pictures
        tagged.append({**{k: v for k, v in message.items() if k != "images"}, "content": tags + message["content"]})
    return tagged, images


def multipart(message: dict) -> dict:
    """A message as GenAI's ChatHistory takes one with pictures: a user's content as parts, an image part for each
    picture and then the text (once a history holds parts, every user message must)."""
    if message["role"] != "user":
        return {k: v for k, v in message.items() if k != "images"}
    parts = [{"type": "image"} for _ in message.get("images") or ()]
    return {"role": "user", "content": [*parts, {"type": "text", "text": message["content"]}]}
