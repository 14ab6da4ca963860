"""The rooms of a namespace as plain dicts, with the rooms of each socket beside them.

python-socketio's manager keeps `rooms[namespace][room] -> bidict{sid: eio_sid}` and finds the
rooms of a leaving socket by scanning (and first copying) every room of the namespace. Every
socket has a room of its own (its sid), so one disconnect costs O(sockets) and a game's end —
all its viewers leaving at once — or a drain costs O(sockets²): measured at 0.6 s for 2000
sockets leaving one worker, 2.3 s for 4000, and minutes for the 13k a worker holds at the
seed's scale. `IndexedRooms` keeps the inverse map beside the rooms, fed by the same
`basic_enter_room` / `basic_leave_room` every join, leave and close goes through.

It also keeps the rooms themselves, as plain dicts: a `bidict` per room (one per socket, for its
sid room) was the largest single cost of a new connection (~15% of its Python, py-spy over
`bench/accept.py`), and only the namespace's room of every socket (`None`) needs the inverse,
eio_sid → sid, which `_sid_of` is. Every method of python-socketio's manager that reaches into
a room's bidict (`basic_enter_room`, `basic_leave_room`, `get_participants`,
`sid_from_eio_sid`) is replaced here; the rest only read rooms as mappings.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from bidict import ValueDuplicationError

Room = str | None  # None is python-socketio's room of every connected socket


class IndexedRooms:
    """A mixin for a python-socketio manager (first in the bases, before the manager)."""

    rooms: dict[str, dict[Room, Any]]
    callbacks: dict[str, Any]
    pending_connect: dict[str, list[str]]
    pending_disconnect: dict[str, list[str]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rooms_of: dict[tuple[str, str], set[Room]] = {}
        # (namespace, eio_sid) -> sid: the inverse of every namespace's `None` room.
        self._sid_of: dict[tuple[str, str], str] = {}

    def basic_enter_room(
        self, sid: str, namespace: str, room: Room, eio_sid: str | None = None
    ) -> None:
        """python-socketio 5's `basic_enter_room`, on plain dicts (same errors, same order)."""
        rooms = self.rooms.get(namespace)
        if eio_sid is None and rooms is None:
            raise ValueError("sid is not connected to requested namespace")
        if sid != room and rooms is not None and room in rooms.get(None, ()):
            raise ValueError("cannot enter a sid room")
        if rooms is None:
            rooms = self.rooms[namespace] = {}
        if eio_sid is None:
            eio_sid = rooms[None][sid]
        if room is None:
            key = (namespace, eio_sid)
            if self._sid_of.setdefault(key, sid) != sid:
                # What bidict raised: this transport is already connected to the namespace
                # (python-socketio's `pre_connect` answers that with a refusal).
                raise ValueDuplicationError(eio_sid)
        members = rooms.get(room)
        if members is None:
            members = rooms[room] = {}
        members[sid] = eio_sid
        self._rooms_of.setdefault((namespace, sid), set()).add(room)

    def basic_leave_room(self, sid: str, namespace: str, room: Room) -> None:
        rooms = self.rooms.get(namespace, {})
        members = rooms.get(room)
        if members is not None and sid in members:
            eio_sid = members.pop(sid)
            if room is None:
                self._sid_of.pop((namespace, eio_sid), None)
            if not members:
                del rooms[room]
                if not rooms:
                    del self.rooms[namespace]
        key = (namespace, sid)
        of = self._rooms_of.get(key)
        if of is not None:
            of.discard(room)
            if not of:
                del self._rooms_of[key]

    def get_participants(self, namespace: str, room: Any) -> Iterator[tuple[str, str]]:
        """(sid, eio_sid) of every socket in `room` (or in any of a list of rooms), as a copy
        taken now: callers may leave rooms while they iterate."""
        rooms = self.rooms.get(namespace, {})
        if hasattr(room, "__len__") and not isinstance(room, str):
            participants: dict[str, str] = {}
            for one in room:
                participants.update(rooms.get(one, ()))
        else:
            participants = dict(rooms.get(room, ()))
        yield from participants.items()

    def sid_from_eio_sid(self, eio_sid: str, namespace: str) -> str | None:
        return self._sid_of.get((namespace, eio_sid))

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        """python-socketio 5's `basic_disconnect`, with the room scan replaced by the index."""
        if namespace not in self.rooms:
            return
        for room in list(self._rooms_of.get((namespace, sid), ())):
            self.basic_leave_room(sid, namespace, room)
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            waiting = pending.get(namespace)
            if waiting is not None and sid in waiting:
                waiting.remove(sid)
                if not waiting:
                    del pending[namespace]

    def get_rooms(self, sid: str, namespace: str) -> list[str]:
        """The rooms a client is in (its own sid room included, as the library returns it)."""
        return [room for room in self._rooms_of.get((namespace, sid), ()) if room is not None]
