"""payloads: what joinByGameId and POST /publish accept, as tables."""

from __future__ import annotations

import json

import pytest

from pushserver.payloads import PayloadError, game_id_of, parse_publish, parse_shed, room_of


@pytest.mark.parametrize(
    ("payload", "game_id"),
    [
        ({"gameId": "sampleGameId"}, "sampleGameId"),
        ({"gameId": 20250601}, "20250601"),
        ({"gameId": "kbo:2025-06-01.LG_OB"}, "kbo:2025-06-01.LG_OB"),
        ({"gameId": "x" * 128}, "x" * 128),
    ],
    ids=["seed-example", "integer", "punctuation", "longest"],
)
def test_game_ids_accepted(payload, game_id):
    assert game_id_of(payload) == game_id


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (None, "bad_payload"),
        ("123", "bad_payload"),
        ({}, "bad_payload"),
        ({"gameId": None}, "bad_game_id"),
        ({"gameId": True}, "bad_game_id"),
        ({"gameId": 1.5}, "bad_game_id"),
        ({"gameId": ""}, "bad_game_id"),
        ({"gameId": "-starts-with-dash"}, "bad_game_id"),
        ({"gameId": "x" * 129}, "bad_game_id"),
        ({"gameId": "a\nb"}, "bad_game_id"),
        ({"gameId": "게임"}, "bad_game_id"),
    ],
    ids=[
        "none",
        "bare-string",
        "empty",
        "null",
        "bool",
        "float",
        "blank",
        "leading-dash",
        "too-long",
        "newline",
        "non-ascii",
    ],
)
def test_game_ids_refused(payload, code):
    with pytest.raises(PayloadError) as caught:
        game_id_of(payload)
    assert caught.value.code == code
    assert caught.value.message


def test_room_names():
    assert room_of("42") == "game:42"


def test_publish_accepts_any_json_data():
    body = json.dumps({"gameId": 7, "event": "score", "data": {"home": [1, None]}}).encode()
    request = parse_publish(body)
    assert (request.game_id, request.event, request.data, request.room) == (
        "7",
        "score",
        {"home": [1, None]},
        "game:7",
    )


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        (b"\xff\xfe", "bad_json", "not valid JSON"),
        (b"null", "bad_payload", "JSON object"),
        (b'{"gameId":"1","data":1}', "bad_payload", "missing fields: event"),
        (b'{"gameId":"1","event":"e","data":1,"room":"x"}', "bad_payload", "unknown fields: room"),
        (b'{"gameId":"1","event":"","data":1}', "bad_event", "event must be"),
        (b'{"gameId":"1","event":1,"data":1}', "bad_event", "event must be"),
        (b'{"gameId":"1","event":"connect","data":1}', "reserved_event", "reserved"),
        (b'{"gameId":"a/b","event":"e","data":1}', "bad_game_id", "gameId must be"),
    ],
    ids=[
        "not-utf8",
        "null",
        "missing-event",
        "unknown-field",
        "empty-event",
        "numeric-event",
        "reserved-event",
        "slash-in-game-id",
    ],
)
def test_publish_refused(body, code, words):
    with pytest.raises(PayloadError) as caught:
        parse_publish(body)
    assert caught.value.code == code
    assert words in caught.value.message


def test_shed_requests():
    assert parse_shed(b'{"count": 500}').count == 500
    assert parse_shed(b'{"count": 500}').interval_ms is None
    assert parse_shed(b'{"count": 1, "intervalMs": 2.5}').interval_ms == 2.5


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{}", "bad_count"),
        (b'{"count": 0}', "bad_count"),
        (b'{"count": 1.5}', "bad_count"),
        (b'{"count": true}', "bad_count"),
        (b'{"count": 1, "intervalMs": -1}', "bad_interval"),
        (b'{"count": 1, "intervalMs": "5"}', "bad_interval"),
        (b'{"count": 1, "pods": 2}', "bad_payload"),
        (b"[]", "bad_payload"),
        (b"{", "bad_json"),
    ],
    ids=[
        "missing",
        "zero",
        "fraction",
        "bool",
        "negative-interval",
        "string-interval",
        "unknown-field",
        "not-object",
        "bad-json",
    ],
)
def test_bad_shed_requests(body, code):
    with pytest.raises(PayloadError) as caught:
        parse_shed(body)
    assert caught.value.code == code
