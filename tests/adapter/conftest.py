"""Fixtures for the adapter: `pushscale adapter` as a real process over real TLS.

`start_adapter` writes a static pods file (or, with `pods=None`, leaves discovery to the pod
watch: give `--kubeconfig` in `extra`), starts `python -m adapter` with a self-signed pair in a
temporary cert dir, and returns a client that verifies the server against that very
certificate: the tests speak the same HTTPS a kube-aggregator would. `settles` polls an answer
until it is the expected one.
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import trustme
import yaml

from adapter.pods import Pod, Service
from tests.conftest import spawn_until_ready


@dataclass
class RunningAdapter:
    process: subprocess.Popen[bytes]
    port: int
    cert_dir: Path
    log_path: Path

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, cert: trustme.LeafCert | None = None, **kwargs: Any) -> httpx.AsyncClient:
        """A client trusting the adapter's certificate; `cert`: present this client certificate
        (as the kube-aggregator presents its front-proxy one)."""
        verify = ssl.create_default_context(cafile=str(self.cert_dir / "apiserver.crt"))
        if cert is not None:
            cert.configure_cert(verify)
        return httpx.AsyncClient(base_url=self.url, verify=verify, timeout=10, **kwargs)

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        async with self.client() as client:
            return await client.get(path, **kwargs)

    def stop(self, timeout: float = 15) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


AdapterFactory = Callable[..., RunningAdapter]
T = TypeVar("T")


async def settles(read: Callable[[], Awaitable[T]], expected: T, timeout: float = 10) -> None:
    """Wait until `read()` returns `expected`; fail with the last value read."""
    deadline = time.monotonic() + timeout
    while (last := await read()) != expected:
        assert time.monotonic() < deadline, f"still {last!r}, expected {expected!r}"
        await asyncio.sleep(0.1)


def static_pod(name: str, metrics_port: int, workers: int, **fields: Any) -> dict[str, Any]:
    return {
        "namespace": "live",
        "name": name,
        "labels": {"app": "push"},
        "ip": "127.0.0.1",
        "metricsPort": metrics_port,
        "workers": workers,
        **fields,
    }


def start_adapter(
    tmp_path: Path,
    pods: list[dict[str, Any]] | None,
    *,
    services: list[dict[str, Any]] | None = None,
    extra: list[str] | None = None,
    name: str = "adapter",
) -> RunningAdapter:
    """`pods` (and `services`) go to a `--static-pods` file; None: no file, the pod watch."""
    static: list[str] = []
    if pods is not None:
        pods_file = tmp_path / f"{name}-pods.yaml"
        inventory: dict[str, Any] = {"pods": pods}
        if services:
            inventory["services"] = services
        pods_file.write_text(yaml.safe_dump(inventory))
        static = ["--static-pods", str(pods_file)]
    ready = tmp_path / f"{name}-ready.json"
    cert_dir = tmp_path / f"{name}-certs"
    log_path = tmp_path / f"{name}.log"
    args = [
        sys.executable, "-m", "adapter",
        "--secure-port", "0",
        "--bind-address", "127.0.0.1",
        "--cert-dir", str(cert_dir),
        *static,
        "--ready-file", str(ready),
        "--scrape-timeout-seconds", "0.5",
        "--rate-window-seconds", "10",
        *(extra if extra is not None else ["--authentication-skip"]),
    ]  # fmt: skip
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PUSHSCALE_ADAPTER_")}
    process, info = spawn_until_ready(args, environ, log_path, ready, "adapter", 30)
    return RunningAdapter(process, info["port"], cert_dir, log_path)


@pytest.fixture
def adapter_factory(tmp_path: Path) -> Iterator[AdapterFactory]:
    started: list[RunningAdapter] = []

    def factory(pods: list[dict[str, Any]] | None, **kwargs: Any) -> RunningAdapter:
        kwargs.setdefault("name", f"adapter{len(started)}")
        adapter = start_adapter(tmp_path, pods, **kwargs)
        started.append(adapter)
        return adapter

    yield factory
    for adapter in started:
        assert adapter.stop() == 0, adapter.log()
        assert "Traceback" not in adapter.log(), adapter.log()


@dataclass(frozen=True)
class SyncedPods:
    """A pod source for an in-process `AppState`: synced from the start, with fixed pods."""

    fixed: tuple[Pod, ...]
    synced: bool = True

    def pods(self) -> tuple[Pod, ...]:
        return self.fixed

    async def service(self, namespace: str, name: str) -> Service | None:
        return None

    async def run(self) -> None:
        return None

    async def wait_synced(self) -> None:
        return None
