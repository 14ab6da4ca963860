"""Property-based tests for the push server's parsers of outside input: whatever the bytes,
only the documented error comes out, and what a well-behaved client sends decodes exactly."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from socketio import packet

from pushserver import packets, strictjson
from pushserver.payloads import PayloadError, parse_publish

# JSON a JavaScript client could have produced: finite numbers, any text, shallow nesting.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
# Text that is mostly packet-like, so the fuzzing reaches past the first character.
packetish = st.one_of(
    st.text(),
    st.builds(
        lambda kind, ns, ack, body: f"{kind}{ns}{ack}{body}",
        st.sampled_from("0123456789"),
        st.sampled_from(["", "/", "/admin,", "/x"]),
        st.sampled_from(["", "0", "7", "9" * 20]),
        st.one_of(st.text(), json_values.map(json.dumps), st.just("[" * 100)),
    ),
)


@given(packetish)
def test_decode_raises_only_packet_errors(text: str) -> None:
    try:
        decoded = packets.decode(text)
    except packets.PacketError as exc:
        assert exc.cause in packets.CAUSES
        # The message is ours: it never quotes the client's bytes.
        assert len(exc.message) < 100
    else:
        kinds = packets.Kind
        assert decoded.kind in (kinds.CONNECT, kinds.DISCONNECT, kinds.EVENT, kinds.ACK)


@given(
    name=st.text(min_size=1),
    args=st.lists(json_values, max_size=3),
    ack=st.none() | st.integers(min_value=0, max_value=2**53 - 1),
    namespace=st.sampled_from(["/", "/admin"]),
)
def test_an_event_a_client_sends_decodes_exactly(
    name: str, args: list[Any], ack: int | None, namespace: str
) -> None:
    prefix = "" if namespace == "/" else f"{namespace},"
    text = f"2{prefix}{'' if ack is None else ack}{json.dumps([name, *args])}"
    decoded = packets.decode(text)
    assert decoded.kind is packets.Kind.EVENT
    assert (decoded.namespace, decoded.ack_id, decoded.event) == (namespace, ack, name)
    assert decoded.data == [name, *args]


@given(
    reply=st.lists(json_values, max_size=2),
    ack=st.integers(min_value=0, max_value=2**53 - 1),
    namespace=st.sampled_from(["/", "/admin"]),
)
def test_an_ack_is_written_as_python_socketio_writes_it(
    reply: list[Any], ack: int, namespace: str
) -> None:
    expected = packet.Packet(packet.ACK, data=reply, namespace=namespace, id=ack).encode()
    assert packets.ack_text(namespace, ack, reply) == expected


@given(st.binary() | st.text().map(str.encode))
def test_strict_loads_raises_only_json_rejected(body: bytes) -> None:
    try:
        strictjson.loads(body)
    except strictjson.JsonRejected as exc:
        assert exc.code in {"bad_json", "too_deep", "not_finite"}


@given(json_values)
def test_strict_loads_agrees_with_json_on_what_javascript_can_read(value: Any) -> None:
    assert strictjson.loads(json.dumps(value)) == value


@given(st.integers(min_value=1, max_value=200))
def test_nesting_is_bounded_before_parsing(depth: int) -> None:
    text = "[" * depth + "]" * depth
    if depth <= strictjson.MAX_DEPTH:
        assert strictjson.depth_of(text) == depth
        strictjson.loads(text)
    else:
        with pytest.raises(strictjson.JsonRejected) as rejected:
            strictjson.loads(text)
        assert rejected.value.code == "too_deep"


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = json.dumps(["[" * 100, {"k": "{" * 100}])
    assert strictjson.depth_of(text) == 2
    assert strictjson.loads(text) == ["[" * 100, {"k": "{" * 100}]


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", '{"a":-Infinity}', "1e400", "9" * 400])
def test_what_javascript_cannot_read_is_not_finite(text: str) -> None:
    with pytest.raises(strictjson.JsonRejected) as rejected:
        strictjson.loads(text)
    assert rejected.value.code == "not_finite"


@given(st.binary() | json_values.map(lambda v: json.dumps(v).encode()))
def test_parse_publish_raises_only_payload_errors(body: bytes) -> None:
    try:
        request = parse_publish(body)
    except PayloadError as exc:
        assert exc.code in {
            "bad_json", "too_deep", "not_finite", "bad_payload", "bad_event", "bad_game_id",
            "reserved_event",
        }  # fmt: skip
    else:
        # Whatever passes can be sent to a browser as it is.
        assert "NaN" not in json.dumps(request.data, allow_nan=False)


@given(
    game=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,20}", fullmatch=True),
    event=st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,20}", fullmatch=True),
    data=json_values,
)
def test_a_good_publish_parses_exactly(game: str, event: str, data: Any) -> None:
    body = json.dumps({"gameId": game, "event": event, "data": data}).encode()
    try:
        request = parse_publish(body)
    except PayloadError as exc:
        assert exc.code == "reserved_event"
        return
    assert (request.game_id, request.event, request.data) == (game, event, data)
    assert not any(isinstance(x, float) and not math.isfinite(x) for x in _leaves(request.data))


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, list):
        return [leaf for item in value for leaf in _leaves(item)]
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    return [value]
