"""The client port a supervisor claims stays its own until it lets go, and only the workers'
listening sockets receive connections."""

from __future__ import annotations

import errno
import socket

import pytest

from pushserver.listeners import PortUnavailable, claim_client_port, client_socket


def _plain_bind_errno(port: int) -> int:
    """0 if anything else could take `port` now (an outgoing connection would bind it this
    way), else the error."""
    with socket.socket() as other:
        try:
            other.bind(("127.0.0.1", port))
        except OSError as exc:
            return exc.errno or -1
    return 0


def test_port_0_stays_claimed_from_start_up_to_release_even_with_no_worker_listening():
    reservation = claim_client_port("127.0.0.1", 0)
    port = reservation.getsockname()[1]
    try:
        assert port != 0
        # Between the claim and the first worker's socket (the supervisor checks Redis in
        # between, with connections of its own), and while every worker is restarting.
        assert _plain_bind_errno(port) == errno.EADDRINUSE
        worker = client_socket("127.0.0.1", port)
        worker.close()
        assert _plain_bind_errno(port) == errno.EADDRINUSE
    finally:
        reservation.close()
    assert _plain_bind_errno(port) == 0


def test_connections_go_to_the_workers_not_to_the_reservation():
    reservation = claim_client_port("127.0.0.1", 0)
    port = reservation.getsockname()[1]
    workers = [client_socket("127.0.0.1", port) for _ in range(2)]
    try:
        for worker in workers:
            worker.settimeout(0)
        clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(20)]
        accepted = 0
        for worker in workers:
            while True:
                try:
                    conn, _ = worker.accept()
                except BlockingIOError:
                    break
                conn.close()
                accepted += 1
        assert accepted == 20
        for client in clients:
            client.close()
    finally:
        for sock in [reservation, *workers]:
            sock.close()


def test_an_explicit_port_with_a_listener_on_it_is_refused():
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(
            PortUnavailable, match=f"client port 127.0.0.1:{port} is already in use"
        ):
            claim_client_port("127.0.0.1", port)


def test_an_explicit_free_port_is_claimed():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    reservation = claim_client_port("127.0.0.1", port)
    try:
        assert reservation.getsockname()[1] == port
        assert _plain_bind_errno(port) == errno.EADDRINUSE
    finally:
        reservation.close()
