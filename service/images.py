"""Request images to numpy arrays: sizes checked before any decoding, a request's working
memory reserved from all its images' headers before any of them is decoded
(:mod:`service.budget`), decoding in a thread pool (never on the event loop), URLs through
:mod:`service.urlfetch`."""

from __future__ import annotations

import asyncio
import base64
import binascii
import inspect
import re
from collections.abc import Awaitable, Sequence
from concurrent.futures import Executor
from functools import partial
from typing import TypeVar

import numpy as np

from core.images import Limits, decode_image
from core.memory import release_freed_memory

from .budget import current_reservation, peek_header
from .errors import PayloadTooLarge, ValidationProblem
from .schemas import ImageInput
from .urlfetch import Fetcher

__all__ = ["ImageLoader", "Source"]

T = TypeVar("T")
#: one image of a request: where it sits (``candidates/1``) and its bytes, or what gives them
Source = tuple[str, bytes | Awaitable[bytes]]

_DATA_URL = re.compile(r"^data:[\w.+/-]*(;[\w.+-]+=[\w.+-]+)*;base64,", re.IGNORECASE)


class ImageLoader:
    """Decodes uploads, base64 and URLs under the service's limits."""

    def __init__(self, *, max_bytes: int, limits: Limits, executor: Executor,
                 fetcher: Fetcher, header_executor: Executor | None = None) -> None:
        self.max_bytes = max_bytes
        self.limits = limits
        self.executor = executor
        # headers are read apart from decoding: a refusal by the budget must not wait in line
        # behind other requests' decodes and encodes (benchmarks/load.py, big)
        self.header_executor = header_executor or executor
        self.fetcher = fetcher

    def check_size(self, size: int, what: str) -> None:
        if size > self.max_bytes:
            raise PayloadTooLarge(self.max_bytes, what, size=size)

    async def header(self, data: bytes, check: bool = True) -> None:
        """Add the image to the current request's reservation from its header (read in the
        thread pool, nothing decoded); with ``check``, 413 once the request's known need is
        over budget."""
        reservation = current_reservation()
        if reservation is None:
            return
        loop = asyncio.get_running_loop()
        header = await loop.run_in_executor(self.header_executor, peek_header, data,
                                            self.limits)
        if header is not None:  # no image, or over the limits: decoding says which
            reservation.add(header, check)

    async def decode_all(self, sources: Sequence[Source]) -> list[np.ndarray]:
        """A request's images, in order: the images at hand (uploaded, inline) counted
        together first, so a 413 names their whole need; then the rest (URLs) awaited
        concurrently, each counted as it arrives (413 at once, the others not waited for);
        then the request's whole estimate taken from the budget at once (503 when it does
        not fit now); then all decoded."""
        async def arrive(what: str, data: bytes | Awaitable[bytes], check: bool = True
                         ) -> bytes:
            raw = data if isinstance(data, bytes) else await data
            self.check_size(len(raw), what)
            await self.header(raw, check)
            return raw

        here = [i for i, (_, data) in enumerate(sources) if isinstance(data, bytes)]
        later = [i for i in range(len(sources)) if i not in here]
        datas: list[bytes] = [b""] * len(sources)
        try:
            for i, raw in zip(here, await _gather_all(
                    [arrive(*sources[i], check=False) for i in here]), strict=True):
                datas[i] = raw
            if (reservation := current_reservation()) is not None:
                reservation.check()
            for i, raw in zip(later, await _gather_all([arrive(*sources[i]) for i in later]),
                              strict=True):
                datas[i] = raw
        except BaseException:
            for _, data in sources:  # refused before it was fetched: no "never awaited"
                if inspect.iscoroutine(data) and inspect.getcoroutinestate(data) == "CORO_CREATED":
                    data.close()
            raise
        reservation = current_reservation()
        loop = asyncio.get_running_loop()
        if reservation is not None:
            reservation.take()
            if reservation.trim:  # memory others freed may still be held: give it back first
                await loop.run_in_executor(self.executor, release_freed_memory)
        return await _gather_all([
            loop.run_in_executor(self.executor, partial(decode_image, data, limits=self.limits,
                                                        what=what))
            for (what, _), data in zip(sources, datas, strict=True)])

    async def decode(self, data: bytes, what: str) -> np.ndarray:
        """One image as a whole request's images: see :meth:`decode_all`."""
        return (await self.decode_all([(what, data)]))[0]

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

    async def fetch(self, image: ImageInput, what: str) -> bytes:
        """An :class:`ImageInput`'s bytes: fetched from its url, or its base64 unpacked
        off the event loop."""
        if image.url is not None:
            return await self.fetcher.fetch(image.url, what)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.unbase64, image.data or "", what)

    async def load_all(self, images: Sequence[tuple[str, ImageInput]]) -> list[np.ndarray]:
        """:class:`ImageInput` s (url or data) -> decoded arrays, as :meth:`decode_all`
        (inline data unpacked first: those images are at hand, counted together)."""
        inline = iter(await _gather_all([self.fetch(image, what) for what, image in images
                                         if image.url is None]))
        return await self.decode_all([
            (what, next(inline) if image.url is None else self.fetch(image, what))
            for what, image in images])

    async def load(self, image: ImageInput, what: str) -> np.ndarray:
        """One :class:`ImageInput` -> decoded array."""
        return (await self.load_all([(what, image)]))[0]


async def _gather_all(aws: Sequence[Awaitable[T]]) -> list[T]:
    """Every result in order; at the first failure the others are cancelled and it is
    raised (``asyncio.gather`` would leave them running: fetching, decoding)."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    if not tasks:
        return []
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:  # also when this request itself is cancelled (its deadline)
        for t in tasks:
            t.cancel()
    failures = [t.exception() for t in tasks if t.done() and not t.cancelled()]
    first = next((exc for exc in failures if exc is not None), None)
    if first is not None:
        raise first
    return [t.result() for t in tasks]
