"""fanout_messages: what a message on the Redis channel must be; anything else is rejected
with a reason, and nothing but `MessageRejected` ever comes out of the parser."""

from __future__ import annotations

import json
import os
import pickle

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pushserver.fanout_messages import (
    REJECT_REASONS,
    MessageRejected,
    RoomMessage,
    encode_message,
    max_message_bytes,
    parse_message,
)
from pushserver.payloads import PayloadError, parse_publish

HOST = "0123456789abcdef0123456789abcdef"
LIMIT = max_message_bytes(1024 * 1024)
# The suite runs beside other work on shared machines: time is not what these tests check.
_PROPERTY = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _emit(**changes: object) -> bytes:
    document: dict[str, object] = {
        "method": "emit",
        "event": "score",
        "data": [{"home": 1}],
        "binary": False,
        "namespace": "/",
        "room": "game:42",
        "skip_sid": None,
        "callback": None,
        "host_id": HOST,
    }
    document.update(changes)
    return json.dumps({k: v for k, v in document.items() if v != "DROP"}).encode()


def test_a_message_we_encode_parses_back():
    message = RoomMessage("game:42", "score", {"home": 1, "away": [0, None]}, HOST)
    assert parse_message(encode_message(message), LIMIT) == message


def test_python_socketios_own_emit_message_parses():
    """What a pod of the previous release publishes (the library's encoder, its spacing)."""
    assert parse_message(_emit(), LIMIT) == RoomMessage("game:42", "score", {"home": 1}, HOST)


class _Touch:
    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, ("/tmp/pushscale-unpickled", "w"))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"x" * (LIMIT + 1), "too_large"),
        (pickle.dumps({"method": "emit"}), "pickle"),
        (pickle.dumps(_Touch(), protocol=5), "pickle"),
        (b"not json", "not_json"),
        (b"\xff\xfe{}", "not_json"),
        (b"[" * 100_000 + b"]" * 100_000, "not_json"),
        (b"1" * 5000, "not_json"),
        (b"", "not_json"),
        (b"[1, 2]", "bad_schema"),
        (b'"emit"', "bad_schema"),
        (_emit(method="disconnect"), "bad_schema"),
        (_emit(method="close_room"), "bad_schema"),
        (_emit(callback=["game:42", "/", 1]), "bad_schema"),
        (_emit(binary=True), "bad_schema"),
        (_emit(skip_sid="abc"), "bad_schema"),
        (_emit(namespace="/admin"), "bad_schema"),
        (_emit(room=42), "bad_schema"),
        (_emit(room=None), "bad_schema"),
        (_emit(room="lobby"), "bad_schema"),
        (_emit(event=["score"]), "bad_schema"),
        (_emit(event="disconnect"), "bad_schema"),
        (_emit(event="x" * 65), "bad_schema"),
        (_emit(host_id=7), "bad_schema"),
        (_emit(data="score"), "bad_schema"),
        (_emit(data=[1, 2]), "bad_schema"),
        (_emit(data="DROP"), "bad_schema"),
        (_emit(extra=1), "bad_schema"),
    ],
    ids=[
        "huge", "pickle", "pickle-that-opens-a-file", "text", "not-utf8", "nested-too-deep",
        "int-too-long", "empty", "array", "string", "disconnect-command", "close-room-command",
        "callback", "binary", "skip-sid", "other-namespace", "room-int", "room-null",
        "room-not-a-game", "event-list", "reserved-event", "event-too-long", "host-id-int",
        "data-not-a-list", "data-two-values", "data-missing", "unknown-field",
    ],
)  # fmt: skip
def test_bad_messages_are_rejected_with_their_reason(raw, reason):
    with pytest.raises(MessageRejected) as caught:
        parse_message(raw, LIMIT)
    assert caught.value.reason == reason
    assert caught.value.reason in REJECT_REASONS


def test_a_pickle_is_never_unpickled():
    with pytest.raises(MessageRejected):
        parse_message(pickle.dumps(_Touch()), LIMIT)
    assert not os.path.exists("/tmp/pushscale-unpickled")


def _only_the_documented_error(raw: bytes) -> None:
    try:
        message = parse_message(raw, 64 * 1024)
    except MessageRejected as exc:
        assert exc.reason in REJECT_REASONS
    else:
        assert isinstance(message, RoomMessage)


@settings(_PROPERTY, max_examples=500)
@given(st.binary(max_size=2048))
def test_any_bytes_give_a_message_or_the_documented_error(raw):
    _only_the_documented_error(raw)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)
_FIELD_VALUES = _JSON | st.sampled_from(["emit", "/", "game:1", "score", HOST, False, None])


_FIELD_NAMES = st.sampled_from(
    ["method", "event", "data", "binary", "namespace", "room", "skip_sid", "callback", "host_id",
     "sid", "other"]
)  # fmt: skip


@settings(_PROPERTY, max_examples=500)
@given(st.dictionaries(_FIELD_NAMES, _FIELD_VALUES))
def test_any_json_object_gives_a_message_or_the_documented_error(document):
    _only_the_documented_error(json.dumps(document).encode())


_GAME_IDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}", fullmatch=True)
_EVENTS = st.from_regex(r"[A-Za-z][A-Za-z0-9_.:-]{0,63}", fullmatch=True)


@settings(_PROPERTY, max_examples=300)
@given(_GAME_IDS, _EVENTS, _JSON)
def test_every_publish_a_worker_accepts_reaches_the_other_workers(game_id, event, data):
    """The receiver's schema is no stricter than `POST /publish`: no accepted publish is
    dropped by the workers it is meant for."""
    body = json.dumps({"gameId": game_id, "event": event, "data": data}).encode()
    try:
        asked = parse_publish(body)
    except PayloadError:
        return
    message = RoomMessage(asked.room, asked.event, asked.data, HOST)
    encoded = encode_message(message)
    assert len(encoded) <= max_message_bytes(len(body))
    parsed = parse_message(encoded, max_message_bytes(len(body)))
    assert (parsed.room, parsed.event, parsed.host_id) == (message.room, message.event, HOST)


@pytest.mark.parametrize(
    "body",
    [
        '{"gameId":"1","event":"e","data":[' + ",".join(["1e15"] * 1000) + "]}",
        '{"gameId":"1","event":"e","data":"' + "é" * 1000 + '"}',
        '{"gameId":"1","event":"e","data":"' + "\U0001f600" * 1000 + '"}',
    ],
    ids=["float-reprs", "two-byte-characters", "four-byte-characters"],
)
def test_the_size_limit_covers_what_re_encoding_adds(body):
    raw = body.encode()
    asked = parse_publish(raw)
    encoded = encode_message(RoomMessage(asked.room, asked.event, asked.data, HOST))
    assert len(encoded) > len(raw)
    assert len(encoded) <= max_message_bytes(len(raw))
