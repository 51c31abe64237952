"""Shared helpers for the traffic-rule tests: request heads without sockets, rule text builders, one GET."""

from __future__ import annotations

import http.client

from meshtrace.proxy.codec import RequestHead

API = "apiVersion: networking.istio.io/v1\n"


def head(target: str = "/", host: str = "reviews", method: str = "GET",
         headers: dict[str, str] | None = None) -> RequestHead:
    pairs = [(b"host", host.encode())] + [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return RequestHead(method.encode(), target.encode(), b"1.1", pairs, hmap=dict(pairs), keep_alive=True,
                       upgrade=False)


def service_entry(host: str, endpoints: list[tuple[str, int, str]], port: int = 80) -> str:
    """A STATIC ServiceEntry; endpoints are (address, port, version label)."""
    items = "".join(f"  - {{address: {a}, ports: {{http: {p}}}, labels: {{version: {v}}}}}\n" for a, p, v in endpoints)
    return (f"{API}kind: ServiceEntry\nmetadata: {{name: {host}}}\nspec:\n  hosts: [{host}]\n"
            f"  ports: [{{number: {port}, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints:\n{items}")


def subsets_rule(host: str, versions: list[str], policy: str = "") -> str:
    subsets = "".join(f"  - {{name: {v}, labels: {{version: {v}}}}}\n" for v in versions)
    extra = f"  trafficPolicy: {policy}\n" if policy else ""
    return (f"{API}kind: DestinationRule\nmetadata: {{name: {host}}}\nspec:\n  host: {host}\n{extra}"
            f"  subsets:\n{subsets}")


def status_of_get(port: int, path: str, host: str = "reviews:9080") -> int:
    """The status of one GET of `path` through the listener on 127.0.0.1:`port`, on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()
