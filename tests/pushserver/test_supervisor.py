"""The supervisor: restarts dead workers, drains on signals, refuses to start with a reason."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import eventually, free_port_block, process_gone, start_server


async def test_a_killed_worker_is_restarted_and_its_sibling_is_untouched(push_server, viewers):
    clients = await viewers(push_server.url, 60)
    joins = await asyncio.gather(
        *(v.client.call("joinByGameId", {"gameId": "g"}, timeout=5) for v in clients)
    )
    on_worker_1 = [v for v, j in zip(clients, joins, strict=True) if j["worker"].endswith("/1")]
    assert on_worker_1

    os.kill(push_server.worker_pids[0], signal.SIGKILL)
    await eventually(
        lambda: "worker 0 restarted" in push_server.log(), timeout=30, what="the restart"
    )
    assert "killed by SIGKILL" in push_server.log()

    async def metrics_back() -> bool:
        try:
            return await push_server.connected(0) == 0
        except httpx.HTTPError:
            return False

    await eventually(metrics_back, what="worker 0's metrics endpoint")
    # Worker 1 did not notice: same clients, still connected, still receiving.
    assert await push_server.connected(1) == len(on_worker_1)
    assert all(v.client.connected and v.disconnects == [] for v in on_worker_1)
    response = await push_server.publish("g", "after-restart", 1)
    assert response.status_code == 202
    await eventually(lambda: all(v.got("after-restart") == [1] for v in on_worker_1))


async def test_sigterm_drains_and_clients_come_back_by_themselves(
    server_factory, publish_token, viewers
):
    first = server_factory(token=publish_token)
    clients = await viewers(
        first.url, 40, reconnection=True, reconnection_delay=0.2, reconnection_delay_max=0.5
    )
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{first.url}/readyz")).status_code == 200
        assert (await http.get(f"{first.url}/healthz")).status_code == 200
    code = await asyncio.to_thread(first.stop)
    assert code == 0, first.log()
    assert "stopped: exit code 0" in first.log()
    await eventually(lambda: all(v.disconnects for v in clients), what="every client to drop")
    # The transport was closed without a socket.io DISCONNECT (which would be
    # `io server disconnect` and stop clients from reconnecting); python-socketio reports
    # that as `transport error`, the JS client as `transport close`.
    assert {reason for v in clients for reason in v.disconnects} == {"transport error"}

    # A new server on the same port: every client reconnects to it on its own.
    second = server_factory(token=publish_token, port=first.port)

    async def all_back() -> bool:
        return sum([await second.connected(w) for w in second.workers]) == 40

    await eventually(all_back, timeout=30, what="all 40 clients to reconnect")
    assert all(v.connects == 2 for v in clients)


def _run(
    args: list[str], env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pushserver", "--host", "127.0.0.1", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_a_taken_client_port_is_reported(redis_url):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = _run(["--port", str(port), "--metrics-port", "0", "--redis-url", redis_url])
    assert result.returncode == 1
    assert f"client port 127.0.0.1:{port} is already in use" in result.stderr


def test_a_second_server_on_the_same_port_is_refused(tmp_path, redis_url):
    first = start_server(tmp_path, redis_url, workers=1)
    try:
        result = _run(["--port", str(first.port), "--metrics-port", "0", "--redis-url", redis_url])
    finally:
        first.stop()
    assert result.returncode == 1
    assert "is already in use" in result.stderr


def test_a_taken_metrics_port_is_reported(redis_url):
    # Worker 1's port is taken; worker 0's must be free, or the error names it instead.
    first = free_port_block(2)
    port = first + 1
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        result = _run(
            [
                "--port",
                "0",
                "--metrics-port",
                str(first),
                "--workers",
                "2",
                "--redis-url",
                redis_url,
            ]
        )
    assert result.returncode == 1
    assert f"metrics port 127.0.0.1:{port} is already in use" in result.stderr


def test_unreachable_redis_is_reported():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    result = _run(
        [
            "--port",
            "0",
            "--metrics-port",
            "0",
            "--redis-url",
            f"redis://:hunter2hunter2@127.0.0.1:{dead}/0",
        ]
    )
    assert result.returncode == 1
    assert f"Redis at redis://:***@127.0.0.1:{dead}/0 is unreachable" in result.stderr
    assert "hunter2" not in result.stderr


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--workers", "0"], {}, "--workers must be between 1 and 64"),
        (["--workers", "many"], {}, "--workers: invalid value 'many'"),
        ([], {"PUSHSCALE_WORKERS": "x"}, "PUSHSCALE_WORKERS: invalid value 'x'"),
        (["--port", "70000"], {}, "--port must be a TCP port"),
        ([], {"PUSHSCALE_PUBLISH_TOKEN": "short"}, "at least 16 characters"),
        (["--publish-token-file", "/nonexistent/token"], {}, "cannot read the publish token file"),
        (["--drain-seconds", "soon"], {}, "--drain-seconds: invalid value 'soon'"),
        (["--bogus"], {}, "unrecognized arguments: --bogus"),
    ],
    ids=[
        "zero-workers",
        "non-numeric",
        "bad-env",
        "port-range",
        "short-token",
        "token-file",
        "bad-float",
        "unknown-flag",
    ],
)
def test_bad_options_exit_2_with_a_message(args, env, message):
    result = _run(args, env=env)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_the_publish_token_never_appears_in_logs_or_process_lists(tmp_path, redis_url):
    token = "s3cret-" + "x" * 20
    server = start_server(tmp_path, redis_url, workers=1, token=token)
    try:
        ps = subprocess.run(
            ["ps", "-eo", "args"], capture_output=True, text=True, check=True
        ).stdout
        environ = Path(f"/proc/{server.worker_pids[0]}/environ").read_bytes()
    finally:
        server.stop()
    assert token not in ps
    assert token.encode() not in environ, "workers get the token over their control socket"
    assert token not in server.log()


def test_env_variables_configure_the_server(tmp_path, redis_url):
    server = start_server(tmp_path, redis_url, workers=None, env={"PUSHSCALE_WORKERS": "3"})
    try:
        assert len(server.metrics_ports) == 3
        assert len(set(server.worker_pids)) == 3
    finally:
        assert server.stop() == 0


def test_a_crash_looping_worker_backs_off(tmp_path, redis_url):
    server = start_server(tmp_path, redis_url, workers=1)
    try:
        for _ in range(3):
            deadline = time.monotonic() + 30
            pid = None
            while pid is None and time.monotonic() < deadline:
                pid = _worker_pid(server.process.pid)
                time.sleep(0.05)
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
        # Crashes right after starting: 0.5 s, then 1 s, then 2 s.
        deadline = time.monotonic() + 30
        while "restarting in 2.0 s" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        log = server.log()
        assert "restarting in 0.5 s" in log and "restarting in 1.0 s" in log
        assert "restarting in 2.0 s" in log
    finally:
        server.stop()


def _worker_pid(supervisor_pid: int) -> int | None:
    children = Path(f"/proc/{supervisor_pid}/task/{supervisor_pid}/children").read_text().split()
    for child in children:
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        if b"pushserver.worker" in cmdline:
            return int(child)
    return None


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGQUIT], ids=["SIGINT", "SIGQUIT"])
async def test_other_stop_signals_drain_too(push_server, viewers, signum):
    clients = await viewers(push_server.url, 6)
    push_server.process.send_signal(signum)
    code = await asyncio.to_thread(push_server.process.wait, 30)
    assert code == 0
    log = push_server.log()
    assert f"draining ({signum.name})" in log
    await eventually(lambda: all(v.disconnects for v in clients), what="every client to drop")


async def test_workers_do_not_outlive_a_killed_supervisor(push_server, viewers):
    await viewers(push_server.url, 4)
    push_server.process.kill()
    push_server.process.wait()

    await eventually(
        lambda: all(process_gone(pid) for pid in push_server.worker_pids),
        timeout=20,
        what="orphaned workers to drain and exit",
    )
    assert "draining (supervisor gone)" in push_server.log()
