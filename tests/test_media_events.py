"""media.events: which peer connections each broker event closes; anything else closes nothing."""

from __future__ import annotations

import json

import pytest

from media.events import Closing, closing_for

pytestmark = pytest.mark.media


def test_each_event_closes_its_peer_connections() -> None:
    left = {"type": "participant_left", "outage": "o-1", "participant": "p2", "participants": ["p1"]}
    assert closing_for(json.dumps(left)) == Closing("participant_left", ["p1", "p2"])
    conference = {"type": "conference_closed", "outage": "o-1", "conference": "c-1", "participants": ["p1", 7]}
    assert closing_for(json.dumps(conference)) == Closing("conference_closed", ["p1"], conference="c-1")
    ended = {"type": "outage_ended", "outage": "o-1", "state": "restored", "participants": []}
    assert closing_for(json.dumps(ended)) == Closing("outage_restored", [], outage="o-1")


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[1, 2]",
        json.dumps({"type": "participant_left"}),  # nobody named
        json.dumps({"type": "outage_opened", "outage": "o-1"}),
    ],
)
def test_other_messages_close_nothing(raw: str) -> None:
    assert closing_for(raw) is None
