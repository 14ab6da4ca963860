"""What a JavaScript client reported, one record per thing that happened.

`tests/js/viewer.mjs` (Node) prints the records and `tests/js/viewer.html` (a browser) POSTs
them; `test_js_client` and `test_browser` read them through this class. Records:
`{"type": "open" | "upgrade" | "connect", "transport"}` (an "open" from Node also has the
handshake's `pingInterval` and `pingTimeout`, in ms), `{"type": "ack", "ack"}`,
`{"type": "disconnect", "reason"}`, `{"type": "connect_error", "message"}`,
`{"type": "event", "name", "data"}`, and from the browser `{"type": "page_error", "message"}`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tests.conftest import eventually


class ClientRecords:
    def __init__(self, what: str) -> None:
        self.what = what
        self.records: list[dict[str, Any]] = []

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["type"] == kind]

    @property
    def transport(self) -> str | None:
        """The transport of its latest engine.io session: where it opened, or upgraded to."""
        moves = [r["transport"] for r in self.records if r["type"] in ("open", "upgrade")]
        return moves[-1] if moves else None

    async def wait(self, check: Callable[[], bool], what: str, timeout: float = 10) -> None:
        """`eventually`, failing with everything the client reported (its connect errors)."""
        try:
            await eventually(check, timeout=timeout, what=f"{what} ({self.what})")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the client reported {self.printed()}") from None

    def printed(self) -> str:
        """Its records, a run of identical ones (a retry loop's connect errors) as one."""
        runs: list[tuple[dict[str, Any], int]] = []
        for record in self.records:
            if runs and runs[-1][0] == record:
                runs[-1] = (record, runs[-1][1] + 1)
            else:
                runs.append((record, 1))
        return ", ".join(json.dumps(r) + (f" x{n}" if n > 1 else "") for r, n in runs)
