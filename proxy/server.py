"""The sidecar process: listeners, pools, tracing, metrics, access log and admin wired together; SIGTERM drains.

Theory of operation. `Sidecar.start()` binds the inbound and outbound listeners and the admin port; `/ready`
turns 200 once they are bound. `drain()` (SIGTERM/SIGINT) stops accepting, closes idle keep-alive
connections, lets each in-flight exchange finish (its response then carries `connection: close`), and waits
for the last connection up to `drain_timeout`; then pools, admin and the span exporter are shut down.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import IO, Any

from opentelemetry import trace
from opentelemetry.propagators.textmap import TextMapPropagator

from meshtrace import compiled

from .config import SidecarConfig
from .hop import HopObserver, Workload
from .listener import Limits, Listener, ListenerContext
from .peer import workload_from_env
from .pool import PoolSet
from .reload import RulesReloader
from .router import InboundRouter, OutboundRouter
from .routes import RuleRouter
from .tracing import HopTracer

__all__ = ["Sidecar", "identity_for", "run"]

logger = logging.getLogger("meshtrace.proxy")

# The sidecar's own calls (span export) must never go through a proxy, least of all itself.
_PROXY_VARIABLES = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def identity_for(config: SidecarConfig, environ: dict[str, str] | None = None) -> Workload:
    """This sidecar's workload: config values win over the environment conventions of `workload_from_env`."""
    env = dict(os.environ if environ is None else environ)
    for key, name in (("namespace", "MESHTRACE_NAMESPACE"), ("app", "MESHTRACE_APP"),
                      ("version", "MESHTRACE_VERSION"), ("workload", "MESHTRACE_WORKLOAD")):
        value = getattr(config, key)
        if value:
            env[name] = value
    return workload_from_env(config.service, env)


class Sidecar:
    """One sidecar: `await start()`, serve, `await drain()`, `await close()`."""

    def __init__(self, config: SidecarConfig, *, tracer: trace.Tracer | None = None,
                 propagator: TextMapPropagator | None = None, observers: Sequence[HopObserver] = (),
                 metrics: Any = None, admin_factory: Any = None) -> None:
        self.config = config
        self.tracer = tracer
        self.propagator = propagator
        self.observers = list(observers)
        self.metrics = metrics
        self.admin_factory = admin_factory
        self.identity = identity_for(config)
        self.listeners: list[Listener] = []
        self.admin: Any = None
        self.tcp_servers: list[asyncio.Server] = []
        self.pools: PoolSet | None = None
        self.rule_router: RuleRouter | None = None
        self.reloader: RulesReloader[RuleRouter] | None = None
        self.ready = False
        self.draining = False
        self.rules_poll_interval = 1.0          # seconds between checks of the rules files' mtimes

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        config = self.config
        self.pools = PoolSet(loop, connect_timeout=config.connect_timeout or 5.0,
                             idle_timeout=min(config.idle_timeout, 55.0) or 55.0)
        limits = Limits(header_timeout=config.header_timeout or 10.0, idle_timeout=config.idle_timeout or 60.0,
                        stream_idle_timeout=config.stream_idle_timeout, max_header_bytes=config.max_header_bytes)
        timeout = config.upstream_timeout or None
        if config.listen is not None and config.upstream is not None:
            context = ListenerContext(
                loop, "inbound", InboundRouter(config.upstream.host, config.upstream.port, timeout=timeout),
                self.pools, self.identity, tracer=self._hop_tracer(inbound=True), observers=self.observers,
                limits=limits)
            self.listeners.append(Listener(context, config.listen.host, config.listen.port))
        if config.outbound is not None:
            own: set[tuple[str, int]] = set()
            router: OutboundRouter | RuleRouter = OutboundRouter(own, timeout=timeout)
            if config.rules:
                router = self.rule_router = _rule_router(config.rules, own, timeout)
            context = ListenerContext(
                loop, "outbound", router, self.pools, self.identity, tracer=self._hop_tracer(inbound=False),
                observers=self.observers, limits=limits)
            self.listeners.append(Listener(context, config.outbound.host, config.outbound.port))
            if config.rules:
                rules_path = config.rules
                outbound_context = context

                def apply(new: RuleRouter) -> None:
                    outbound_context.router = new
                    self.rule_router = new

                self.reloader = RulesReloader(
                    rules_path, lambda: _rule_router(rules_path, own, timeout), apply,
                    interval=self.rules_poll_interval)
                self.reloader.start(loop)
        for listener in self.listeners:
            await listener.start()
        if config.tcp:
            from .tcp import serve_tcp

            for listen, upstream in config.tcp:
                self.tcp_servers.append(await serve_tcp(
                    listen.host, listen.port, upstream.host, upstream.port, self.metrics,
                    observers=[o for o in self.observers if o is not self.metrics], direction="inbound",
                    destination=self.identity, connect_timeout=config.connect_timeout or 5.0,
                    upstream_cluster=f"inbound|{upstream.port}||"))
        for listener in self.listeners:
            if listener.context.direction == "outbound":
                # Only the outbound listener itself loops; calling the own inbound side is legitimate.
                router.own.update({(listener.host, listener.port), ("localhost", listener.port),
                                   ("127.0.0.1", listener.port)})
        if config.admin is not None and self.admin_factory is not None:
            self.admin = self.admin_factory(self)
            await self.admin.start()
        self.ready = True

    def _hop_tracer(self, *, inbound: bool) -> HopTracer | None:
        if self.tracer is None or self.propagator is None:
            return None
        return HopTracer(self.tracer, self.propagator, inbound=inbound, node_id=self.config.node_id,
                         zone=self.config.zone,
                         downstream_cluster="-")

    def port(self, direction: str) -> int:
        for listener in self.listeners:
            if listener.context.direction == direction:
                return listener.port
        raise KeyError(direction)

    @property
    def active_connections(self) -> int:
        return sum(listener.active for listener in self.listeners)

    async def drain(self, timeout: float | None = None) -> bool:
        """Stop accepting, finish what is in flight; True when every connection closed in time."""
        self.draining = True
        self.ready = False
        for listener in self.listeners:
            listener.drain()
        for server in self.tcp_servers:
            server.close()          # TCP streams have no request boundary: they end when their peers close
        deadline = asyncio.get_running_loop().time() + (self.config.drain_timeout if timeout is None else timeout)
        while self.active_connections and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        return self.active_connections == 0

    async def close(self) -> None:
        if self.reloader is not None:
            self.reloader.stop()
        for listener in self.listeners:
            listener.stop_accepting()
            listener.stop_sweeping()
            # Queued reports now, and from here on as each exchange ends (the aborts below end theirs on a later
            # turn of the loop, which may be its last before the spans are flushed).
            listener.context.reports.close()
            for conn in list(listener.context.connections):
                conn.abort()  # type: ignore[attr-defined]
        for server in self.tcp_servers:
            server.close()
        if self.pools is not None:
            self.pools.close()
        if self.admin is not None:
            with contextlib.suppress(Exception):
                await self.admin.close()

    # -- data for the admin endpoints ----------------------------------------------------------------------------
    def config_dump(self) -> dict[str, Any]:
        dump = asdict(self.config)
        for key, value in dump.items():
            if isinstance(value, dict):
                dump[key] = f"{value['host']}:{value['port']}"
        dump["identity"] = asdict(self.identity)
        dump["listeners"] = [{"direction": lst.context.direction, "address": f"{lst.host}:{lst.port}"}
                             for lst in self.listeners]
        dump["tcp"] = [{"listen": str(listen), "upstream": str(upstream)} for listen, upstream in self.config.tcp]
        if self.rule_router is not None:
            dump["rules"] = self.rule_router.describe()
        if self.reloader is not None:
            dump["rules_reload"] = {"reloads": self.reloader.reloads, "last_error": self.reloader.last_error}
        return dump

    def stats(self) -> dict[str, int]:
        result: dict[str, int] = {}
        for listener in self.listeners:
            prefix = f"listener.{listener.context.direction}"
            result[f"{prefix}.downstream_cx_active"] = listener.active
            result[f"{prefix}.downstream_rq_completed"] = listener.context.requests
        if self.pools is not None:
            result["cluster.upstream_cx_total"] = sum(p.opened for p in self.pools.pools.values())
            result["cluster.upstream_cx_idle"] = sum(len(p.idle) for p in self.pools.pools.values())
        for observer in [*self.observers, self.metrics]:
            more = getattr(observer, "stats", None)
            if callable(more):
                with contextlib.suppress(Exception):
                    result.update(more())
        return result


def _rule_router(path: str, own: set[tuple[str, int]], timeout: float | None) -> RuleRouter:
    """Istio rules from `path`; ConfigError when they are invalid, each unsupported field logged by name."""
    from .istio_config import load_rules

    rules = load_rules(path)
    for warning in rules.warnings:
        logger.warning("rules: %s", warning)
    return RuleRouter(rules, own, fallback_timeout=timeout)


def _open_access_log(config: SidecarConfig) -> tuple[HopObserver | None, IO[str] | None]:
    if not config.access_log:
        return None, None
    from .accesslog import AccessLog

    stream: IO[str] | None = None
    if config.access_log != "-":
        stream = open(config.access_log, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 (closed in run)
    fmt = "json" if config.access_log_format == "json" else "envoy"
    return AccessLog(stream, format=fmt), stream


def _tracing(config: SidecarConfig) -> tuple[trace.Tracer | None, TextMapPropagator | None]:
    if not config.tracing:
        return None, None
    for name in _PROXY_VARIABLES:
        os.environ.pop(name, None)
    from opentelemetry.propagate import get_global_textmap
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    import meshtrace

    from .tracing import ProxySampler

    sampler = ProxySampler(ParentBased(TraceIdRatioBased(config.sampling / 100.0)))
    service = config.trace_service_name or f"{config.service or 'meshtrace'}-sidecar"
    provider = meshtrace.configure(service, sampler=sampler)
    return provider.get_tracer("meshtrace.proxy"), get_global_textmap()


async def _serve(config: SidecarConfig) -> int:
    from .admin import AdminServer
    from .metrics import IstioMetrics

    tracer, propagator = _tracing(config)
    metrics = IstioMetrics()
    access_log, stream = _open_access_log(config)
    observers: list[HopObserver] = [metrics]   # metrics first: serve_tcp tells it apart by identity
    if access_log is not None:
        observers.append(access_log)

    def admin_factory(sidecar: Sidecar) -> AdminServer:
        assert config.admin is not None
        return AdminServer(config.admin.host, config.admin.port, metrics=metrics.render,
                           ready=lambda: sidecar.ready, config_dump=sidecar.config_dump, stats=sidecar.stats)

    sidecar = Sidecar(config, tracer=tracer, propagator=propagator, observers=observers, metrics=metrics,
                      admin_factory=admin_factory)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await sidecar.start()
    except OSError as exc:
        print(f"meshtrace proxy: cannot listen: {exc}", file=sys.stderr)
        await sidecar.close()
        return 1
    # The long-lived objects made at start-up never need scanning again; and a proxy allocates many short-lived
    # objects per request (spans, headers), so a gen-0 collection every 700 allocations is needlessly often.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    # The span exporter encodes batches in its own thread, holding the GIL for milliseconds per batch. uvloop
    # releases the GIL while it polls and takes it back for every callback, and a thread asking for the GIL
    # waits one switch interval before the holder is made to let go: with the default 5 ms a request arriving
    # during an export could wait that long several times over; 1 ms bounds each wait. Shorter is worse under
    # load: at 100 us the exporter spent four times the system time on GIL handoffs at saturation and fell
    # behind (half the spans dropped), for no latency gain that a paced benchmark could tell from noise.
    sys.setswitchinterval(0.001)
    ports = ", ".join(f"{lst.context.direction} {lst.host}:{lst.port}" for lst in sidecar.listeners)
    admin = f", admin {config.admin}" if config.admin is not None else ""
    print(f"meshtrace proxy: serving {ports}{admin}", file=sys.stderr, flush=True)
    if slow := compiled.interpreted():
        print(f"meshtrace proxy: {len(slow)} of {len(compiled.MODULES)} request-path modules run interpreted "
              "(an install made with MESHTRACE_PURE_PYTHON=1): each request costs about 1.5 times the CPU",
              file=sys.stderr, flush=True)
    await stop.wait()
    print("meshtrace proxy: draining", file=sys.stderr, flush=True)
    clean = await sidecar.drain()
    if not clean:
        print(f"meshtrace proxy: drain timeout, {sidecar.active_connections} connection(s) cut",
              file=sys.stderr, flush=True)
    await sidecar.close()
    if access_log is not None:
        access_log.close()  # type: ignore[attr-defined]
    if stream is not None:
        stream.close()
    if tracer is not None:
        import meshtrace

        meshtrace.shutdown()
    return 0


def run(config: SidecarConfig) -> int:
    """Serve until SIGTERM/SIGINT, drain, exit code 0 (1 when a port cannot be bound)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency of the proxy extra
        return asyncio.run(_serve(config))
    return uvloop.run(_serve(config))
