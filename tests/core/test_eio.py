"""engine.io's wire formats (`pushserver.eio`): tables for the known forms, properties for
round-trips and for arbitrary bytes (only `EioError` ever comes out)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushserver import eio
from pushserver.eio import EioError, EioRefused, Refusal

text_packets = st.builds(lambda kind, rest: kind + rest, st.sampled_from("0123456"), st.text())
packets = st.lists(text_packets | st.binary(), min_size=1, max_size=8)
# Text packets that contain no record separator, the only thing v4 cannot carry in a packet.
v4_packets = st.lists(
    st.builds(
        lambda kind, rest: kind + rest,
        st.sampled_from("0123456"),
        st.text().map(lambda t: t.replace("\x1e", "")),
    )
    | st.binary(),
    min_size=1,
    max_size=8,
)


@given(v4_packets)
def test_v4_payload_round_trip(sent: list[eio.Packet]) -> None:
    body = eio.encode_payload_v4(sent).encode()
    assert eio.decode_payload_v4(body, 100) == sent


@given(packets)
def test_v3_payload_round_trip(sent: list[eio.Packet]) -> None:
    body = eio.encode_payload_v3(sent).encode("utf-8", "surrogatepass")
    try:
        assert eio.decode_payload_v3(body, 100) == sent
    except EioError:
        # Only lone surrogates, which UTF-8 cannot carry, may fail.
        assert any(isinstance(p, str) and any(0xD800 <= ord(c) < 0xE000 for c in p) for p in sent)


@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_eio_error(body: bytes) -> None:
    for decode in (eio.decode_payload_v3, eio.decode_payload_v4):
        try:
            decoded = decode(body, 16)
        except EioError:
            continue
        assert 1 <= len(decoded) <= 16


v3_ish = st.lists(
    st.tuples(st.integers(0, 30), st.sampled_from(["", ":", "b4", "4", "2", "x"]), st.text()),
    max_size=5,
).map(lambda parts: "".join(f"{n}{sep}{rest}" for n, sep, rest in parts))


@given(v3_ish)
def test_v3_like_text_raises_only_eio_error(text: str) -> None:
    try:
        eio.decode_payload_v3(text.encode("utf-8", "surrogatepass"), 16)
    except EioError:
        pass


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("6:4hello1:2", ["4hello", "2"]),
        # "€" is one UTF-16 unit, "😀" two (a surrogate pair): JavaScript's lengths.
        ("3:4€€", ["4€€"]),
        ("3:4😀", ["4😀"]),
        ("6:b4AAE=", [b"\x00\x01"]),
    ],
    ids=["two", "bmp", "astral", "binary"],
)
def test_v3_payload_table(body: str, expected: list[eio.Packet]) -> None:
    assert eio.decode_payload_v3(body.encode(), 16) == expected
    assert eio.encode_payload_v3(expected) == body


@pytest.mark.parametrize(
    "body",
    [
        "", "4", ":4", "0:", "5:4ab", "2:4😀", "1:x", "4:b5AA", "3:b4!", "1:41:",
        "\u0661:4", "\u00b2:4",
    ],
    ids=[
        "empty", "no-length", "no-digits", "zero", "short", "split-pair", "bad-type",
        "binary-not-message", "bad-base64", "trailing", "arabic-digit", "superscript",
    ],
)  # fmt: skip
def test_v3_payload_refused(body: str) -> None:
    with pytest.raises(EioError):
        eio.decode_payload_v3(body.encode(), 16)


def test_v4_payload_table() -> None:
    assert eio.decode_payload_v4(b"4hello\x1e2\x1ebAAE=", 16) == ["4hello", "2", b"\x00\x01"]
    assert eio.encode_payload_v4(["4a", b"\x00\x01"]) == "4a\x1ebAAE="
    for bad in (b"", b"\xff", b"4a\x1e", b"b!!", b"9"):
        with pytest.raises(EioError):
            eio.decode_payload_v4(bad, 16)
    with pytest.raises(EioError, match="too_many_packets"):
        eio.decode_payload_v4(b"\x1e".join([b"2"] * 5), 4)


def test_packet_count_is_bounded_in_v3() -> None:
    with pytest.raises(EioError, match="too_many_packets"):
        eio.decode_payload_v3(b"1:2" * 5, 4)


@pytest.mark.parametrize("protocol", [3, 4])
def test_open_packet(protocol: int) -> None:
    text = eio.open_packet(
        protocol, "A" * 20, upgrades=["websocket"], ping_interval_ms=25000,
        ping_timeout_ms=20000, max_payload=16384,
    )  # fmt: skip
    assert text[0] == "0"
    fields = json.loads(text[1:])
    assert fields["sid"] == "A" * 20
    assert fields["upgrades"] == ["websocket"]
    assert fields["pingInterval"] == 25000
    assert ("maxPayload" in fields) is (protocol == 4)


@pytest.mark.parametrize("worker", [0, 1, 7, 63])
def test_sid_names_its_worker(worker: int) -> None:
    sid = eio.new_sid(worker)
    assert len(sid) == eio.SID_LENGTH
    assert eio.owner_of(sid) == worker


@pytest.mark.parametrize("sid", ["", "short", "!" + "A" * 19, "A" * 21])
def test_sid_of_no_worker(sid: str) -> None:
    assert eio.owner_of(sid) is None


@pytest.mark.parametrize(
    ("query", "allow_eio3", "expected"),
    [
        ({"EIO": "4", "transport": "websocket"}, True, None),
        ({"EIO": "3", "transport": "polling"}, True, None),
        ({"EIO": "3", "transport": "polling"}, False, Refusal.UNSUPPORTED_PROTOCOL_VERSION),
        ({"EIO": "5", "transport": "polling"}, True, Refusal.UNSUPPORTED_PROTOCOL_VERSION),
        ({"EIO": "4", "transport": "flash"}, True, Refusal.UNKNOWN_TRANSPORT),
        ({"EIO": "4"}, True, Refusal.UNKNOWN_TRANSPORT),
        ({"EIO": "4", "transport": "polling", "sid": "x"}, True, Refusal.UNKNOWN_SID),
        ({"EIO": "3", "transport": "polling", "j": "0"}, True, Refusal.BAD_REQUEST),
    ],
    ids=["v4", "v3", "v3-off", "v5", "flash", "no-transport", "bad-sid", "jsonp"],
)
def test_handshake(query: dict[str, str], allow_eio3: bool, expected: Refusal | None) -> None:
    if expected is None:
        handshake = eio.parse_handshake(query, allow_eio3=allow_eio3)
        assert handshake.protocol == int(query["EIO"])
    else:
        with pytest.raises(EioRefused) as caught:
            eio.parse_handshake(query, allow_eio3=allow_eio3)
        assert caught.value.refusal is expected
        assert json.loads(eio.error_body(expected)) == {
            "code": int(expected),
            "message": expected.message,
        }


@given(
    st.integers(3, 4),
    st.text(max_size=24) | st.text(eio.SID_ALPHABET, min_size=20, max_size=20),
    st.lists(st.sampled_from(["websocket", "polling"]), max_size=2),
    st.integers(1, 10**6),
)
def test_the_open_packet_is_the_json_of_its_fields_whatever_the_sid(
    protocol: int, sid: str, upgrades: list[str], interval: int
) -> None:
    # Our ids take a prebuilt template; anything else is encoded in full: the same JSON.
    text = eio.open_packet(
        protocol, sid, upgrades=upgrades, ping_interval_ms=interval,
        ping_timeout_ms=20000, max_payload=16384,
    )  # fmt: skip
    expected = {"sid": sid, "upgrades": upgrades, "pingInterval": interval, "pingTimeout": 20000}
    if protocol == 4:
        expected["maxPayload"] = 16384
    assert text[0] == "0"
    assert json.loads(text[1:]) == expected
