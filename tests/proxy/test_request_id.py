"""Request ids the sidecar makes are version-4 UUIDs, all different, and a forked child never repeats its parent's;
the next batch is drawn while the loop is idle, not by a request."""

from __future__ import annotations

import os
import uuid

import pytest

from meshtrace.proxy import request_id
from meshtrace.proxy.request_id import new_request_id, new_request_id_pair


def test_ids_are_distinct_version_4_uuids() -> None:
    ids = [new_request_id() for _ in range(2000)]     # several refills of the buffer
    assert len(set(ids)) == len(ids)
    for value in ids[:600]:
        parsed = uuid.UUID(value.decode("ascii"))
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed).encode() == value


def test_forked_child_does_not_repeat_the_parents_ids() -> None:
    new_request_id()                                  # a buffer with ids still unused is now held
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:                                      # pragma: no cover - runs in the child
        os.close(read)
        os.write(write, b"".join(new_request_id() for _ in range(10)))
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child = pipe.read()
    os.waitpid(pid, 0)
    parent = b"".join(new_request_id() for _ in range(10))
    child_ids = {child[i:i + 36] for i in range(0, len(child), 36)}
    parent_ids = {parent[i:i + 36] for i in range(0, len(parent), 36)}
    assert len(child_ids) == 10
    assert not child_ids & parent_ids


def test_the_pair_is_one_id_as_bytes_and_as_text() -> None:
    pairs = [new_request_id_pair() for _ in range(600)]     # across a refill
    assert all(text.encode("ascii") == value for value, text in pairs)
    assert len({value for value, _ in pairs}) == len(pairs)


def test_prefill_draws_the_next_batch_ahead_so_no_request_waits_for_one(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_randomness(size: int) -> bytes:
        raise AssertionError("a request drew a batch")

    request_id._forget_batch()                        # as a forked child starts: nothing drawn, nothing ahead
    while request_id._ids.at == 0 or len(request_id._ids.batch) - request_id._ids.at >= 40 * 36:
        new_request_id()                              # into the current batch's last 40 ids
    monkeypatch.setattr(os, "urandom", no_randomness)
    left = (len(request_id._ids.batch) - request_id._ids.at) // 36
    with pytest.raises(AssertionError):
        request_id.prefill()                          # fewer than 64 left: it draws (here, it would)
    monkeypatch.undo()
    request_id.prefill()
    monkeypatch.setattr(os, "urandom", no_randomness)
    request_id.prefill()                              # drawn already: nothing more
    ids = [new_request_id() for _ in range(left + 200)]     # past the end of the batch, into the one drawn ahead
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(value.decode("ascii")).version == 4 for value in ids)
