"""The Backup+ Grafana dashboard, built with grafana-foundation-sdk; writes ops/grafana/backupplus.json.

    .venv/bin/python ops/grafana/dashboard.py          # rewrite the JSON
    .venv/bin/python ops/grafana/dashboard.py --check  # exit 1 when the JSON differs from this code

The committed JSON is what Grafana imports; tests/test_ops_dashboard.py checks that it equals what
this code builds and runs every panel's PromQL against a real Prometheus scraping a real broker.
Gauges read from Redis are the same on every broker process (max); counters are per process (sum).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard, heatmap, prometheus, stat, timeseries
from grafana_foundation_sdk.builders.common import StackingConfig
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import StackingMode
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUT = Path(__file__).with_name("backupplus.json")
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
OUTAGE = 'outage=~"$outage"'


def _query(expr: str, legend: str = "", ref: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend or "__auto").ref_id(ref)


def _timeseries(title: str, description: str, unit: str, *queries: prometheus.Dataquery) -> timeseries.Panel:
    panel = (
        timeseries.Panel().title(title).description(description).datasource(DATASOURCE).unit(unit)
        .height(8).span(12).fill_opacity(10)
    )
    for q in queries:
        panel = panel.with_target(q)
    return panel


def utilisation() -> stat.Panel:
    return (
        stat.Panel().title("Utilisation per outage and kind")
        .description("Share of the outage's ports in use (recording rule; the alert fires at 90 % for 5 minutes).")
        .datasource(DATASOURCE).unit("percentunit").min(0).max(1).height(8).span(12)
        .with_target(_query(f"backupplus:ports_utilisation:ratio{{{OUTAGE}}}", "{{outage}} {{kind}}"))
        .thresholds(
            dashboard.ThresholdsConfig().mode("absolute").steps(
                [{"color": "green", "value": None}, {"color": "orange", "value": 0.75}, {"color": "red", "value": 0.9}]
            )
        )
    )


def admissions_by_result() -> timeseries.Panel:
    return _timeseries(
        "Admissions by result",
        "Admission attempts per second, all broker processes: granted, downgraded, preempted, refused, errors.",
        "reqps",
        _query("sum by (result) (rate(backupplus_admissions_total[$__rate_interval]))", "{{result}}"),
    ).stacking(StackingConfig().mode(StackingMode.NORMAL))


def admission_latency_heatmap() -> heatmap.Panel:
    return (
        heatmap.Panel().title("Admission latency").description("Time to decide an admission (one Redis script call).")
        .datasource(DATASOURCE).height(8).span(12).calculate(False)
        .with_target(
            _query("sum by (le) (increase(backupplus_admission_seconds_bucket[$__rate_interval]))", "{{le}}")
            .format(PromQueryFormat.HEATMAP)
        )
    )


# Panels of one or two plain queries: (title, description, unit, [(expr, legend), ...]).
_RATE_LE = "sum by (le) (rate(backupplus_admission_seconds_bucket[$__rate_interval]))"
SIMPLE_PANELS: dict[str, tuple[str, str, str, list[tuple[str, str]]]] = {
    "ports": (
        "Ports in use vs capacity, per outage and kind",
        "Ports held by live leases, and each active outage's cap (8 audio, 10 video by contract).",
        "short",
        [
            (f"max by (outage, kind) (backupplus_ports_in_use{{{OUTAGE}}})", "{{outage}} {{kind}} in use"),
            (f"max by (outage, kind) (backupplus_ports_capacity{{{OUTAGE}}})", "{{outage}} {{kind}} capacity"),
        ],
    ),
    "latency": (
        "Admission latency p50 / p99",
        "Target: p99 at most 25 ms (the alert fires above it for 5 minutes).",
        "s",
        [(f"histogram_quantile(0.5, {_RATE_LE})", "p50"), (f"histogram_quantile(0.99, {_RATE_LE})", "p99")],
    ),
    "preemptions": (
        "Preemptions",
        "Participants whose port went to a more important conference, by kind.",
        "short",
        [("sum by (kind) (increase(backupplus_preemptions_total[$__rate_interval]))", "{{kind}}")],
    ),
    "media_nodes": (
        "Media nodes by state",
        "Ready nodes take conferences; draining ones finish theirs; dead ones stopped heartbeating.",
        "short",
        [("max by (state) (backupplus_media_nodes)", "{{state}}")],
    ),
    "media_sessions": (
        "Media sessions, direct / relay",
        "Participants' media connections by path: direct, or relayed through TURN (the same in every broker).",
        "short",
        [("max by (path) (backupplus_media_sessions)", "{{path}}")],
    ),
    "deadlines": (
        "SLA deadlines met / missed",
        "Acknowledgement and restore deadlines reached, by outcome (the alerts fire on any miss).",
        "short",
        [
            ("sum by (deadline, result) (increase(backupplus_sla_deadlines_total[$__rate_interval]))",
             "{{deadline}} {{result}}"),
            ("max(backupplus_outages_restore_overdue)", "active outages past their restore deadline"),
        ],
    ),
    "outages_and_store": (
        "Outages and the store",
        "Outages by state; each broker process's view of Redis (1 reachable, 0 not).",
        "short",
        [
            ("max by (state) (backupplus_outages)", "outages {{state}}"),
            ("backupplus_store_up", "Redis reachable from {{instance}}"),
        ],
    ),
}


def simple(name: str) -> timeseries.Panel:
    title, description, unit, queries = SIMPLE_PANELS[name]
    refs = "ABCDEFGH"
    return _timeseries(title, description, unit, *(_query(e, legend, refs[i]) for i, (e, legend) in enumerate(queries)))


def build() -> dict[str, object]:
    board = (
        dashboard.Dashboard("Backup+ broker").uid("backupplus-broker").tags(["backupplus"])
        .time("now-3h", "now").refresh("30s").timezone("browser")
        .with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
        .with_variable(
            dashboard.QueryVariable("outage").label("Outage").datasource(DATASOURCE)
            .query("label_values(backupplus_ports_in_use, outage)").multi(True).include_all(True).all_value(".*")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        )
        .with_row(dashboard.Row("Capacity"))
        .with_panel(simple("ports"))
        .with_panel(utilisation())
        .with_row(dashboard.Row("Admissions"))
        .with_panel(admissions_by_result())
        .with_panel(admission_latency_heatmap())
        .with_panel(simple("latency"))
        .with_panel(simple("preemptions"))
        .with_row(dashboard.Row("Media, deadlines, store"))
        .with_panel(simple("media_nodes"))
        .with_panel(simple("media_sessions"))
        .with_panel(simple("deadlines"))
        .with_panel(simple("outages_and_store"))
    )
    doc = dict(json.loads(json.dumps(board.build(), cls=JSONEncoder)))
    for number, panel in enumerate(doc["panels"], start=1):  # Grafana wants a unique id per panel
        panel["id"] = number
    return doc


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} differs from what ops/grafana/dashboard.py builds: run it to rewrite", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
