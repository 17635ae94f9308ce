"""deploy/grafana/livedub.json and deploy/prometheus/prometheus.yml: every query names a metric the services export.

Metric names are parsed out of each PromQL expression (panels and template variables) and compared with what the
two services' prometheus-client registries expose (counters as `_total`, histograms as `_bucket`/`_sum`/`_count`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from livedub.media.metrics import WorkerMetrics
from livedub.media.sts_link.sts_pool import StsPoolMonitor, stream_metrics
from livedub.sts.metrics import StsMetrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "livedub.json"
SCRAPE_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"

# Series Prometheus itself makes per scrape target.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
IDENTIFIER = re.compile(r"(?<![\w:$.])([a-zA-Z_:][\w:]*)\b(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords, labels or numbers."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values, regexes)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors and subqueries
    text = GROUPING.sub("", text)  # by (label, ...) etc.
    text = re.sub(r"\b\d+(?:\.\d+)?(?:e[+-]?\d+)?\b", "", text)
    return {name for name, call in IDENTIFIER.findall(text) if not call and name not in KEYWORDS}


def label_values_metric(query: str) -> set[str]:
    """`label_values(metric, label)` (a Grafana template query) -> {metric}; `label_values(label)` -> {}."""
    match = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", query)
    return metric_names(match.group(1)) if match else set()


def exported_names(registry: CollectorRegistry) -> set[str]:
    names: set[str] = set()
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}
    for family in registry.collect():
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def service_metrics() -> set[str]:
    """What /metrics of each service can expose: the workers' metrics, the STS pool's (parent and workers), STS's."""
    media = WorkerMetrics(CollectorRegistry()).registry
    stream_metrics(media)
    StsPoolMonitor([], media)
    return exported_names(media) | exported_names(StsMetrics().registry)


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def test_the_parser_finds_metric_names() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le, stage) "
        '(rate(sts_stage_seconds_bucket{stage=~"asr|tts"}[$__rate_interval])))'
        " / on(instance) group_left sum(media_service_worker_errors_total offset 5m) > bool 2e-3"
    )
    assert metric_names(expr) == {"sts_stage_seconds_bucket", "media_service_worker_errors_total"}
    assert metric_names('up{job=~"livedub-media|livedub-sts"}') == {"up"}
    assert label_values_metric("label_values(media_service_worker_pipeline_state, stream_id)") == {
        "media_service_worker_pipeline_state"
    }


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def test_every_dashboard_query_names_an_exported_metric(dashboard: dict[str, Any]) -> None:
    known = service_metrics() | PROMETHEUS_SERIES
    found: set[str] = set()
    for title, expr in queries(dashboard):
        names = metric_names(expr)
        assert names, f"{title}: no metric in {expr!r}"
        assert names <= known, f"{title}: {sorted(names - known)} not exported by either service"
        found |= names
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if variable["type"] == "query":
            text = query["query"] if isinstance(query, dict) else query
            names = label_values_metric(text)
            assert names and names <= known, f"variable {variable['name']}: {text!r}"
    # Both services are on the dashboard.
    assert any(n.startswith("media_service_worker_") for n in found) and any(n.startswith("sts_") for n in found)


def test_dashboard_is_importable(dashboard: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "stream"} <= variables
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        assert [t["refId"] for t in panel["targets"]] == sorted({t["refId"] for t in panel["targets"]})


def test_scrape_config_has_the_jobs_the_dashboard_reads(dashboard: dict[str, Any]) -> None:
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"livedub-media", "livedub-sts"}
    assert all(job["metrics_path"] == "/metrics" for job in jobs.values())
    assert jobs["livedub-media"]["authorization"]["type"] == "Bearer"  # /metrics needs MEDIA_API_TOKEN off loopback
    up_queries = [expr for _, expr in queries(dashboard) if metric_names(expr) == {"up"}]
    assert up_queries and all(name in up_queries[0] for name in jobs)
