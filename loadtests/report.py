"""SLO verdicts, the printed summary and the PNG plot of a load-test run."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests.scenario import (
    ADMISSION_NAME,
    ADMIT_TYPE,
    MEDIA_TYPE,
    REFUSE_TYPE,
    SLO_ADMISSION_NAME,
    SLO_TYPE,
    TTFF_NAME,
)

CUSTOM_TYPES = {ADMIT_TYPE, REFUSE_TYPE, MEDIA_TYPE, SLO_TYPE}


@dataclass
class Slo:
    admission_p99_ms: float = 25.0
    ttff_p95_ms: float = 2000.0
    require_media: bool = True


@dataclass
class Verdict:
    name: str
    ok: bool
    detail: str


def _entry(summary: dict[str, Any], rtype: str, name: str) -> dict[str, Any] | None:
    return next((e for e in summary.get("entries", []) if e["type"] == rtype and e["name"] == name), None)


def evaluate(summary: dict[str, Any], violations: list[Any], slo: Slo, media_users: int,
             watcher_info: dict[str, Any] | None = None, trail: dict[str, Any] | None = None,
             accounting: Any = None) -> list[Verdict]:
    """The run's verdicts; ``trail`` (CapWatcher.trail_summary) and ``accounting`` (audit.Accounting) add
    the audit-trail checks: preemption order and locust's counts against the trail."""
    out: list[Verdict] = []
    if summary.get("setup_error"):
        out.append(Verdict("setup", False, f"the scene could not be set: {summary['setup_error']}"))
    adm = _entry(summary, "POST", ADMISSION_NAME)
    steady = _entry(summary, SLO_TYPE, SLO_ADMISSION_NAME)
    if not adm or not adm["requests"]:
        out.append(Verdict("admission latency", False, "no admission was attempted"))
    elif steady and steady["requests"]:
        p99 = steady["p99_ms"]
        out.append(Verdict("admission latency", p99 <= slo.admission_p99_ms,
                           f"p99 {p99:g} ms (limit {slo.admission_p99_ms:g} ms) over {steady['requests']} attempts "
                           f"after the warm-up (whole run, ramp-up included: p99 {adm['p99_ms']:g} ms over "
                           f"{adm['requests']})"))
    else:
        p99 = adm["p99_ms"]
        out.append(Verdict("admission latency", p99 <= slo.admission_p99_ms,
                           f"p99 {p99:g} ms (limit {slo.admission_p99_ms:g} ms) over {adm['requests']} attempts"))
    if media_users > 0 and slo.require_media:
        tt = _entry(summary, MEDIA_TYPE, TTFF_NAME)
        if not tt or not tt["requests"]:
            out.append(Verdict("time to first media frame", False, "no media probe completed"))
        else:
            p95 = tt["p95_ms"]
            ok = p95 <= slo.ttff_p95_ms and tt["failures"] == 0
            extra = f", {tt['failures']} probe(s) without media" if tt["failures"] else ""
            out.append(Verdict("time to first media frame", ok,
                               f"p95 {p95:g} ms (limit {slo.ttff_p95_ms:g} ms) over {tt['requests']} peers{extra}"))
    fails = [e for e in summary.get("errors", [])]
    n_fail = sum(e["occurrences"] for e in fails)
    if n_fail:
        top = "; ".join(f"{e['type']} {e['name']}: {e['error']} x{e['occurrences']}"
                        for e in sorted(fails, key=lambda e: -e["occurrences"])[:5])
        out.append(Verdict("errors", False, f"{n_fail} unexpected responses/errors (only 409 capacity_exhausted, "
                                            f"410 outage_ended and, with the rate limit on, 429 rate_limited are "
                                            f"expected): {top}"))
    else:
        out.append(Verdict("errors", True, "none besides the expected refusals"))
    by_check: dict[str, list[Any]] = {}
    for v in violations:
        by_check.setdefault(v.check, []).append(v)
    labels = {"cap": "cap violation", "metrics-cap": "cap violation seen in /metrics",
              "negative": "negative ports", "metrics-mismatch": "/metrics disagrees with the ledger",
              "leak": "port leak", "metrics-unreachable": "/metrics unreachable",
              "preemption-order": "preemption order"}
    for check, vs in by_check.items():
        detail = "; ".join(str(v) for v in vs[:5]) + (f"; and {len(vs) - 5} more" if len(vs) > 5 else "")
        out.append(Verdict(labels.get(check, check), False, detail))
    if trail is not None and "preemption-order" not in by_check:
        n = trail.get("preemptions", 0)
        out.append(Verdict("preemption order", True,
                           (f"{n} preemption(s) in the audit trails of {trail.get('outages_with_preemptions', 0)} of "
                            f"{trail.get('outages', 0)} outages, each of a strictly less important conference above "
                            f"its reserve, the least important one first, its latest participant")
                           if n else f"no preemption in the audit trails of {trail.get('outages', 0)} outages"))
    if accounting is not None:
        out.append(Verdict("audit trail", bool(accounting.ok), accounting.detail))
    if not set(by_check) - {"preemption-order"}:
        wi = watcher_info or {}
        out.append(Verdict("caps and leaks", True,
                           f"caps held in {wi.get('samples', '?')} ledger samples and {wi.get('scrapes', '?')} "
                           f"/metrics scrapes; none negative; /metrics agreed with the quiet ledger; no port "
                           f"held after the users left"))
    return out


def render(summary: dict[str, Any], verdicts: list[Verdict], peaks: dict[str, Any], server: dict[str, Any],
           header: str, duration: float) -> str:
    lines = [header]
    entries = summary.get("entries", [])
    http = [e for e in entries if e["type"] not in CUSTOM_TYPES]
    custom = [e for e in entries if e["type"] in CUSTOM_TYPES]
    total_http = sum(e["requests"] for e in http)
    adm = _entry(summary, "POST", ADMISSION_NAME)
    admitted = sum(e["requests"] for e in entries if e["type"] == ADMIT_TYPE)
    refused = sum(e["requests"] for e in entries if e["type"] == REFUSE_TYPE)
    if adm:
        span = max(1e-9, duration)
        lines.append(f"Throughput: {total_http / span:.1f} HTTP req/s; admission attempts {adm['requests'] / span:.1f}/s "
                     f"(admitted {admitted / span:.1f}/s, refused {refused / span:.1f}/s)")
    lines.append("")
    lines.append(f"{'type':<8} {'name':<44} {'count':>7} {'fail':>5} {'req/s':>7} {'p50':>6} {'p95':>6} "
                 f"{'p99':>6} {'max':>7}  (ms)")

    def row(e: dict[str, Any]) -> str:
        def f(x: Any) -> str:
            return "-" if x is None else f"{x:g}" if isinstance(x, (int, float)) else str(x)
        return (f"{e['type']:<8} {e['name'][:44]:<44} {e['requests']:>7} {e['failures']:>5} "
                f"{e['requests'] / max(duration, 1e-9):>7.1f} {f(e['p50_ms']):>6} {f(e['p95_ms']):>6} "
                f"{f(e['p99_ms']):>6} {f(round(e['max_ms'] or 0)):>7}")

    for e in sorted(http, key=lambda e: -e["requests"]) + sorted(custom, key=lambda e: (e["type"], e["name"])):
        lines.append(row(e))
    refs = [e for e in custom if e["type"] == REFUSE_TYPE]
    if refs:
        lines.append("")
        lines.append("Refusals by code: " + ", ".join(f"{e['name']} {e['requests']}" for e in refs))
    if server:
        lines.append(f"Server-side admission latency (/metrics histogram): p50 {server.get('p50')} ms, "
                     f"p95 {server.get('p95')} ms, p99 {server.get('p99')} ms over {server.get('count', 0):.0f}")
    if peaks:
        parts = []
        for kind in ("video", "audio"):
            if kind in peaks:
                p = peaks[kind]
                parts.append(f"{kind} {p['peak']}/{p['cap']} ({p['outages_at_cap']} of {p['outages']} outages "
                             f"reached their cap)")
        if "total" in peaks:
            t = peaks["total"]
            parts.append(f"all ports {t['peak']}/{t['cap']} across {t['outages']} outages "
                         f"(max {t['max_outages']} active at once)")
        lines.append("Peak ports in use vs caps: " + "; ".join(parts))
    lines.append("")
    lines.append("SLOs and checks:")
    for v in verdicts:
        lines.append(f"  {'PASS' if v.ok else 'FAIL'}  {v.name}: {v.detail}")
    return "\n".join(lines)


# --- plot -------------------------------------------------------------------------------------------
def _history(csv_path: Path, rtype: str, name: str) -> list[dict[str, Any]]:
    if not csv_path.exists():
        return []
    rows = []
    with csv_path.open() as f:
        for r in csv.DictReader(f):
            if r.get("Type") == rtype and r.get("Name") == name:
                def num(k: str, r: dict[str, str] = r) -> float:
                    try:
                        return float(r.get(k, "nan"))
                    except ValueError:
                        return math.nan
                rows.append({"t": num("Timestamp"), "rps": num("Requests/s"), "p50": num("50%"),
                             "p99": num("99%")})
    return rows


def plot(path: Path, watcher: Any, history_csv: Path, slo: Slo, t0: float | None = None,
         warmup: tuple[float, float] | None = None, title: str = "") -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:  # noqa: BLE001
        return False
    tl = watcher.timeline
    if not tl:
        return False
    t0 = t0 or tl[0]["t"]
    fig, axes = plt.subplots(3, 1, figsize=(11, 9.5), sharex=True,
                             gridspec_kw={"height_ratios": [1.2, 0.9, 1.1]})
    ax = axes[0]
    ts = [r["t"] - t0 for r in tl]
    for kind, color in (("video", "tab:blue"), ("audio", "tab:green")):
        ax.plot(ts, [r[f"use_{kind}"] for r in tl], color=color, lw=1.2, label=f"{kind} ports in use")
        ax.plot(ts, [r[f"cap_{kind}"] for r in tl], color=color, lw=1.0, ls="--", label=f"{kind} capacity")
    ax.set_ylabel("ports (all outages)")
    ax.set_title((title + "\n" if title else "") + "Ports in use vs caps (ledger, sampled from Redis by the watcher)",
                 fontsize=10)
    ax.legend(loc="upper left", fontsize=8, ncol=2)
    ax.grid(alpha=0.3)

    ax = axes[1]
    ax.plot(ts, [r["max_ratio"] for r in tl], color="tab:red", lw=1.0, label="hottest outage: in use / cap")
    ax.axhline(1.0, color="k", ls="--", lw=0.8, label="cap")
    ax2 = ax.twinx()
    ax2.plot(ts, [r["full_video"] for r in tl], color="tab:blue", lw=0.8, alpha=0.6, label="outages with video full")
    ax2.plot(ts, [r["full_audio"] for r in tl], color="tab:green", lw=0.8, alpha=0.6, label="outages with audio full")
    ax2.set_ylabel("outages at cap")
    ax.set_ylabel("in use / cap")
    ax.set_ylim(0, max(1.3, max(r["max_ratio"] for r in tl) * 1.1))
    ax.legend(loc="upper left", fontsize=8)
    ax2.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)

    ax = axes[2]
    hist = _history(history_csv, "POST", ADMISSION_NAME)
    if hist:
        hs = [h["t"] - t0 for h in hist]
        ax.plot(hs, [h["p50"] for h in hist], color="tab:gray", lw=1.0, label="client p50 (3 s window)")
        ax.plot(hs, [h["p99"] for h in hist], color="tab:purple", lw=1.2, label="client p99 (3 s window)")
    srv = _server_series(watcher, window=5.0)
    if srv:
        ax.plot([s[0] - t0 for s in srv], [s[1] for s in srv], color="tab:orange", lw=1.0,
                label="server p99 (/metrics, 5 s window)")
    ax.axhline(slo.admission_p99_ms, color="r", ls="--", lw=0.8, label=f"SLO p99 {slo.admission_p99_ms:g} ms")
    ax.set_ylabel("admission latency (ms, log)")
    ax.set_yscale("log")
    ax.set_ylim(0.5, None)
    ax.set_xlabel("seconds since start")
    if warmup:
        for a in axes:
            a.axvspan(warmup[0] - t0, warmup[1] - t0, color="0.85", alpha=0.5, lw=0)
        ax.text(warmup[0] - t0, 0.6, " warm-up (not in the SLO)", fontsize=7, color="0.4")
    if hist:
        ax3 = ax.twinx()
        ax3.plot(hs, [h["rps"] for h in hist], color="tab:cyan", lw=0.7, alpha=0.6, label="admission attempts/s")
        ax3.set_ylabel("attempts/s")
        ax3.legend(loc="upper right", fontsize=8)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _server_series(watcher: Any, window: float) -> list[tuple[float, float]]:
    from loadtests.watcher import bucket_delta, histogram_quantile

    rows = [r for r in watcher.metrics_timeline if r["brokers"]]
    out = []
    j = 0
    for i, r in enumerate(rows):
        while j < i and r["t"] - rows[j]["t"] > window:
            j += 1
        if j == i:
            continue
        total: dict[float, float] = {}
        for url, b in r["brokers"].items():
            a = rows[j]["brokers"].get(url)
            if not a:
                continue
            d = bucket_delta({float(k): v for k, v in a["buckets"].items()},
                             {float(k): v for k, v in b["buckets"].items()})
            for le, v in d.items():
                total[le] = total.get(le, 0.0) + v
        q = histogram_quantile(0.99, total)
        if q is not None:
            out.append((r["t"], q * 1000))
    return out
