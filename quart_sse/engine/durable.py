"""Durable Streams: the protocol's decisions, free of HTTP, over a durable-stream store.

The protocol (github.com/durable-streams/durable-streams, PROTOCOL.md): append-only
streams at URLs, offsets, catch-up and live reads, closure, idempotent producers, forks,
TTL.  Here are the parts that decide: offsets and cursors, JSON mode, and every change of
a stream as a pure function of its metadata (:class:`~quart_sse.stores.durable_base.Update`),
which a store applies atomically.  :mod:`quart_sse.http.durable` turns the outcomes into
statuses and headers; :mod:`quart_sse.engine.durable_chat` serves chat answers.

Offsets are ``0000000000000000_NNNNNNNNNNNNNNNN``: N counts the records (appends) before
the position, so they sort as strings and never repeat; ``-1`` and ``now`` are the
protocol's sentinels and never issued.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from quart_sse import codes, jsontext
from quart_sse.codes import Refused
from quart_sse.config import Settings
from quart_sse.ids import new_id
from quart_sse.stores.durable_base import Change, DurableMeta, DurableStore, Update

log = logging.getLogger("quart_sse.engine.durable")

ZERO = "0000000000000000_"
_OFFSET = re.compile(r"(\d{1,20})_(\d{1,20})")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
MAX_SAFE = 2**53 - 1
SWEEP_BATCH = 500
"""Expired streams one step of the sweep takes."""
READ_BUDGET = 1 << 20
"""Bytes of records one catch-up read returns at most (always at least one record)."""
SSE_LIFETIME = 60.0
"""Seconds an SSE read lasts before the server ends it (PROTOCOL.md 8.2: ~60 s, for CDNs)."""
CURSOR_EPOCH = 1728432000.0  # 2024-10-09T00:00:00Z, the protocol's default
CURSOR_INTERVAL = 20
PRODUCER_TTL = 7 * 24 * 3600.0
MAX_PRODUCERS = 10_000
"""Producer ids one stream remembers; past it the least recently used is forgotten."""


class DurableRefused(Refused):
    """A refusal of the protocol, with the headers it must carry (``Producer-Epoch``…)."""

    def __init__(self, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(code, message)
        self.headers = headers or {}


def durable_url(stream_id: str) -> str:
    """Where a chat answer reads as a Durable Stream (:mod:`quart_sse.http.durable_chat`)."""
    return f"/v1/stream/chat/{stream_id}"


def offset(n: int) -> str:
    """The offset after ``n`` records."""
    return f"{ZERO}{n:016d}"


def parse_offset(raw: str) -> int | None:
    """The record count of an offset this server issues; None for ``now``; 400 otherwise."""
    if raw == "-1":
        return 0
    if raw == "now":
        return None
    match = _OFFSET.fullmatch(raw)
    if match is None:
        raise DurableRefused(codes.INVALID_REQUEST, f"malformed offset {raw[:80]!r}")
    return int(match[2])


def parse_decimal(name: str, raw: str, limit: int = MAX_SAFE) -> int:
    """A non-negative decimal integer without sign, leading zeros or exponent; 400 otherwise."""
    if _DECIMAL.fullmatch(raw) is None or int(raw) > limit:
        raise DurableRefused(
            codes.INVALID_REQUEST, f"{name} must be a non-negative integer, not {raw[:40]!r}"
        )
    return int(raw)


def parse_expires_at(raw: str) -> float:
    """An RFC 3339 timestamp as Unix seconds; 400 otherwise."""
    text = raw.strip()
    if text.endswith(("z", "Z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise DurableRefused(
            codes.INVALID_REQUEST, f"Stream-Expires-At is not an RFC 3339 time: {raw[:60]!r}"
        ) from None
    if moment.tzinfo is None or "T" not in text.upper():
        raise DurableRefused(
            codes.INVALID_REQUEST, f"Stream-Expires-At needs a date, a time and a zone: {raw[:60]!r}"
        )
    return moment.timestamp()


def media_type(content_type: str | None) -> str:
    """``application/json; charset=utf-8`` → ``application/json``."""
    return (content_type or "").split(";")[0].strip().lower()


def is_json(content_type: str) -> bool:
    return media_type(content_type) == "application/json"


_UTF8_CHARSET = re.compile(r";\s*charset\s*=\s*\"?utf-?8\"?\s*(;|$)", re.IGNORECASE)


def text_record(content_type: str, body: bytes) -> bytes:
    """``body`` as a record of a stream of ``content_type``: checked to be UTF-8 (without
    surrogates, RFC 3629) when the type says ``charset=utf-8``, else taken as it is; 400
    for a body that is not what its stream declares (readers would disagree on it: a
    catch-up read passes the bytes on, an SSE read replaces them)."""
    if _UTF8_CHARSET.search(content_type):
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DurableRefused(
                codes.INVALID_REQUEST,
                f"the body is not UTF-8 (byte {exc.start}), as its stream's charset says",
            ) from None
    return body


def cursor(client: str | None, now: float | None = None) -> str:
    """The protocol's cursor (section 8.1): the 20 s interval number, strictly above the
    client's when the client's is not behind."""
    current = int(((now if now is not None else time.time()) - CURSOR_EPOCH) // CURSOR_INTERVAL)
    if client is None or not client.isdigit() or int(client) < current:
        return str(current)
    return str(int(client) + max(1, math.ceil(random.randint(1, 3600) / CURSOR_INTERVAL)))


def json_record(body: bytes, *, create: bool) -> tuple[bytes, int]:
    """A JSON append as one record: its values (an array's elements, one level) joined by
    commas, and how many; 400 for invalid JSON, or an empty array outside a create."""
    try:
        value = jsontext.loads(body)
    except jsontext.NotJSON as exc:
        raise DurableRefused(codes.INVALID_JSON, str(exc)) from None
    except jsontext.NotUnicode as exc:
        raise DurableRefused(codes.INVALID_JSON, f"the body's string {exc}") from None
    values = value if isinstance(value, list) else [value]
    if not values and not create:
        raise DurableRefused(codes.INVALID_REQUEST, "an empty JSON array appends nothing")
    return _join(values), len(values)


def _join(values: Sequence[Any]) -> bytes:
    try:
        return ",".join(json.dumps(v, separators=(",", ":"), ensure_ascii=False) for v in values).encode()
    except UnicodeEncodeError:  # a lone surrogate in a record kept before they were refused
        return ",".join(json.dumps(v, separators=(",", ":")) for v in values).encode()


def json_values(record: bytes) -> list[Any]:
    values: list[Any] = json.loads(b"[" + record + b"]")
    return values


@dataclass(frozen=True)
class Config:
    """What a create asks for (compared by an idempotent create)."""

    content_type: str
    ttl: int | None = None
    expires_at: str | None = None
    expires_ts: float | None = None
    closed: bool = False
    forked_from: str | None = None
    fork_offset: int | None = None
    fork_sub: int = 0


@dataclass(frozen=True)
class Producer:
    """``Producer-Id``, ``Producer-Epoch``, ``Producer-Seq`` of an append."""

    id: str
    epoch: int
    seq: int


@dataclass(frozen=True)
class Appended:
    """An append's outcome: the tail after it, whether it was a duplicate (nothing added),
    the highest sequence accepted for the producer, and whether the stream is now closed."""

    tail: int
    duplicate: bool = False
    producer_seq: int | None = None
    closed: bool = False


@dataclass(frozen=True)
class Chunk:
    """A read: records after the asked offset (with the offset after each), the tail, and
    whether the stream was closed when read."""

    records: list[tuple[int, bytes]]
    tail: int
    closed: bool

    @property
    def end(self) -> int:
        return self.records[-1][0] if self.records else self.tail

    @property
    def up_to_date(self) -> bool:
        return self.end >= self.tail


def _too_large(size: int, limit: int) -> DurableRefused:
    return DurableRefused(
        codes.STREAM_TOO_LARGE,
        f"the stream would hold {size} bytes, past its {limit} (DURABLE_MAX_STREAM_BYTES)",
    )


def _removal(meta: DurableMeta) -> Update[str | None]:
    """Removing ``meta``'s stream (a delete, an expiry): kept, deleted for every reader (410),
    while forks read through it; else gone, with its fork source (if any) to release."""
    if meta.refs > 0:
        meta.soft_deleted = True
        return Update(None, meta)
    return Update(meta.forked_from)


def _not_found(path: str) -> DurableRefused:
    return DurableRefused(codes.STREAM_NOT_FOUND, f"no stream {path[:120]!r}")


def _check_producer(meta: DurableMeta, producer: Producer, now: float) -> int | None:
    """Kafka-style producer check (PROTOCOL.md 5.2.1): None to accept, else the highest
    sequence already accepted (a duplicate); refusals for a stale epoch or a gap."""
    for pid, (_, _, updated) in list(meta.producers.items()):
        if now - updated > PRODUCER_TTL:
            del meta.producers[pid]
    state = meta.producers.get(producer.id)
    if state is None:
        if producer.seq != 0:
            raise _gap(0, producer.seq)
        return None
    epoch, last = int(state[0]), int(state[1])
    if producer.epoch < epoch:
        raise DurableRefused(
            codes.PRODUCER_STALE_EPOCH,
            f"producer epoch {producer.epoch} is stale (now {epoch})",
            {"Producer-Epoch": str(epoch)},
        )
    if producer.epoch > epoch:
        if producer.seq != 0:
            raise DurableRefused(codes.INVALID_REQUEST, "a new producer epoch starts at sequence 0")
        return None
    if producer.seq <= last:
        return last
    if producer.seq == last + 1:
        return None
    raise _gap(last + 1, producer.seq)


def _gap(expected: int, received: int) -> DurableRefused:
    return DurableRefused(
        codes.PRODUCER_SEQUENCE_GAP,
        f"producer sequence gap: expected {expected}, received {received}",
        {"Producer-Expected-Seq": str(expected), "Producer-Received-Seq": str(received)},
    )


def _remember(meta: DurableMeta, producer: Producer, now: float) -> None:
    meta.producers.pop(producer.id, None)
    meta.producers[producer.id] = [producer.epoch, producer.seq, now]
    while len(meta.producers) > MAX_PRODUCERS:
        del meta.producers[next(iter(meta.producers))]


def _same_close(meta: DurableMeta, producer: Producer | None) -> bool:
    return producer is not None and meta.closed_by == [producer.id, producer.epoch, producer.seq]


@dataclass(frozen=True)
class Bounds:
    """What one client may cost: ``DURABLE_MAX_STREAM_BYTES`` (bytes of records per
    stream), ``DURABLE_MAX_STREAMS_PER_OWNER`` and ``DURABLE_MAX_STREAMS`` (streams held),
    ``DURABLE_MAX_BYTES`` (bytes of records the memory store holds), and
    ``DURABLE_SWEEP_INTERVAL`` (seconds between sweeps of expired streams)."""

    max_stream_bytes: int = 64 << 20
    max_streams_per_owner: int = 1000
    max_streams: int = 100_000
    max_bytes: int = 1 << 30
    sweep_interval: float = 10.0


class DurableStreams:
    """The protocol's operations on one store (``owner``: the caller's owner id, None when
    the server has no keys; ``sees``: whether the caller sees a stream of that owner;
    ``quota``: whose count a new stream is under, the client's key).

    Between :meth:`connect` and :meth:`aclose` one task of the process sweeps expired
    streams every ``bounds.sweep_interval`` seconds, so that a stream nobody touches again
    still goes (each expiry is the same change a read past it makes)."""

    def __init__(
        self, store: DurableStore, long_poll_timeout: float, sse_lifetime: float, bounds: Bounds = Bounds()
    ) -> None:
        self.store = store
        self.long_poll_timeout = long_poll_timeout
        self.sse_lifetime = sse_lifetime
        self.bounds = bounds
        self._sweeper: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        await self.store.connect()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="durable-sweeper")

    async def aclose(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        await self.store.aclose()

    async def sweep(self) -> int:
        """Expire every stream whose expiry has passed; how many were found."""
        swept = 0
        while True:
            due = await self.store.due(time.time(), SWEEP_BATCH)
            for path in due:
                await self._expire(path)
            swept += len(due)
            if len(due) < SWEEP_BATCH:
                return swept
            await asyncio.sleep(0)  # a large sweep lets requests in between its batches

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.bounds.sweep_interval)
            try:
                await self.sweep()
            except Refused as exc:  # the store is unreachable: the next sweep tries again
                log.warning("durable streams: sweep skipped: %s", exc.message)

    # Lookups ---------------------------------------------------------------------------------

    async def meta(self, path: str, caller_sees: Any, *, gone_ok: bool = False) -> DurableMeta:
        """The stream's metadata; 404 when missing, expired or not the caller's; 410 when
        deleted while forks read through it (unless ``gone_ok``)."""
        meta = await self.store.get(path)
        if meta is not None and meta.expired(time.time()):
            await self._expire(path)
            meta = await self.store.get(path)
        if meta is None or not caller_sees(meta.owner):
            raise _not_found(path)
        if meta.soft_deleted and not gone_ok:
            raise DurableRefused(codes.STREAM_GONE, f"stream {path[:120]!r} was deleted")
        return meta

    async def _expire(self, path: str) -> None:
        def change(meta: DurableMeta | None, now: float) -> Update[str | None]:
            if meta is None or not meta.expired(now) or (meta.refs > 0 and meta.soft_deleted):
                return Update(None, keep=True)
            return _removal(meta)

        await self._remove(path, change)

    async def touch(self, path: str) -> None:
        """A read or write: the TTL counts again from now."""

        def change(meta: DurableMeta | None, now: float) -> Update[None]:
            if meta is None or meta.ttl is None:
                return Update(None, keep=True)
            meta.accessed = now
            return Update(None, meta)

        await self.store.update(path, change)

    # Create, fork, delete --------------------------------------------------------------------

    async def create(
        self,
        path: str,
        config: Config,
        owner: str | None,
        caller_sees: Any,
        body: bytes,
        quota: str = "",
    ) -> tuple[bool, DurableMeta]:
        """``PUT``: (created, metadata); 409 when it exists otherwise, 404/409/400 for a
        fork whose source is missing, gone or shorter than the fork offset; for a new
        stream, 429 ``too_many_durable_streams`` when ``quota`` holds
        ``DURABLE_MAX_STREAMS_PER_OWNER`` streams, 507 ``durable_store_full`` when the store
        holds ``DURABLE_MAX_STREAMS``, 413 ``stream_too_large`` for a body past
        ``DURABLE_MAX_STREAM_BYTES``."""
        existing = await self.store.get(path)
        now = time.time()
        if existing is not None and existing.expired(now):
            await self._expire(path)
            existing = await self.store.get(path)
        if existing is None:
            await self._check_room(quota, now)
        records: list[bytes] = []
        content_type = config.content_type
        source: DurableMeta | None = None
        if config.forked_from is not None:
            source = await self._take_source(config, caller_sees)
            content_type = content_type or source.content_type
        try:
            fork_at = source.tail if source is not None and config.fork_offset is None else config.fork_offset
            if source is not None and config.fork_sub:
                records.append(
                    await self._sub_prefix(config.forked_from or "", source, fork_at or 0, config.fork_sub)
                )
            if body:
                if is_json(content_type):
                    record, count = json_record(body, create=True)
                    if count:
                        records.append(record)
                else:
                    records.append(text_record(content_type, body))
            size = sum(len(record) for record in records)
            if size > self.bounds.max_stream_bytes:
                raise _too_large(size, self.bounds.max_stream_bytes)
            self._check_bytes(size)
            result = await self.store.update(
                path,
                _create_change(config, content_type, owner, quota, caller_sees, source, fork_at, records),
            )
        except BaseException:
            if source is not None:
                await self._release(config.forked_from or "")
            raise
        if not result[0] and source is not None:  # an idempotent re-create took no new reference
            await self._release(config.forked_from or "")
        return result

    def _check_bytes(self, adding: int) -> None:
        """507 when ``adding`` bytes of records would take the store past DURABLE_MAX_BYTES."""
        held = self.store.bytes_held()
        if held is not None and adding and held + adding > self.bounds.max_bytes:
            raise DurableRefused(
                codes.DURABLE_STORE_FULL,
                f"the server holds {held} bytes of durable streams, {adding} more would pass its most "
                "(DURABLE_MAX_BYTES); try again when some are deleted or expire",
            )

    async def _check_room(self, quota: str, now: float) -> None:
        mine, everyone = await self.store.count(quota, now)
        bounds = self.bounds
        if everyone >= bounds.max_streams:
            raise DurableRefused(
                codes.DURABLE_STORE_FULL,
                f"the server holds {everyone} durable streams, its most (DURABLE_MAX_STREAMS); "
                "try again when some are deleted or expire",
            )
        if mine >= bounds.max_streams_per_owner:
            raise DurableRefused(
                codes.TOO_MANY_DURABLE_STREAMS,
                f"this client holds {mine} durable streams, its most (DURABLE_MAX_STREAMS_PER_OWNER); "
                "delete one first",
            )

    async def _take_source(self, config: Config, caller_sees: Any) -> DurableMeta:
        source_path = config.forked_from or ""
        meta = await self.store.get(source_path)
        if meta is not None and meta.expired(time.time()):
            await self._expire(source_path)

        def change(meta: DurableMeta | None, now: float) -> Update[DurableMeta]:
            if meta is None or meta.expired(now) or not caller_sees(meta.owner):
                raise DurableRefused(codes.STREAM_NOT_FOUND, f"no source stream {source_path[:120]!r}")
            if meta.soft_deleted:
                raise DurableRefused(codes.STREAM_EXISTS, f"source stream {source_path[:120]!r} was deleted")
            if config.content_type and media_type(config.content_type) != media_type(meta.content_type):
                raise DurableRefused(
                    codes.CONTENT_TYPE_MISMATCH, "the fork's content type differs from its source's"
                )
            if config.fork_offset is not None and config.fork_offset > meta.tail:
                raise DurableRefused(codes.INVALID_REQUEST, "the fork offset is past the source's tail")
            meta.refs += 1
            return Update(meta, meta)

        return await self.store.update(source_path, change)

    async def _sub_prefix(self, source_path: str, source: DurableMeta, at: int, sub: int) -> bytes:
        """The first ``sub`` bytes (or JSON values) of the source's record after offset ``at``."""
        found = await self._collect(source_path, source, at + 1, at + 1)
        if not found:
            raise DurableRefused(codes.INVALID_REQUEST, "no record follows the fork offset for a sub-offset")
        record = found[0][1]
        if is_json(source.content_type):
            values = json_values(record)
            if sub > len(values):
                raise DurableRefused(
                    codes.INVALID_REQUEST, "the fork sub-offset overshoots the record's values"
                )
            return _join(values[:sub])
        if sub > len(record):
            raise DurableRefused(codes.INVALID_REQUEST, "the fork sub-offset overshoots the record's bytes")
        return record[:sub]

    async def _release(self, path: str) -> None:
        """A fork of ``path`` went: one reference less; a deleted source goes with its last."""

        def change(meta: DurableMeta | None, now: float) -> Update[str | None]:
            if meta is None:
                return Update(None, keep=True)
            meta.refs = max(meta.refs - 1, 0)
            if meta.refs == 0 and meta.soft_deleted:
                return Update(meta.forked_from)
            return Update(None, meta)

        await self._remove(path, change)

    async def _remove(self, path: str, change: Change[str | None]) -> None:
        """Run ``change`` on ``path``; when it removed the stream, release its fork source."""
        parent = await self.store.update(path, change)
        if parent is not None:
            await self._release(parent)

    async def delete(self, path: str, caller_sees: Any) -> None:
        """``DELETE``: gone at once, or kept (410 to all) while forks read through it."""
        await self.meta(path, caller_sees)

        def change(meta: DurableMeta | None, now: float) -> Update[str | None]:
            if meta is None or not caller_sees(meta.owner):
                raise _not_found(path)
            if meta.soft_deleted:
                raise DurableRefused(codes.STREAM_GONE, f"stream {path[:120]!r} was deleted")
            return _removal(meta)

        await self._remove(path, change)

    # Append and close ------------------------------------------------------------------------

    async def append(
        self,
        path: str,
        caller_sees: Any,
        body: bytes,
        content_type: str | None,
        seq: str | None,
        producer: Producer | None,
        close: bool,
    ) -> Appended:
        """``POST``: append ``body`` (none: close only), as the checks of PROTOCOL.md 5.2 allow;
        413 ``stream_too_large`` when the stream's records would pass
        ``DURABLE_MAX_STREAM_BYTES``."""
        meta = await self.meta(path, caller_sees)
        record = b""
        if body:
            if content_type is None:
                raise DurableRefused(codes.INVALID_REQUEST, "an append needs a Content-Type")
            if is_json(meta.content_type):
                record = json_record(body, create=False)[0]
            else:
                record = text_record(meta.content_type, body)
        limit = self.bounds.max_stream_bytes
        if len(record) > limit:
            raise _too_large(len(record), limit)
        self._check_bytes(len(record))
        result = await self.store.update(
            path,
            _append_change(path, caller_sees, record, content_type, seq, producer, close, meta.uid, limit),
        )
        await self.touch(path)
        return result

    # Reads -----------------------------------------------------------------------------------

    async def read(self, path: str, meta: DurableMeta, after: int, budget: int = READ_BUDGET) -> Chunk:
        """Records after offset ``after``, at most ``budget`` bytes (at least one record)."""
        records: list[tuple[int, bytes]] = []
        first, size = after + 1, 0
        while first <= meta.tail and size < budget:
            last = min(meta.tail, first + 255)
            page = await self._collect(path, meta, first, last)
            if not page:
                break
            for number, data in page:
                if records and size + len(data) > budget:
                    return Chunk(records, meta.tail, meta.closed)
                records.append((number, data))
                size += len(data)
            first = last + 1
        return Chunk(records, meta.tail, meta.closed)

    async def _collect(self, path: str, meta: DurableMeta, first: int, last: int) -> list[tuple[int, bytes]]:
        """Records ``first``..``last`` of the stream, a fork's first ones from its sources."""
        found: list[tuple[int, bytes]] = []
        if first <= meta.base and meta.forked_from is not None:
            source = await self.store.get(meta.forked_from)
            if source is not None:
                found += await self._collect(meta.forked_from, source, first, min(last, meta.base))
        start = max(first, meta.base + 1)
        if start <= last:
            own = await self.store.records(path, start, last)
            found += [(start + i, data) for i, data in enumerate(own)]
        return found

    async def wait(self, path: str, tail: int, block: float) -> None:
        await self.store.wait(path, tail, block)


def _create_change(
    config: Config,
    content_type: str,
    owner: str | None,
    quota: str,
    caller_sees: Any,
    source: DurableMeta | None,
    fork_at: int | None,
    records: list[bytes],
) -> Change[tuple[bool, DurableMeta]]:
    def change(meta: DurableMeta | None, now: float) -> Update[tuple[bool, DurableMeta]]:
        if meta is not None and not meta.expired(now):
            if meta.soft_deleted:
                raise DurableRefused(codes.STREAM_EXISTS, "a deleted stream with forks still holds this path")
            same = (
                caller_sees(meta.owner)
                and media_type(meta.content_type) == media_type(content_type)
                and meta.ttl == config.ttl
                and meta.expires_at == config.expires_at
                and meta.closed == config.closed
                and meta.forked_from == config.forked_from
                and (config.fork_offset is None or config.fork_offset == meta.base)
                and meta.fork_sub == config.fork_sub
            )
            if not same:
                raise DurableRefused(codes.STREAM_EXISTS, "the stream exists with another configuration")
            return Update((False, meta), keep=True)
        ttl, expires_at, expires_ts = config.ttl, config.expires_at, config.expires_ts
        if source is not None and ttl is None and expires_at is None:
            ttl, expires_at, expires_ts = source.ttl, source.expires_at, source.expires_ts
        base = fork_at or 0
        created = DurableMeta(
            uid=new_id(),
            content_type=content_type or "application/octet-stream",
            created=now,
            accessed=now,
            owner=owner,
            ttl=ttl,
            expires_at=expires_at,
            expires_ts=expires_ts,
            tail=base + len(records),
            size=sum(len(record) for record in records),
            quota=quota,
            base=base,
            forked_from=config.forked_from,
            fork_sub=config.fork_sub,
            closed=config.closed,
        )
        return Update((True, created), created, records)

    return change


def _append_change(
    path: str,
    caller_sees: Any,
    record: bytes,
    content_type: str | None,
    seq: str | None,
    producer: Producer | None,
    close: bool,
    uid: str,
    max_bytes: int,
) -> Change[Appended]:
    def change(meta: DurableMeta | None, now: float) -> Update[Appended]:
        if meta is None or meta.uid != uid or not caller_sees(meta.owner):
            raise _not_found(path)
        if meta.soft_deleted:
            raise DurableRefused(codes.STREAM_GONE, f"stream {path[:120]!r} was deleted")
        if meta.closed:
            if _same_close(meta, producer):
                assert producer is not None
                return Update(Appended(meta.tail, True, producer.seq, True), keep=True)
            if producer is None and not record:  # closing again: idempotent
                return Update(Appended(meta.tail, False, None, True), keep=True)
            if producer is not None and producer.epoch < int(meta.producers.get(producer.id, [0])[0]):
                _check_producer(meta, producer, now)  # 403: a fenced producer is told so first
            raise DurableRefused(
                codes.STREAM_CLOSED, "the stream is closed", {"Stream-Next-Offset": offset(meta.tail)}
            )
        if record and content_type is not None and media_type(content_type) != media_type(meta.content_type):
            raise DurableRefused(
                codes.CONTENT_TYPE_MISMATCH, f"the stream's content type is {meta.content_type}"
            )
        if producer is not None:
            last = _check_producer(meta, producer, now)
            if last is not None:
                return Update(Appended(meta.tail, True, last, meta.closed), keep=True)
        if record and meta.size + len(record) > max_bytes:
            raise _too_large(meta.size + len(record), max_bytes)
        if seq is not None and record:
            if meta.stream_seq is not None and seq <= meta.stream_seq:
                raise DurableRefused(
                    codes.SEQUENCE_CONFLICT, f"Stream-Seq {seq[:40]!r} is not above the last one"
                )
            meta.stream_seq = seq
        if producer is not None:
            _remember(meta, producer, now)
        added = [record] if record else []
        meta.tail += len(added)
        meta.size += len(record)
        if close:
            meta.closed = True
            meta.closed_by = [producer.id, producer.epoch, producer.seq] if producer is not None else None
        meta.accessed = now
        return Update(
            Appended(meta.tail, False, producer.seq if producer else None, meta.closed), meta, added
        )

    return change


def create_durable(settings: Settings) -> DurableStreams:
    """The Durable Streams of this server: in memory, or on ``REDIS_URL``'s Redis."""
    if settings.redis_url:
        from quart_sse.stores.durable_redis import RedisDurableStore

        store: DurableStore = RedisDurableStore(settings.redis_url, timeout=settings.redis_timeout)
    else:
        from quart_sse.stores.durable_memory import MemoryDurableStore

        store = MemoryDurableStore()
    bounds = Bounds(
        max_stream_bytes=settings.durable_max_stream_bytes,
        max_streams_per_owner=settings.durable_max_streams_per_owner,
        max_streams=settings.durable_max_streams,
        max_bytes=settings.durable_max_bytes,
        sweep_interval=settings.durable_sweep_interval,
    )
    return DurableStreams(store, settings.durable_long_poll_timeout, SSE_LIFETIME, bounds)
