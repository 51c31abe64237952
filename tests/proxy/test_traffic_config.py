"""Istio rule files: what loads, what is warned about by name, and the exact error each bad file produces."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshtrace import ConfigError
from meshtrace.proxy.istio_config import load_rules, parse_rules

GOOD = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  gateways: [mesh]
  http:
  - name: jason
    match:
    - headers: {end-user: {exact: jason}}
      uri: {prefix: /api}
      ignoreUriCase: true
    - queryParams: {debug: {regex: "1|true"}}
      withoutHeaders: {x-skip: {}}
    rewrite: {uri: /v2, authority: reviews-v2}
    headers:
      request: {set: {X-A: "1"}, add: {x-b: "2"}, remove: [x-c]}
      response: {remove: [server]}
    route:
    - destination: {host: reviews, subset: v2, port: {number: 9080}}
      weight: 99
    - destination: {host: reviews, subset: v1}
      weight: 1
    timeout: 2s
    retries: {attempts: 3, perTryTimeout: 500ms, retryOn: "5xx,503,connect-failure"}
    mirror: {host: reviews, subset: v1}
    mirrorPercentage: {value: 12.5}
  - route:
    - destination: {host: reviews}
    fault:
      delay: {fixedDelay: 100ms, percentage: {value: 50}}
      abort: {httpStatus: 503}
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {consistentHash: {httpCookie: {name: user, ttl: 0s}}}
    connectionPool: {tcp: {maxConnections: 10}, http: {http1MaxPendingRequests: 5, maxRetries: 2}}
    outlierDetection: {consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 50}
    tls: {mode: ISTIO_MUTUAL}
  subsets:
  - {name: v1, labels: {version: v1}}
  - name: v2
    labels: {version: v2}
    trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}
---
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: 18080}, labels: {version: v1}}
  - {address: 127.0.0.2, labels: {version: v2}}
---
"""


def test_every_supported_field_loads() -> None:
    rules = parse_rules(GOOD, "good.yaml")
    (vs,) = rules.virtual_services
    assert vs.name == "reviews"
    assert vs.namespace == "shop"
    assert vs.hosts == ("reviews",)
    jason, fault = vs.http
    assert jason.name == "jason"
    assert len(jason.match) == 2
    first = jason.match[0]
    assert first.headers[0][0] == "end-user"
    assert first.headers[0][1] is not None
    assert first.headers[0][1].kind == "exact"
    assert first.ignore_uri_case
    assert first.uri is not None
    assert first.uri.value == "/api"
    assert jason.match[1].without_headers == (("x-skip", None),)
    assert (jason.rewrite_uri, jason.rewrite_authority) == ("/v2", "reviews-v2")
    assert jason.request_headers.set == (("x-a", "1"),)
    assert jason.request_headers.remove == ("x-c",)
    assert [r.weight for r in jason.route] == [99, 1]
    assert jason.route[0].destination.port == 9080
    assert jason.timeout == 2.0
    assert jason.retries is not None
    assert jason.retries.attempts == 3
    assert jason.retries.per_try_timeout == 0.5
    assert jason.retries.retry_on == ("5xx", "503", "connect-failure")
    assert jason.mirror is not None
    assert jason.mirror.subset == "v1"
    assert jason.mirror_percent == 12.5
    assert fault.fault is not None
    assert fault.fault.delay == 0.1
    assert fault.fault.delay_percent == 50
    assert fault.fault.abort_status == 503
    assert fault.fault.abort_percent == 0.0
    (dr,) = rules.destination_rules
    assert dr.traffic_policy is not None
    assert dr.traffic_policy.consistent_hash is not None
    assert dr.traffic_policy.consistent_hash.cookie == "user"
    assert dr.traffic_policy.pool is not None
    assert dr.traffic_policy.pool.max_connections == 10
    assert dr.traffic_policy.outlier is not None
    assert dr.traffic_policy.outlier.consecutive_5xx_errors == 3
    v2 = dr.subsets[1]
    assert v2.labels == (("version", "v2"),)
    assert v2.traffic_policy is not None
    assert v2.traffic_policy.simple == "LEAST_REQUEST"
    (se,) = rules.service_entries
    assert se.endpoints[0].ports == (("http", 18080),)
    assert se.resolution == "STATIC"


def test_unsupported_istio_fields_are_warnings_naming_file_line_and_field() -> None:
    rules = parse_rules(GOOD, "good.yaml")
    assert rules.warnings == (
        "good.yaml, line 6, field 'spec.gateways': document 1 (VirtualService reviews): "
        "not supported by meshtrace, ignored",
        "good.yaml, line 43, field 'spec.trafficPolicy.tls': document 2 (DestinationRule reviews): "
        "not supported by meshtrace, ignored",
    )


def test_folder_of_files_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(GOOD)
    (tmp_path / "a.yml").write_text(GOOD.replace("name: reviews, namespace: shop", "name: first"))
    (tmp_path / "ignored.txt").write_text("not yaml: [")
    rules = load_rules(tmp_path)
    assert [vs.name for vs in rules.virtual_services] == ["first", "reviews"]
    assert rules.files == (str(tmp_path / "a.yml"), str(tmp_path / "b.yaml"))


HEAD = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\n"

BAD = [
    ("spec: {hosts: [r], http: [{route: [{destination: {host: r}}], retries: {attempt: 3}}]}",
     "line 4, field 'spec.http[0].retries.attempt': document 1 (VirtualService r): unknown field "
     "(known: attempts, backoff, perTryTimeout, retryIgnorePreviousHosts, retryOn, retryRemoteLocalities)"),
    ("spec: {hosts: [r], http: [{route: [{destination: {host: r}}], timeout: soon}]}",
     "line 4, field 'spec.http[0].timeout': document 1 (VirtualService r): 'soon' is not a duration "
     "(use e.g. 500ms, 10s, 2m)"),
    ("spec:\n  hosts: [r]\n  http:\n  - match: [{uri: {regex: '('}}]\n    route: [{destination: {host: r}}]",
     "line 7, field 'spec.http[0].match[0].uri.regex': document 1 (VirtualService r): not a valid regular "
     "expression: missing ), unterminated subpattern at position 0"),
    ("spec: {hosts: [r], http: [{match: [{uri: {exact: /a, prefix: /b}}], route: [{destination: {host: r}}]}]}",
     "line 4, field 'spec.http[0].match[0].uri': document 1 (VirtualService r): needs exactly one of exact, "
     "prefix, regex"),
    ("spec: {hosts: [r], http: [{match: [{headers: {End-User: {exact: j}}}], route: [{destination: {host: r}}]}]}",
     "line 4, field 'spec.http[0].match[0].headers.End-User': document 1 (VirtualService r): header names must "
     "be lowercase"),
    ("spec: {hosts: [r], http: [{route: [{destination: {host: a}, weight: 0}, {destination: {host: b}}]}]}",
     "line 4, field 'spec.http[0].route': document 1 (VirtualService r): weights of several destinations must "
     "not all be 0"),
    ("spec: {hosts: [r], http: [{route: [{destination: {host: r}}], fault: {abort: {httpStatus: 42, "
     "percentage: {value: 1}}}}]}",
     "line 4, field 'spec.http[0].fault.abort.httpStatus': document 1 (VirtualService r): 42 is not an integer "
     "200..599"),
    ("spec: {hosts: [r], http: [{route: [{destination: {host: r}}], mirrorPercentage: {value: 101}}]}",
     "line 4, field 'spec.http[0].mirrorPercentage.value': document 1 (VirtualService r): 101 is not a "
     "percentage between 0 and 100"),
    ("spec: {hosts: [r], http: [{route: [{destination: {host: r}}], retries: {retryOn: 'sometimes'}}]}",
     "line 4, field 'spec.http[0].retries.retryOn': document 1 (VirtualService r): 'sometimes' is not a retry "
     "condition (one of 5xx, cancelled, connect-failure, deadline-exceeded, gateway-error, internal, refused-stream, "
     "reset, resource-exhausted, retriable-4xx, retriable-status-codes, unavailable or a status code)"),
    ("spec: {hosts: [r], http: [{match: [{uri: {prefix: /}}]}]}",
     "line 4, field 'spec.http[0]': document 1 (VirtualService r): needs `route` (redirect, directResponse and "
     "delegate are not supported)"),
    ("spec: {http: []}", "line 4, field 'spec': document 1 (VirtualService r): needs `hosts`"),
    ("spec: {hosts: r}", "line 4, field 'spec.hosts': document 1 (VirtualService r): must be a list"),
]


@pytest.mark.parametrize(("body", "expected"), BAD)
def test_bad_virtual_service(tmp_path: Path, body: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(HEAD + body + "\n")
    with pytest.raises(ConfigError) as info:
        load_rules(path)
    assert str(info.value) == f"{path}, {expected}"


BAD_DOCS = [
    ("apiVersion: networking.istio.io/v2\nkind: VirtualService\nspec: {}\n",
     "line 1, field 'apiVersion': document 1: 'networking.istio.io/v2' is not one of networking.istio.io/v1, "
     "networking.istio.io/v1alpha3, networking.istio.io/v1beta1"),
    ("kind: Gateway\napiVersion: networking.istio.io/v1\nspec: {}\n",
     "line 1, field 'kind': document 1: 'Gateway' is not supported (supported: VirtualService, DestinationRule, "
     "ServiceEntry)"),
    ("---\n" + HEAD + "spec: {hosts: [r]}\n---\n" + HEAD.replace("name: r", "name: s") + "spex: {}\n",
     "line 10, field 'spex': document 2: unknown field (known: apiVersion, kind, metadata, spec, status)"),
    ("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  host: r\n"
     "  trafficPolicy: {loadBalancer: {simple: FASTEST}}\n",
     "line 6, field 'spec.trafficPolicy.loadBalancer.simple': document 1 (DestinationRule d): 'FASTEST' is not one "
     "of LEAST_CONN, LEAST_REQUEST, PASSTHROUGH, RANDOM, ROUND_ROBIN, UNSPECIFIED"),
    ("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  host: r\n"
     "  subsets: [{labels: {version: v1}}]\n",
     "line 6, field 'spec.subsets[0]': document 1 (DestinationRule d): needs `name`"),
    ("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: e}\nspec:\n  hosts: [r]\n"
     "  endpoints: [{address: 1.2.3.4, ports: {http: 70000}}]\n",
     "line 6, field 'spec.endpoints[0].ports.http': document 1 (ServiceEntry e): 70000 is not an integer "
     "1..65535"),
    ("apiVersion: [\n", "line 2: not valid YAML: expected the node content, but found '<stream end>'"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_DOCS)
def test_bad_documents(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_rules(path)
    assert str(info.value) == f"{path}, {expected}"


def test_unreadable_path_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read the rules file"):
        load_rules(tmp_path / "missing.yaml")


def test_dangling_subset_is_an_error_at_build() -> None:
    from meshtrace.proxy.routes import RuleRouter

    rules = parse_rules(HEAD + "spec: {hosts: [r], http: [{route: [{destination: {host: r, subset: v9}}]}]}\n",
                        "vs.yaml")
    with pytest.raises(ConfigError) as info:
        RuleRouter(rules, set())
    assert str(info.value) == ("vs.yaml:4, field 'destination.subset': subset 'v9' of host 'r' is not defined "
                               "by any DestinationRule")
