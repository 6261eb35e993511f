"""Request images to numpy arrays: sizes checked before any decoding, each image's working
memory reserved from its header (:mod:`service.budget`), decoding in a thread pool (never
on the event loop), URLs through :mod:`service.urlfetch`."""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from concurrent.futures import Executor

import numpy as np

from core.images import Limits, decode_image

from .budget import current_reservation, peek_header
from .errors import PayloadTooLarge, ValidationProblem
from .schemas import ImageInput
from .urlfetch import Fetcher

__all__ = ["ImageLoader"]

_DATA_URL = re.compile(r"^data:[\w.+/-]*(;[\w.+-]+=[\w.+-]+)*;base64,", re.IGNORECASE)


class ImageLoader:
    """Decodes uploads, base64 and URLs under the service's limits."""

    def __init__(self, *, max_bytes: int, limits: Limits, executor: Executor,
                 fetcher: Fetcher) -> None:
        self.max_bytes = max_bytes
        self.limits = limits
        self.executor = executor
        self.fetcher = fetcher

    def check_size(self, size: int, what: str) -> None:
        if size > self.max_bytes:
            raise PayloadTooLarge(self.max_bytes, what, size=size)

    async def reserve(self, data: bytes) -> None:
        """Reserve the image's working memory in the current request's reservation (from
        its header, read in the thread pool): 503/413 before any pixel is decoded."""
        reservation = current_reservation()
        if reservation is None:
            return
        loop = asyncio.get_running_loop()
        header = await loop.run_in_executor(self.executor, peek_header, data, self.limits)
        if header is not None:
            reservation.add(header)

    async def decode(self, data: bytes, what: str) -> np.ndarray:
        """Encoded file bytes -> array; header limits and memory first, pixels in the
        thread pool."""
        self.check_size(len(data), what)
        await self.reserve(data)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.executor, lambda: decode_image(data, limits=self.limits, what=what))

    def unbase64(self, text: str, what: str) -> bytes:
        """Strict base64 (a ``data:...;base64,`` prefix is allowed), size checked first."""
        match = _DATA_URL.match(text)
        if match:
            text = text[match.end():]
        self.check_size(len(text) // 4 * 3, what)
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValidationProblem.at([what, "data"], f"not valid base64 ({exc})",
                                       "base64_decode") from None

    async def load(self, image: ImageInput, what: str) -> np.ndarray:
        """An :class:`ImageInput` (url or data) -> decoded array."""
        if image.url is not None:
            return await self.decode(await self.fetcher.fetch(image.url, what), what)
        text = image.data or ""
        loop = asyncio.get_running_loop()
        data = await loop.run_in_executor(self.executor, self.unbase64, text, what)
        return await self.decode(data, what)
