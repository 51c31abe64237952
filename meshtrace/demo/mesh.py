"""The Bookinfo mesh as processes: which services, which ports, which command lines, and Jaeger beside them.

Each workload is an app under `meshtrace-run` plus a `meshtrace proxy` sidecar with three listeners: inbound (in
front of the app), outbound (the app's HTTP_PROXY) and admin (/metrics, /ready). A caller is given its callee's
inbound address; with traffic rules, it is given the service name instead and its sidecar resolves it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from meshtrace.demo.processes import Child, Supervisor, free_port
from meshtrace.errors import MeshtraceError

__all__ = ["Jaeger", "Mesh", "Workload", "find_examples", "find_jaeger_binary", "plan", "start_jaeger",
           "start_mesh", "tool"]

JAEGER_VERSION = "v1.76.0"
REVIEWS_SPLIT = {"v1": 20, "v2": 40, "v3": 40}      # as in examples/bookinfo/rules.yaml
RATINGS_FAULT_PERCENT = 10.0


@dataclass
class Workload:
    app: str
    version: str
    script: str
    app_port: int = field(default_factory=free_port)
    inbound: int = field(default_factory=free_port)
    outbound: int = field(default_factory=free_port)
    admin: int = field(default_factory=free_port)

    @property
    def name(self) -> str:
        return f"{self.app}-{self.version}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.inbound}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.admin}/metrics"


@dataclass
class Mesh:
    workloads: list[Workload]
    rules: bool                       # the sidecars apply examples/bookinfo/rules.yaml
    entry: str                        # productpage's inbound sidecar: where the load goes

    @property
    def metrics_urls(self) -> list[str]:
        return [w.metrics_url for w in self.workloads]


def plan() -> list[Workload]:
    return [
        Workload("details", "v1", "details.py"),
        Workload("ratings", "v1", "ratings.py"),
        Workload("reviews", "v1", "reviews.py"),
        Workload("reviews", "v2", "reviews.py"),
        Workload("reviews", "v3", "reviews.py"),
        Workload("productpage", "v1", "productpage.py"),
    ]


def find_examples() -> Path:
    """examples/bookinfo of the source tree this package runs from, else of the current directory."""
    here = Path(__file__).resolve()
    for base in (*here.parents, Path.cwd()):
        candidate = base / "examples" / "bookinfo"
        if (candidate / "productpage.py").is_file():
            return candidate
    raise MeshtraceError("cannot find examples/bookinfo: run the demo from a meshtrace source checkout")


def tool(name: str) -> str:
    """A console script of this installation (meshtrace, meshtrace-run), next to the running interpreter."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise MeshtraceError(f"cannot find the {name} command of this installation")
    return found


def proxy_supports_rules() -> bool:
    """Whether this installation's sidecar takes Istio rules (`meshtrace proxy --rules`)."""
    try:
        out = subprocess.run([tool("meshtrace"), "proxy", "--help"], capture_output=True, text=True, timeout=30,
                             check=False, cwd=Path.home())
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--rules" in out.stdout


def _service_entries(workloads: list[Workload]) -> str:
    docs = []
    for app in dict.fromkeys(w.app for w in workloads):
        endpoints = "\n".join(
            f"    - address: 127.0.0.1\n      ports: {{http: {w.inbound}}}\n      labels: {{version: {w.version}}}"
            for w in workloads if w.app == app)
        docs.append(f"apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: {app}\nspec:\n"
                    f"  hosts: [{app}]\n  ports:\n    - {{number: 9080, name: http, protocol: HTTP}}\n"
                    f"  resolution: STATIC\n  location: MESH_INTERNAL\n  endpoints:\n{endpoints}\n")
    return "---\n".join(docs)


#: The sidecars' split seed variable (meshtrace.proxy.split.SEED_ENV, named here: the core does not import the proxy).
SPLIT_SEED_ENV = "MESHTRACE_SPLIT_SEED"


def base_env(exporter_env: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {"OTEL_SERVICE_NAME", "OTEL_PROPAGATORS", "MESHTRACE_PROPAGATORS", "PYTHONPATH",
                        "NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy",
                        "ALL_PROXY", "all_proxy", "OTEL_RESOURCE_ATTRIBUTES"}
           and not k.startswith("MESHTRACE_PROXY_")}
    env.update({"PYTHONUNBUFFERED": "1", "OTEL_BSP_SCHEDULE_DELAY": "200", **exporter_env})
    return env


def start_mesh(supervisor: Supervisor, exporter_env: Mapping[str, str], *, workdir: Path, rules: bool,
               timeout: float = 60.0, seed: int | None = None) -> Mesh:
    examples = find_examples()
    workloads = plan()
    by_name = {w.name: w for w in workloads}
    env = base_env(exporter_env)
    if seed is not None:  # every sidecar's route splits then pick the same sequence on every run
        env[SPLIT_SEED_ENV] = str(seed)

    def target(app: str) -> str:
        if rules:
            return f"http://{app}:9080"
        return ",".join(w.url for w in workloads if w.app == app)

    rule_args: list[str] = []
    if rules:
        rule_file = workdir / "rules.yaml"
        rule_file.write_text((examples / "rules.yaml").read_text() + "\n---\n" + _service_entries(workloads))
        rule_args = ["--rules", str(rule_file)]
    app_args = {
        "details": [],
        "ratings": ["--details", target("details")] + ([] if rules else ["--fail-percent", str(RATINGS_FAULT_PERCENT)]),
        "reviews": ["--ratings", target("ratings")],
        "productpage": ["--details", target("details"), "--reviews", target("reviews")],
    }
    started: list[tuple[Workload, Child, Child]] = []
    for w in workloads:
        app_env = {**env, "HTTP_PROXY": f"http://127.0.0.1:{w.outbound}", "http_proxy": f"http://127.0.0.1:{w.outbound}",
                   "OTEL_RESOURCE_ATTRIBUTES": f"service.version={w.version},service.namespace=bookinfo"}
        version_args = ["--version", w.version] if w.app == "reviews" else []
        app = supervisor.start(
            w.name, [tool("meshtrace-run"), "--service-name", w.app, sys.executable, w.script,
                     "--port", str(w.app_port), *version_args, *app_args[w.app]], cwd=examples, env=app_env)
        sidecar = supervisor.start(
            f"{w.name}-sidecar",
            [tool("meshtrace"), "proxy", "--service", w.app, "--app", w.app, "--workload-version", w.version,
             "--workload", w.name, "--namespace", "bookinfo",
             "--listen", f"127.0.0.1:{w.inbound}", "--upstream", f"127.0.0.1:{w.app_port}",
             "--outbound", f"127.0.0.1:{w.outbound}", "--admin", f"127.0.0.1:{w.admin}", "--access-log", "",
             *rule_args],
            cwd=workdir, env=env)
        started.append((w, app, sidecar))
    deadline = time.monotonic() + timeout
    for w, app, sidecar in started:
        supervisor.wait_port(app, w.app_port, deadline)
        supervisor.wait_http(sidecar, f"http://127.0.0.1:{w.admin}/ready", deadline)
    return Mesh(workloads, rules, by_name["productpage-v1"].url)


def find_jaeger_binary() -> Path | None:
    """MESHTRACE_JAEGER_BIN, else the binary tests/e2e/build_jaeger.sh caches; None when neither exists."""
    explicit = os.environ.get("MESHTRACE_JAEGER_BIN")
    if explicit and Path(explicit).is_file():
        return Path(explicit)
    version = os.environ.get("JAEGER_VERSION", JAEGER_VERSION)
    cache = Path(os.environ.get("MESHTRACE_CACHE") or
                 Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "meshtrace")
    cached = cache / f"jaeger-{version}"
    return cached if cached.is_file() else None


# Jaeger v2 with memory storage, every port on 127.0.0.1, no self-tracing (as tests/e2e/jaeger-config.yaml).
_JAEGER_CONFIG = """\
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    resource: {service.name: jaeger}
    metrics: {level: none}
    logs: {level: warn}
extensions:
  healthcheckv2:
    use_v2: true
    http: {endpoint: "127.0.0.1:%(health)d"}
  jaeger_query:
    storage: {traces: memstore}
    enable_tracing: false
    http: {endpoint: "127.0.0.1:%(query)d"}
    grpc: {endpoint: "127.0.0.1:%(query_grpc)d"}
  jaeger_storage:
    backends:
      memstore:
        memory: {max_traces: 100000}
receivers:
  otlp:
    protocols:
      grpc: {endpoint: "127.0.0.1:%(otlp_grpc)d"}
      http: {endpoint: "127.0.0.1:%(otlp_http)d"}
processors:
  batch: {timeout: 100ms}
exporters:
  jaeger_storage_exporter: {trace_storage: memstore}
"""


@dataclass
class Jaeger:
    query_url: str
    otlp_endpoint: str
    child: Child | None = None        # None: a Jaeger the user runs (--jaeger URL)


def start_jaeger(supervisor: Supervisor, binary: Path, workdir: Path, timeout: float = 60.0) -> Jaeger:
    ports = {name: free_port() for name in ("query", "query_grpc", "otlp_grpc", "otlp_http", "health")}
    config = workdir / "jaeger.yaml"
    config.write_text(_JAEGER_CONFIG % ports)
    child = supervisor.start("jaeger", [str(binary), f"--config={config}"], cwd=workdir, env=dict(os.environ))
    deadline = time.monotonic() + timeout
    supervisor.wait_http(child, f"http://127.0.0.1:{ports['health']}/status", deadline)
    supervisor.wait_http(child, f"http://127.0.0.1:{ports['query']}/api/services", deadline)
    return Jaeger(f"http://127.0.0.1:{ports['query']}", f"http://127.0.0.1:{ports['otlp_http']}", child)
