"""Workload metadata exchanged between sidecars in one header, like Istio's x-envoy-peer-metadata.

The outbound sidecar adds `x-meshtrace-peer: workload=reviews-v2;namespace=default;app=reviews;...` to the
request it forwards; the inbound sidecar reads it to label its metrics with the caller's identity, and strips
it before the app sees the request. Values are percent-escaped, so `;` and `=` never need quoting rules.
The header comes from the network: decoding never raises and answers `Workload()` (all unknown) for anything
malformed. Both directions are cached, because a sidecar sees the same handful of peers over and over and the
metrics key on the decoded object.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from typing import Final
from urllib.parse import quote, unquote

from .hop import UNKNOWN, Workload

__all__ = ["PEER_HEADER", "decode_peer", "encode_peer", "workload_from_env"]

PEER_HEADER: Final = "x-meshtrace-peer"

_UNKNOWN = "unknown"
_FIELDS: Final[tuple[str, ...]] = (
    "workload", "namespace", "app", "version", "service", "canonical_service", "principal",
)
_FIELD_SET: Final = frozenset(_FIELDS)
# A real value is ~150 bytes, but percent-escaping a non-ASCII name grows it up to 12-fold; 8 KiB keeps every
# header `encode_peer` can produce for sane names decodable while bounding what a hostile client can send.
MAX_HEADER_LENGTH: Final = 8192
MAX_VALUE_LENGTH: Final = 253             # a DNS name; also bounds what lands in metric labels and logs


@lru_cache(maxsize=256)
def encode_peer(workload: Workload) -> str:
    """The header value for `workload`; unknown fields are left out to keep it short.

    A field the decoder would refuse (too long, not printable) is left out too, as is any field that would push
    the header past MAX_HEADER_LENGTH: the peer then sees that field as unknown instead of losing every field.
    """
    parts = []
    length = 0
    for name in _FIELDS:
        value = getattr(workload, name)
        if not value or value == _UNKNOWN or len(value) > MAX_VALUE_LENGTH or not value.isprintable():
            continue
        part = f"{name}={quote(value, safe='')}"
        if length + len(part) + 1 > MAX_HEADER_LENGTH:
            continue
        parts.append(part)
        length += len(part) + 1
    return ";".join(parts)


def decode_peer(value: str | bytes | None) -> Workload:
    """The workload a peer announced, or `Workload()` when the value is missing or malformed."""
    if not value:
        return UNKNOWN
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return UNKNOWN
    if len(value) > MAX_HEADER_LENGTH:
        return UNKNOWN
    return _decode_cached(value)



@lru_cache(maxsize=1024)
def _decode_cached(value: str) -> Workload:
    # Cached so that the same header gives the same object: metrics then hash an already-seen Workload.
    fields: dict[str, str] = {}
    for item in value.split(";"):
        if not item.strip():
            continue
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not name:
            return UNKNOWN
        if name not in _FIELD_SET or name in fields:
            continue  # a newer peer may send fields we do not know; the first of duplicates wins
        try:
            text = unquote(raw.strip(), errors="strict")
        except UnicodeDecodeError:
            return UNKNOWN
        if len(text) > MAX_VALUE_LENGTH or not text.isprintable():
            return UNKNOWN
        if text:
            fields[name] = text
    return Workload(**fields) if fields else UNKNOWN


def _first(env: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return value
    return None


def workload_from_env(service: str | None = None, environ: Mapping[str, str] | None = None) -> Workload:
    """This sidecar's own identity, from the environment a Kubernetes/Istio pod (or a user) provides.

    Precedence, first non-empty value wins (`service` is the `--service` flag or config value):

    - app:       MESHTRACE_APP, service, SERVICE_NAME, APP, OTEL_SERVICE_NAME
    - version:   MESHTRACE_VERSION, SERVICE_VERSION, VERSION
    - workload:  MESHTRACE_WORKLOAD, ISTIO_META_WORKLOAD_NAME, then `<app>-<version>` (the Deployment name
                 convention of Istio's samples), then app
    - namespace: MESHTRACE_NAMESPACE, POD_NAMESPACE
    - service:   service, SERVICE_NAME, then app (the destination_service host name)
    - canonical_service: app (Istio falls back from service.istio.io/canonical-name to the app label)

    The MESHTRACE_* variables win because they exist only to configure this sidecar; anything still
    missing stays "unknown", as in Istio.
    """
    env = os.environ if environ is None else environ
    service = service.strip() if service else None
    app = _first(env, "MESHTRACE_APP") or service or _first(env, "SERVICE_NAME", "APP", "OTEL_SERVICE_NAME")
    version = _first(env, "MESHTRACE_VERSION", "SERVICE_VERSION", "VERSION")
    workload = _first(env, "MESHTRACE_WORKLOAD", "ISTIO_META_WORKLOAD_NAME")
    if workload is None and app is not None:
        workload = f"{app}-{version}" if version else app
    namespace = _first(env, "MESHTRACE_NAMESPACE", "POD_NAMESPACE")
    host = service or _first(env, "SERVICE_NAME") or app
    return Workload(
        workload=workload or _UNKNOWN,
        namespace=namespace or _UNKNOWN,
        app=app or _UNKNOWN,
        version=version or _UNKNOWN,
        service=host or _UNKNOWN,
        canonical_service=app or _UNKNOWN,
    )
