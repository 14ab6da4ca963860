"""websocket: the RFC 6455 codec, fed client frames built here byte by byte."""

from __future__ import annotations

import struct

import pytest

from pushserver import websocket as ws


def client_frame(
    opcode: int, payload: bytes, *, fin: bool = True, mask: bytes = b"\x0f\xf0\x55\xaa"
) -> bytes:
    """A frame as a client sends it: masked."""
    first = (0x80 if fin else 0) | opcode
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", first, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, length)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


def test_the_rfc_example_accept_key():
    # RFC 6455 §1.3.
    assert ws.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536], ids=str)
def test_server_frames_use_the_shortest_length(size):
    encoded = ws.frame(ws.TEXT, b"x" * size)
    header = len(encoded) - size
    assert header == (2 if size < 126 else 4 if size < 65536 else 10)
    assert encoded[0] == 0x81 and not encoded[1] & 0x80, "final, unmasked"


def test_messages_split_anywhere_are_reassembled():
    stream = client_frame(ws.TEXT, '42["골"]'.encode()) + client_frame(ws.PING, b"hi")
    reader = ws.FrameReader(max_size=1000)
    messages = []
    for byte in stream:
        messages += reader.feed(bytes([byte]))
    assert [(m.opcode, m.data) for m in messages] == [(ws.TEXT, '42["골"]'), (ws.PING, b"hi")]
    assert messages[0].size == len('42["골"]'.encode())


def test_fragments_with_a_control_frame_between():
    reader = ws.FrameReader(max_size=1000)
    stream = (
        client_frame(ws.TEXT, b"42[", fin=False)
        + client_frame(ws.PING, b"")
        + client_frame(ws.CONTINUATION, b'"a"', fin=False)
        + client_frame(ws.CONTINUATION, b"]")
    )
    assert [(m.opcode, m.data) for m in reader.feed(stream)] == [
        (ws.PING, b""),
        (ws.TEXT, '42["a"]'),
    ]


def test_a_huge_frame_is_refused_from_its_header_alone():
    reader = ws.FrameReader(max_size=1024)
    header = struct.pack("!BBQ", 0x81, 0x80 | 127, 10**9)
    with pytest.raises(ws.ProtocolError) as caught:
        reader.feed(header)
    assert caught.value.code == ws.TOO_BIG


@pytest.mark.parametrize(
    ("stream", "code"),
    [
        (bytes([0x81, 0x02]) + b"hi", ws.PROTOCOL_ERROR),
        (bytes([0xC1, 0x80]) + b"\0\0\0\0", ws.PROTOCOL_ERROR),
        (client_frame(0x3, b"x"), ws.PROTOCOL_ERROR),
        (client_frame(ws.CONTINUATION, b"x"), ws.PROTOCOL_ERROR),
        (client_frame(ws.TEXT, b"a", fin=False) + client_frame(ws.TEXT, b"b"), ws.PROTOCOL_ERROR),
        (client_frame(ws.PING, b"x", fin=False), ws.PROTOCOL_ERROR),
        (client_frame(ws.TEXT, b"\xff\xfe"), ws.INVALID_DATA),
        (
            client_frame(ws.TEXT, b"a" * 600, fin=False)
            + client_frame(ws.CONTINUATION, b"a" * 600),
            ws.TOO_BIG,
        ),
    ],
    ids=[
        "unmasked",
        "reserved-bits",
        "unknown-opcode",
        "stray-continuation",
        "message-inside-fragments",
        "fragmented-control",
        "bad-utf8",
        "fragments-over-limit",
    ],
)
def test_protocol_violations(stream, code):
    with pytest.raises(ws.ProtocolError) as caught:
        ws.FrameReader(max_size=1000).feed(stream)
    assert caught.value.code == code


def test_close_frames():
    assert ws.close_code_of(ws.close_frame(ws.GOING_AWAY)[2:]) == ws.GOING_AWAY
    assert ws.close_code_of(b"") == ws.NORMAL
