"""The load model, free of locust and gevent so that it can be unit-tested and shared by every process.

* Offered admission rate: a base rate with periodic bursts, averaging ``rate`` attempts per second.
* Popularity: outages follow a Zipf-like law, so a few are saturated (refusals, downgrades) while most
  are comfortable; during a burst half of the meetings go to one "all hands" outage.
* A meeting: a group of 1-6 people joining one conference at once, mixed video/audio, with and
  without downgrade, holding their ports for part of the cycle, then leaving together.
* The shared pool of outages and conferences that the master sets up and the hotline changes.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from dataclasses import dataclass, field
from typing import Any

# Stats names (locust "request_type" / "name") shared by the locustfile, the runner and the docs.
ADMISSION_NAME = "POST /v1/conferences/[id]/participants"
LEAVE_NAME = "DELETE /v1/participants/[id]"
MEDIA_TYPE = "MEDIA"
TTFF_NAME = "time to first frame"
ADMIT_TYPE = "ADMIT"
REFUSE_TYPE = "REFUSE"
SLO_TYPE = "SLO"
SLO_ADMISSION_NAME = "admission, after warm-up"
EXPECTED_REFUSALS = {(409, "capacity_exhausted"), (410, "outage_ended")}
RATE_LIMITED = (429, "rate_limited")   # expected only when the brokers keep their admission rate limit

# Conferences of every load outage: mixed importance (1 = most important), over-subscribing the outage,
# so that preemption happens; the reserves (one on the least important conference too) must hold.
#   (title, priority, reserve or None)
LOAD_CONFERENCES: tuple[tuple[str, int, dict[str, int] | None], ...] = (
    ("Board meeting", 1, {"audio": 1, "video": 2}),
    ("Daily stand-up", 3, None),
    ("Customer support", 5, {"audio": 1, "video": 1}),
)
# The hotline's outages: a crisis room that comes first and a team call that yields to it.
CHURN_CONFERENCES: tuple[tuple[str, int, dict[str, int] | None], ...] = (
    ("Crisis room", 1, {"audio": 2, "video": 2}),
    ("Team call", 5, None),
)
# Media probes join a conference of their own, most important and with a video reserve of one port
# per peer: the load never takes the probes' ports (they are not what the crowd fights over).
MEDIA_PRIORITY = 1


def admission_outcome(status: int, code: str | None, requested: str | None = None,
                      granted: str | None = None, preempted: bool = False) -> list[str]:
    """The tally keys of one admission answer, as the audit trail should record it (loadtests.audit):
    ``admitted`` (+ ``downgraded``, ``preempting``), ``refused:<code>``, ``other:<status>`` or
    ``unknown`` (no answer, or a 5xx: the ledger may have decided either way)."""
    if status == 201:
        out = ["admitted"]
        if granted and requested and granted != requested:
            out.append("downgraded")
        if preempted:
            out.append("preempting")
        return out
    if status == 409 and code == "capacity_exhausted":
        return ["refused:capacity_exhausted"]
    if status == 410:
        return ["refused:outage_ended"]
    if status == 429 and code == "rate_limited":
        return ["refused:rate_limited"]
    if status == 0 or status >= 500:
        return ["unknown"]   # no answer, or the broker could not tell (503 store_unavailable: Redis timed out)
    return [f"other:{status}"]


@dataclass(frozen=True)
class LoadShape:
    rate: float = 300.0          # admission attempts offered per second, averaged over a burst period
    participants: int = 200      # participant users sharing that rate
    burst_period: float = 15.0   # seconds between burst starts
    burst_len: float = 3.0       # seconds a burst lasts
    burst_factor: float = 2.5    # rate during a burst / base rate

    @property
    def base_rate(self) -> float:
        quiet = self.burst_period - self.burst_len
        return self.rate * self.burst_period / (quiet + self.burst_len * self.burst_factor)

    def in_burst(self, t: float) -> bool:
        return self.burst_len > 0 and (t % self.burst_period) < self.burst_len

    def burst_index(self, t: float) -> int:
        return int(t // self.burst_period)

    def total_rate(self, t: float) -> float:
        return self.base_rate * (self.burst_factor if self.in_burst(t) else 1.0)

    def per_user_rate(self, t: float) -> float:
        return self.total_rate(t) / max(1, self.participants)


GROUP_SIZES = (1, 2, 3, 4, 5, 6)
GROUP_WEIGHTS = (0.25, 0.25, 0.2, 0.15, 0.1, 0.05)
MEAN_GROUP = sum(s * w for s, w in zip(GROUP_SIZES, GROUP_WEIGHTS)) / sum(GROUP_WEIGHTS)


@dataclass(frozen=True)
class JoinSpec:
    kind: str         # requested kind
    downgrade: bool


def draw_group(rng: random.Random) -> list[JoinSpec]:
    size = rng.choices(GROUP_SIZES, GROUP_WEIGHTS)[0]
    out = []
    for _ in range(size):
        if rng.random() < 0.65:
            out.append(JoinSpec("video", rng.random() < 0.7))
        else:
            out.append(JoinSpec("audio", rng.random() < 0.5))
    return out


def cycle_seconds(group_size: int, per_user_rate: float, rng: random.Random) -> float:
    """How long one meeting cycle lasts so that this user offers ``per_user_rate`` attempts/s."""
    return group_size / max(per_user_rate, 1e-6) * rng.uniform(0.8, 1.2)


def zipf_weights(n: int, s: float = 0.6) -> list[float]:
    return [1.0 / math.pow(i + 1, s) for i in range(n)]


@dataclass
class Conference:
    id: str
    outage: str
    token: str
    title: str = ""
    media: bool = False
    priority: int = 5

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "outage": self.outage, "token": self.token, "title": self.title,
                "media": self.media, "priority": self.priority}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Conference:
        return cls(d["id"], d["outage"], d["token"], d.get("title", ""), bool(d.get("media")),
                   int(d.get("priority", 5)))


@dataclass
class Pool:
    """Outages and conferences known to the load generators; updated by messages from the hotline."""

    stable: list[str] = field(default_factory=list)          # outages that live the whole run, by rank
    churn: list[str] = field(default_factory=list)           # hotline outages currently active
    confs: dict[str, list[Conference]] = field(default_factory=dict)  # outage -> its load conferences
    media: list[Conference] = field(default_factory=list)    # conferences kept for media probes
    ended: dict[str, list[Conference]] = field(default_factory=dict)  # restored outage -> conferences
    churn_contracts: list[dict[str, str]] = field(default_factory=list)
    epoch: float = 0.0      # wall-clock start of the run: every generator derives the burst phase from it
    ready: bool = False

    # --- messages ------------------------------------------------------------------------------
    def apply(self, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        if op == "init":
            self.stable = list(msg["stable"])
            self.churn = list(msg.get("churn", []))
            self.confs = {o: [Conference.from_json(c) for c in cs] for o, cs in msg["confs"].items()}
            self.media = [Conference.from_json(c) for c in msg["media"]]
            self.ended = {o: [Conference.from_json(c) for c in cs] for o, cs in msg.get("ended", {}).items()}
            self.churn_contracts = list(msg.get("churn_contracts", []))
            self.epoch = float(msg.get("epoch", self.epoch))
            self.ready = True
        elif op == "add":
            oid = msg["outage"]
            self.confs[oid] = [Conference.from_json(c) for c in msg["confs"]]
            if oid not in self.churn and oid not in self.stable:
                self.churn.append(oid)
        elif op == "end":
            oid = msg["outage"]
            if oid in self.churn:
                self.churn.remove(oid)
            if oid in self.stable:
                self.stable.remove(oid)
            self.ended[oid] = self.confs.pop(oid, [])
            # keep a bounded memory of ended outages
            while len(self.ended) > 50:
                self.ended.pop(next(iter(self.ended)))

    def init_message(self) -> dict[str, Any]:
        return {
            "op": "init",
            "stable": self.stable,
            "confs": {o: [c.to_json() for c in cs] for o, cs in self.confs.items()},
            "media": [c.to_json() for c in self.media],
            "churn": self.churn,
            "ended": {o: [c.to_json() for c in cs] for o, cs in self.ended.items()},
            "churn_contracts": self.churn_contracts,
            "epoch": self.epoch,
        }

    # --- picking -------------------------------------------------------------------------------
    def pick_outage(self, rng: random.Random, shape: LoadShape | None = None, t: float = 0.0) -> str | None:
        active = self.stable + self.churn
        if not active:
            return None
        if shape is not None and self.stable and shape.in_burst(t) and rng.random() < 0.5:
            return self.stable[shape.burst_index(t) % len(self.stable)]
        return rng.choices(active, zipf_weights(len(active)))[0]

    def pick_conference(self, rng: random.Random, shape: LoadShape | None = None,
                        t: float = 0.0) -> Conference | None:
        oid = self.pick_outage(rng, shape, t)
        if oid is None or not self.confs.get(oid):
            return None
        return rng.choice(self.confs[oid])

    def pick_ended(self, rng: random.Random) -> Conference | None:
        choices = [c for cs in self.ended.values() for c in cs]
        return rng.choice(choices) if choices else None


# --- request bodies --------------------------------------------------------------------------------
BRANDS = [("Polycom", "RMX 2000"), ("Cisco", "TelePresence Server 7010"), ("Avaya", "Scopia Elite 6000"),
          ("Lifesize", "UVC MCU")]


def contract_body(number: str, serial: str, i: int, today: dt.date | None = None) -> dict[str, Any]:
    today = today or dt.date.today()
    brand, model = BRANDS[i % len(BRANDS)]
    return {
        "number": number,
        "client": {"company": f"Loadtest client {i}", "city": "Aix-en-Provence"},
        "start_date": (today - dt.timedelta(days=365)).isoformat(),
        "term_years": 3,
        "status": "active",
        "equipment": [{
            "serial": serial, "brand": brand, "model": model, "kind": "video_bridge",
            "warranty_until": (today + dt.timedelta(days=730)).isoformat(),
        }],
    }


PRIORITIES = ("urgent", "medium", "low")


def declare_body(contract: str, serial: str, rng: random.Random) -> dict[str, Any]:
    return {
        "contract": contract,
        "serial": serial,
        "ticket": {
            "priority": rng.choice(PRIORITIES),
            "site": rng.choice(["Siège, Aix", "Agence Lyon", "Datacenter Marseille", "Usine Rousset"]),
            "contact": "J. Martin +33 6 00 00 00 00",
            "description": "MCU unreachable after power cut (load test)",
        },
    }


def window_end(now: dt.datetime | None = None, days: float = 3.0) -> str:
    now = now or dt.datetime.now(dt.UTC)
    return (now + dt.timedelta(days=days)).isoformat(timespec="seconds")
