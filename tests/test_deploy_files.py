"""The files an operator deploys with: examples/docker-compose.yml, the Dockerfile and the Grafana
dashboard. There is no Docker on the machines that run these tests, so the compose file and the
Dockerfile are checked as text and YAML (and the compose environment through livehub's own
settings), not by building or running an image."""

from __future__ import annotations

import json
import os
import re

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from livehub.app import create_app
from livehub.settings import Settings, load_settings, unknown_env_vars
from tests.servers import ROOT


def test_compose_file_parses_and_its_environment_configures_livehub(monkeypatch: pytest.MonkeyPatch) -> None:
    compose = yaml.safe_load((ROOT / "examples" / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"redis", "livehub-1", "livehub-2"} <= set(services)
    for name in ("livehub-1", "livehub-2"):
        service = services[name]
        assert service["build"]["context"] == ".."
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        environment = {k: str(v) for k, v in service["environment"].items()}
        for var in [v for v in os.environ if v.startswith(("LIVEHUB_", "CENTRIFUGO_"))]:
            monkeypatch.delenv(var)
        for key, text in environment.items():
            monkeypatch.setenv(key, text)
        settings = load_settings(None)
        assert unknown_env_vars(settings) == []
        assert settings.engine.url.startswith("redis://redis:6379/0?prefix=livehub")
        assert settings.node.name == name
        assert settings.log.format == "json"
        assert settings.client.allowed_origins == ["http://localhost:8001", "http://localhost:8002"]
    assert services["redis"]["healthcheck"]["test"][-1] == "ping"


def test_dockerfile_builds_in_stages_and_runs_as_a_user() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\w+))?", text, re.MULTILINE)
    assert len(stages) == 2 and stages[0][1] == "build"
    runtime = text[text.rindex("\nFROM ") :]
    assert "nodejs" not in runtime  # Node.js only where the bundle is built
    users = re.findall(r"^USER\s+(\S+)", runtime, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert "[redis,nats]" in runtime
    assert re.search(r'^ENTRYPOINT \["livehub"\]', runtime, re.MULTILINE)
    assert "/health" in runtime  # HEALTHCHECK


def test_grafana_dashboard_charts_only_metrics_livehub_exports() -> None:
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    charted = {
        name for expr in exprs for name in re.findall(r"\b((?:centrifugo|livehub|process)_\w+)\b", expr)
    }
    with TestClient(create_app(Settings())) as client:
        text = client.get("/metrics").text
    exported = set()
    for family in text_string_to_metric_families(text):
        exported.update(sample.name for sample in family.samples)
        exported.add(family.name)
    # histogram and counter series appear once observed: accept their declared family names
    declared = set(re.findall(r"^# TYPE (\w+) ", text, re.MULTILINE))
    for name in declared:
        exported.update({name, f"{name}_total", f"{name}_bucket", f"{name}_count", f"{name}_sum"})
    assert charted and charted <= exported, charted - exported
