"""The outages' audit trails (``quotas.keys.audit``: one Redis stream per outage, appended by the very
script that decides) read back by the load test, for two checks no client can make on its own:

* **preemption order** (issue 11): replaying an outage's trail gives, at every ``preempted`` event, the
  ports each conference held just before. A preemption must take a port of a *strictly less important*
  conference (higher ``priority`` number) that holds *more than its reserve* of that kind, the least
  important such conference first, and its most recently admitted participant of that kind;
* **accounting** (issue 17): the trail must account for every admission and refusal that locust counted
  (``scenario.admission_outcome`` on each answer): admitted (downgraded, preempting) and refused by code.

``TrailReader`` follows the streams incrementally (XRANGE after the last id read, a page at a time) so a
long run loses nothing to the stream's ``MAXLEN ~`` trimming; ``Replay`` is the pure state machine.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis

from quotas import keys

KINDS = ("audio", "video")
PAGE = 2000
DEFAULT_PRIORITY = 5
# Events that end every participant of the outage at once (close_outage.lua: its reason).
OUTAGE_ENDS = {"restored", "planned_end"}
# The refusal codes of the trail, as the API answers them (410 covers a closed conference too).
REFUSAL_CODES = {"capacity_exhausted": "capacity_exhausted", "outage_ended": "outage_ended",
                 "conference_closed": "outage_ended", "rate_limited": "rate_limited"}


@dataclass
class Finding:
    """A breach found in one outage's trail (the watcher turns it into a Violation)."""

    check: str
    outage: str
    kind: str | None
    detail: str


@dataclass
class Replay:
    """One outage's trail, replayed event by event: who holds which port, and the outcome counts."""

    outage: str
    contract: str | None = None
    complete: bool | None = None       # None: nothing read yet; False: the trail does not start at declared
    priority: dict[str, int] = field(default_factory=dict)
    reserve: dict[tuple[str, str], int] = field(default_factory=dict)
    holders: dict[str, tuple[str, str, int]] = field(default_factory=dict)   # pid -> (conference, kind, order)
    counts: Counter[str] = field(default_factory=Counter)
    unknown_releases: int = 0          # a release of a participant the trail never admitted
    repairs: int = 0                   # ledger_repaired events: the audit changed the ledger by itself
    preemptions: int = 0
    events: int = 0
    _order: int = 0

    def held(self, conf: str, kind: str) -> int:
        return sum(1 for c, k, _ in self.holders.values() if c == conf and k == kind)

    def prio(self, conf: str) -> int:
        return self.priority.get(conf, DEFAULT_PRIORITY)

    def _hold(self, pid: str, conf: str, kind: str) -> None:
        self._order += 1
        self.holders[pid] = (conf, kind, self._order)

    def _release(self, pid: str) -> None:
        if self.holders.pop(pid, None) is None:
            self.unknown_releases += 1

    def feed(self, f: dict[str, str]) -> list[Finding]:
        """One event (its fields); returns what it breaks."""
        etype = f.get("type", "")
        self.events += 1
        if self.complete is None:
            self.complete = etype == "declared"
        if etype == "declared":
            self.contract = f.get("contract")
        elif etype in ("conference_created", "conference_changed"):
            conf = f.get("conference", "")
            try:
                self.priority[conf] = int(f.get("priority") or DEFAULT_PRIORITY)
            except ValueError:
                self.priority[conf] = DEFAULT_PRIORITY
            for kind in KINDS:
                self.reserve[(conf, kind)] = int(f.get(f"reserve_{kind}") or 0)
        elif etype in ("admitted", "downgraded"):
            self.counts["admitted"] += 1
            if etype == "downgraded":
                self.counts["downgraded"] += 1
            if f.get("preempted"):
                self.counts["preempting"] += 1
            self._hold(f.get("participant", ""), f.get("conference", ""), f.get("kind", ""))
        elif etype == "readmitted":
            self._hold(f.get("participant", ""), f.get("conference", ""), f.get("kind", ""))
        elif etype == "preempted":
            self.preemptions += 1
            found = self.check_preemption(f)
            self._release(f.get("participant", ""))
            return found
        elif etype in ("left", "lease_expired"):
            self._release(f.get("participant", ""))
        elif etype == "refused":
            code = REFUSAL_CODES.get(f.get("code", ""), f.get("code", ""))
            self.counts[f"refused:{code}"] += 1
        elif etype == "conference_closed":
            conf = f.get("conference", "")
            for pid in [p for p, (c, _, _) in self.holders.items() if c == conf]:
                del self.holders[pid]
        elif etype in OUTAGE_ENDS:
            self.holders.clear()
        elif etype == "ledger_repaired":
            self.repairs += 1
        return []

    def check_preemption(self, f: dict[str, str]) -> list[Finding]:
        """The rule of API.md (Conferences) against the holdings just before this preemption."""
        pid, victim, kind = f.get("participant", ""), f.get("conference", ""), f.get("kind", "")
        by = f.get("by_conference", "")
        pv, pb = self.prio(victim), self.prio(by)
        out: list[Finding] = []

        def bad(what: str) -> None:
            out.append(Finding("preemption-order", self.outage, kind,
                               f"{what} (participant {pid} of conference {victim}, priority {pv}, preempted for "
                               f"conference {by}, priority {pb})"))

        if pv <= pb:
            bad("an equally or more important conference was preempted")
        held, reserve = self.held(victim, kind), self.reserve.get((victim, kind), 0)
        if held <= reserve:
            bad(f"its reserve was not kept: it held {held} {kind} port(s), reserve {reserve}")
        lesser = sorted(c for c in self.priority if self.prio(c) > pv
                        and self.held(c, kind) > self.reserve.get((c, kind), 0))
        if lesser:
            bad(f"a less important conference ({lesser[0]}, priority {self.prio(lesser[0])}) held more than "
                f"its reserve of {kind}: the least important conference comes first")
        mine = [(order, p) for p, (c, k, order) in self.holders.items() if c == victim and k == kind]
        if pid in self.holders and mine and max(mine)[1] != pid:
            bad(f"not its most recently admitted participant ({max(mine)[1]} came later)")
        return out


def _text(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


class TrailReader:
    """Follows the audit streams of the outages it is told about (``follow``); ``poll`` reads what is new."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self.replays: dict[str, Replay] = {}
        self.last: dict[str, str] = {}
        self.findings: list[Finding] = []
        self.read_errors = 0

    def follow(self, outages: Any) -> None:
        for oid in outages:
            if oid not in self.replays:
                self.replays[oid] = Replay(oid)
                self.last[oid] = "-"

    def poll(self) -> list[Finding]:
        new: list[Finding] = []
        for oid, replay in list(self.replays.items()):
            while True:
                start = self.last[oid]
                page = self.redis.xrange(keys.audit(oid), min=start if start == "-" else f"({start}", count=PAGE)
                page = page or []
                for raw_id, fields in page:
                    f = {_text(k): _text(v) for k, v in (fields or {}).items()}
                    new += replay.feed(f)
                    self.last[oid] = _text(raw_id)
                if len(page) < PAGE:
                    break
        self.findings += new
        return new

    def of_run(self, outages: Any = (), contract_prefix: str | None = None) -> list[Replay]:
        """The replays of this run: the outages named, and those declared for a contract of this run."""
        named = set(outages)
        return [r for oid, r in sorted(self.replays.items())
                if oid in named or (contract_prefix and (r.contract or "").startswith(contract_prefix))]


# --- accounting: locust's counts against the trail ----------------------------------------------------
ACCOUNTED = ("admitted", "downgraded", "preempting", "refused:capacity_exhausted", "refused:outage_ended",
             "refused:rate_limited")
LABELS = {"admitted": "admissions", "downgraded": "downgraded", "preempting": "preempting",
          "refused:capacity_exhausted": "409 capacity_exhausted", "refused:outage_ended": "410 outage_ended",
          "refused:rate_limited": "429 rate_limited"}


@dataclass
class Accounting:
    ok: bool
    detail: str
    locust: dict[str, int]
    trail: dict[str, int]


def account(tally: dict[str, int], replays: list[Replay]) -> Accounting:
    """Does the trail of the run's outages hold exactly what locust counted? Answers that never came
    (``unknown``: timeouts, resets) may have been decided either way: the difference may not exceed them."""
    trail: Counter[str] = Counter()
    for r in replays:
        trail.update(r.counts)
    loc = {k: int(tally.get(k, 0)) for k in ACCOUNTED}
    got = {k: int(trail.get(k, 0)) for k in ACCOUNTED}
    unknown = int(tally.get("unknown", 0))
    incomplete = [r.outage for r in replays if r.complete is False]
    diffs = {k: got[k] - loc[k] for k in ACCOUNTED if got[k] != loc[k]}
    gap = sum(abs(d) for d in diffs.values())
    counted = ", ".join(f"{LABELS[k]} {loc[k]}" for k in ACCOUNTED if loc[k] or got[k])
    where = f"the audit streams of {len(replays)} outage(s)"
    if not replays:
        return Accounting(False, "no audit stream of this run's outages could be read", loc, got)
    if incomplete:
        return Accounting(False, f"the trail of {len(incomplete)} outage(s) does not start at their declaration "
                                 f"(trimmed or lost: {', '.join(incomplete[:3])}); locust counted {counted}",
                          loc, got)
    if not diffs:
        return Accounting(True, f"locust's {counted} are each in {where}, no more, no less", loc, got)
    text = "; ".join(f"{LABELS[k]}: locust {loc[k]}, trail {got[k]}" for k in diffs)
    if gap <= unknown:
        return Accounting(True, f"{text}: within the {unknown} admission request(s) that got no answer "
                                f"(the broker may have decided them); otherwise locust's {counted} are in {where}",
                          loc, got)
    return Accounting(False, f"{text} ({unknown} request(s) without an answer); {where}", loc, got)
