"""Access log: Envoy's default line and JSON, written off the loop, never blocking and never raising."""

from __future__ import annotations

import io
import json
import math
import threading
import time

import pytest

from meshtrace.proxy.accesslog import ENVOY_DEFAULT_FORMAT, AccessLog, format_envoy, format_json
from meshtrace.proxy.hop import Hop

START = 1_714_564_800.123  # 2024-05-01T12:00:00.123Z


def full_hop() -> Hop:
    return Hop(direction="inbound", start_time=START, method="GET", path="/reviews/1?x=y", authority="reviews:9080",
               user_agent="curl/8.5.0", request_id="a1b2c3", upstream_address="127.0.0.1:8080", status=200,
               request_bytes=0, response_bytes=295, duration_ms=12.7, upstream_service_time_ms=11.2,
               upstream_cluster="inbound|9080||", downstream_address="10.0.0.5:40000", trace_id="ab" * 16)


@pytest.mark.parametrize(("start", "shown"), [(1_714_564_800.005, "2024-05-01T12:00:00.005Z"),
                                              (1_714_564_800.04, "2024-05-01T12:00:00.040Z"),
                                              (1_714_564_859.999, "2024-05-01T12:00:59.999Z"),
                                              (1_714_564_801.0, "2024-05-01T12:00:01.000Z")])
def test_start_time_has_three_millisecond_digits(start: float, shown: str) -> None:
    hop = Hop(direction="inbound", start_time=start)
    assert format_envoy(hop).startswith(f"[{shown}] ")
    assert json.loads(format_json(hop))["start_time"] == shown


def test_envoy_default_line() -> None:
    assert format_envoy(full_hop()) == (
        '[2024-05-01T12:00:00.123Z] "GET /reviews/1?x=y HTTP/1.1" 200 - 0 295 12 11 '
        '"-" "curl/8.5.0" "a1b2c3" "reviews:9080" "127.0.0.1:8080"\n'
    )


def test_envoy_line_for_a_local_reply_without_upstream() -> None:
    hop = Hop(direction="outbound", start_time=START, method="POST", path="/x", status=503, response_flags="UF",
              response_bytes=91, duration_ms=0.4)
    assert format_envoy(hop) == (
        '[2024-05-01T12:00:00.123Z] "POST /x HTTP/1.1" 503 UF 0 91 0 - "-" "-" "-" "-" "-"\n'
    )


def test_envoy_line_for_tcp() -> None:
    hop = Hop(direction="inbound", start_time=START, protocol="tcp", request_bytes=10, response_bytes=20,
              duration_ms=1500.0, upstream_address="127.0.0.1:5432")
    assert format_envoy(hop) == '[2024-05-01T12:00:00.123Z] "- - -" 0 - 10 20 1500 - "-" "-" "-" "-" "127.0.0.1:5432"\n'


def test_field_order_is_envoys_documented_default() -> None:
    assert ENVOY_DEFAULT_FORMAT.count("%") == 2 * 15
    assert ENVOY_DEFAULT_FORMAT.startswith('[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%')
    assert ENVOY_DEFAULT_FORMAT.endswith('"%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"\n')


def test_request_controlled_values_cannot_forge_lines() -> None:
    hop = full_hop()
    hop.user_agent = 'evil" "x\nfake line'
    line = format_envoy(hop)
    assert line.count("\n") == 1
    assert '"evil\\" \\"x\\x0afake line"' in line


def test_json_line() -> None:
    record = json.loads(format_json(full_hop()))
    assert record["start_time"] == "2024-05-01T12:00:00.123Z"
    assert record["method"] == "GET"
    assert record["path"] == "/reviews/1?x=y"
    assert record["protocol"] == "HTTP/1.1"
    assert record["response_code"] == 200
    assert record["response_flags"] == "-"
    assert (record["bytes_received"], record["bytes_sent"], record["duration"]) == (0, 295, 12)
    assert record["upstream_service_time"] == 11
    assert record["authority"] == "reviews:9080"
    assert record["upstream_host"] == "127.0.0.1:8080"
    assert record["request_id"] == "a1b2c3"
    assert record["trace_id"] == "ab" * 16
    hop = full_hop()
    hop.user_agent = "x\ny\u2028"
    line = format_json(hop)
    assert line.count("\n") == 1
    assert line.isascii()


def test_lines_are_written_by_the_background_thread() -> None:
    out = io.StringIO()
    log = AccessLog(out, flush_interval=0.01)
    for _ in range(3):
        log.on_hop(full_hop())
    deadline = time.monotonic() + 2
    while out.getvalue().count("\n") < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert out.getvalue().count("\n") == 3
    log.close()
    assert log.stats()["access_log_written"] == 3


def test_json_format_option_and_close_flushes() -> None:
    out = io.StringIO()
    log = AccessLog(out, format="json", flush_interval=60)
    for _ in range(5):
        log.on_hop(full_hop())
    log.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 5
    assert all(json.loads(line)["response_code"] == 200 for line in lines)
    log.on_hop(full_hop())          # after close: counted, not written, not raised
    assert log.dropped == 1


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="envoy"):
        AccessLog(io.StringIO(), format="xml")


class BlockedStream(io.StringIO):
    """A stdout nobody reads: write blocks until released."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def write(self, text: str) -> int:
        self.release.wait(10)
        return super().write(text)


def test_a_blocked_stream_never_blocks_the_caller() -> None:
    stream = BlockedStream()
    log = AccessLog(stream, max_queue=100, flush_interval=0.001)
    hop = full_hop()
    log.on_hop(hop)
    time.sleep(0.05)                  # the writer thread is now stuck in write()
    started = time.perf_counter()
    for _ in range(10_000):
        log.on_hop(hop)
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0              # ~µs per call, not blocked on the stream
    assert log.dropped >= 10_000 - 100
    stream.release.set()
    log.close()
    written = stream.getvalue().count("\n")
    assert written + log.dropped == 10_001
    assert log.stats()["access_log_written"] == written


class BrokenStream(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError("stdout closed")


def test_a_broken_stream_is_counted_not_raised() -> None:
    log = AccessLog(BrokenStream(), flush_interval=0.001)
    log.on_hop(full_hop())
    log.close()
    log.on_hop(full_hop())
    stats = log.stats()
    assert stats["access_log_errors"] == 1
    assert stats["access_log_dropped"] == 2
    assert stats["access_log_written"] == 0


def test_a_bad_hop_is_counted_not_raised() -> None:
    log = AccessLog(io.StringIO())
    hop = full_hop()
    hop.duration_ms = math.nan        # typed fields are checked when set (compiled): a NaN one is not
    log.on_hop(hop)
    log.close()
    assert log.errors == 1
