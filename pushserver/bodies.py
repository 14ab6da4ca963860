"""HTTP request bodies read with a size cap.

`pushserver.routes` reads request bodies (`POST /publish`, `POST /admin/shed`) through
`read_capped`: a declared length over the cap is refused before reading, and a body without one
is cut off as soon as it passes it, so a hostile peer never makes us buffer more than `limit`
bytes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator


class BodyTooLarge(Exception):
    """The body is (or says it is) larger than the cap."""


async def read_capped(
    chunks: AsyncIterator[bytes], declared_length: str | None, limit: int
) -> bytes:
    if declared_length is not None and declared_length.isdigit() and int(declared_length) > limit:
        raise BodyTooLarge
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge
    return bytes(body)
