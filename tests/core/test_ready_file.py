"""`--ready-file`: a waiting process reads it as soon as it exists, so it never exists half
written (`pushkit.program.write_ready_file`)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from pushkit.program import write_ready_file


def test_a_reader_never_sees_the_file_half_written(tmp_path: Path) -> None:
    # Big enough that a plain write_text is visible empty or cut for a moment.
    document = {"port": 3000, "workers": list(range(20_000))}
    path = tmp_path / "ready.json"
    torn: list[str] = []
    done = threading.Event()

    def read_as_soon_as_it_exists() -> None:
        while not done.is_set():
            if path.exists():
                try:
                    text = path.read_text()
                except FileNotFoundError:
                    continue  # removed for the next round between the two calls
                try:
                    json.loads(text)
                except ValueError:
                    torn.append(text[:40])

    reader = threading.Thread(target=read_as_soon_as_it_exists)
    reader.start()
    try:
        for _ in range(200):
            write_ready_file(str(path), document)
            path.unlink()
    finally:
        done.set()
        reader.join()
    assert torn == []
    write_ready_file(str(path), document)
    assert json.loads(path.read_text()) == document
    assert [p.name for p in tmp_path.iterdir()] == ["ready.json"], "no partial file left"
