"""roomindex: the indexed manager keeps exactly the rooms python-socketio's own would, whatever
the sequence of connects, joins, leaves, room closes and disconnects, and finds a socket's rooms
without scanning the others."""

from __future__ import annotations

from typing import Any

import pytest
from bidict import ValueDuplicationError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from socketio.base_manager import BaseManager

from pushserver.roomindex import IndexedRooms

NAMESPACE = "/"
SIDS = [f"s{i}" for i in range(6)]
GAMES = ["g1", "g2", "g3"]
_PROPERTY = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=300)


class Indexed(IndexedRooms, BaseManager):  # type: ignore[misc]
    pass


def _apply(manager: Any, op: tuple[str, str, str]) -> None:
    kind, sid, game = op
    connected = sid in manager.rooms.get(NAMESPACE, {}).get(None, {})
    if kind == "connect" and not connected:
        manager.basic_enter_room(sid, NAMESPACE, None, eio_sid="e" + sid)
        manager.basic_enter_room(sid, NAMESPACE, sid, eio_sid="e" + sid)
    elif kind == "join" and connected:
        manager.basic_enter_room(sid, NAMESPACE, game)
    elif kind == "leave":
        manager.basic_leave_room(sid, NAMESPACE, game)
    elif kind == "close":
        manager.basic_close_room(game, NAMESPACE)
    elif kind == "disconnect":
        manager.basic_disconnect(sid, NAMESPACE)


def _snapshot(manager: Any) -> dict[Any, dict[str, str]]:
    return {room: dict(members) for room, members in manager.rooms.get(NAMESPACE, {}).items()}


ops = st.lists(
    st.tuples(
        st.sampled_from(["connect", "join", "leave", "close", "disconnect"]),
        st.sampled_from(SIDS),
        st.sampled_from(GAMES),
    ),
    max_size=60,
)


@_PROPERTY
@given(ops)
def test_the_rooms_are_the_librarys_after_any_sequence(sequence: list[tuple[str, str, str]]):
    plain, indexed = BaseManager(), Indexed()
    for op in sequence:
        _apply(plain, op)
        _apply(indexed, op)
        assert _snapshot(indexed) == _snapshot(plain)
        for room in [None, *SIDS, *GAMES]:
            assert sorted(indexed.get_participants(NAMESPACE, room)) == sorted(
                plain.get_participants(NAMESPACE, room)
            )
        assert sorted(indexed.get_participants(NAMESPACE, GAMES)) == sorted(
            plain.get_participants(NAMESPACE, GAMES)
        )
        for sid in SIDS:
            eio_sid = "e" + sid
            assert indexed.sid_from_eio_sid(eio_sid, NAMESPACE) == plain.sid_from_eio_sid(
                eio_sid, NAMESPACE
            )
    for sid in SIDS:
        assert sorted(indexed.get_rooms(sid, NAMESPACE)) == sorted(plain.get_rooms(sid, NAMESPACE))


def test_a_second_socket_on_one_transport_is_refused_as_the_library_refuses_it():
    for manager in (BaseManager(), Indexed()):
        manager.basic_enter_room("s1", NAMESPACE, None, eio_sid="e1")
        with pytest.raises(ValueDuplicationError):
            manager.basic_enter_room("s2", NAMESPACE, None, eio_sid="e1")
        assert manager.sid_from_eio_sid("e1", NAMESPACE) == "s1"
        assert dict(manager.rooms[NAMESPACE][None]) == {"s1": "e1"}
        with pytest.raises(ValueError, match="cannot enter a sid room"):
            manager.basic_enter_room("s2", NAMESPACE, "s1", eio_sid="e2")
        with pytest.raises(ValueError, match="not connected"):
            manager.basic_enter_room("s3", "/other", "g1")


def test_a_disconnect_looks_only_at_the_sockets_own_rooms():
    manager = Indexed()
    for i in range(1000):
        _apply(manager, ("connect", f"s{i}", ""))
        _apply(manager, ("join", f"s{i}", "final"))
    # The library copies and scans every room of the namespace on each disconnect; a room
    # table that cannot be iterated shows the index never does.
    manager.rooms[NAMESPACE] = _NoScan(manager.rooms[NAMESPACE])
    manager.basic_disconnect("s7", NAMESPACE)
    assert "s7" not in manager.rooms[NAMESPACE]["final"]
    assert "s7" not in manager.rooms[NAMESPACE]
    assert manager.get_rooms("s7", NAMESPACE) == []
    assert len(manager.rooms[NAMESPACE]["final"]) == 999


class _NoScan(dict[Any, Any]):
    def items(self) -> Any:
        raise AssertionError("scanned every room")

    def copy(self) -> Any:
        raise AssertionError("copied every room")

    def __iter__(self) -> Any:
        raise AssertionError("iterated every room")
