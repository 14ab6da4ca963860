"""adapter.controller.instruments: /metrics, and /healthz following the loop's heartbeat."""

from __future__ import annotations

import httpx

from adapter.controller import instruments as module


def test_healthz_follows_the_event_loops_heartbeat():
    instruments = module.Instruments()
    server, _ = instruments.serve(0, "127.0.0.1")
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        assert httpx.get(url + "/healthz").text == "ok"
        assert "pushscale_controller_leader" in httpx.get(url + "/metrics").text
        instruments.last_beat -= module.STALE_SECONDS + 1
        stale = httpx.get(url + "/healthz")
        assert stale.status_code == 503 and "has not run for" in stale.text
        instruments.beat()
        assert httpx.get(url + "/healthz").status_code == 200
    finally:
        server.shutdown()
        server.server_close()
