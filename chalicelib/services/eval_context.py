"""The eval context of a stored session: its trace read back, redacted, compacted, along its chain.

What every runner judges (`GET /sessions/{id}/eval-context`, the worker, the catalog's try-it), and
the stored entries the trace viewer and the judges' tools read by position: the stored trace of a
session and, with `chain`, of its ancestors oldest first (at most 50; the walk stops at a missing
parent, a cycle or the depth limit and says so). A trace stored under the current redaction rules
is read as it is; an older one is redacted while it is read. The API gets models; the worker gets
the same object as wire dicts (`load_doc`), built without models, its compacted trace held compressed
(bench/memory).
"""

from __future__ import annotations

import gzip
import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar, cast

from chalicelib.domain.errors import DependencyUnavailable, DomainError, InvalidRequest, NotFound
from chalicelib.domain.ids import SESSION_ID_PATTERN
from chalicelib.domain.trace import TraceEntry, entry_from_json_line, entry_to_json
from chalicelib.ingest.compaction import DEFAULT_THRESHOLD_BYTES, compact, validate_threshold
from chalicelib.ingest.redaction_version import REDACTION_VERSION
from chalicelib.observability import logger
from chalicelib.services.session_input import read_trace
from chalicelib.services.session_models import ChainStop, EvalContext, EvalContextDoc, SessionRecord
from chalicelib.services.session_ports import SessionIndex, SessionObjects, SizedStream

MAX_CHAIN_DEPTH = 50


def validate_session_id(value: str, *, field: str = "session_id") -> str:
    if not SESSION_ID_PATTERN.fullmatch(value or ""):
        raise InvalidRequest(
            f"{field} must be 1-200 characters of letters, digits, '.', '_', '~' or '-', starting with "
            "a letter or digit.",
            code="invalid_session_id", details={"field": field, "pattern": SESSION_ID_PATTERN.pattern})
    return value


def read_session_record(index: SessionIndex, tenant: str, session_id: str) -> SessionRecord:
    """A stored session's record (`GET /sessions/{id}`): here, not in the sessions service, so a reader of
    eval contexts (dispatch's spend estimate) is built without the upload side."""
    validate_session_id(session_id)
    data = index.get_session(tenant, session_id)
    if data is None:
        raise NotFound(f"Session {session_id} does not exist; upload it with PUT /sessions/{session_id}.",
                       code="session_not_found")
    return SessionRecord.model_validate(data)


class ContextLoadStopped(Exception):
    """Reading a session for a run was stopped (the run's deadline passed or it was cancelled)."""


_Item = TypeVar("_Item")


def _stoppable(entries: Iterable[_Item], stop: Callable[[], bool]) -> Iterator[_Item]:
    for entry in entries:
        if stop():
            raise ContextLoadStopped
        yield entry


class EvalContextTooLarge(DomainError):
    status = 422
    code = "eval_context_too_large"


def stream_eval_context(entries: Iterable[TraceEntry], threshold: int) -> tuple[list[TraceEntry], dict[str, Any]]:
    """`ingest.build_eval_context` in one streaming pass: each entry is redacted and then compacted
    as it is read, so peak memory is the compacted trace, not the raw one. Same result, same stats."""
    from chalicelib.ingest.redaction import Redactor  # the detectors: only where a trace is redacted

    redactor = Redactor()
    trace, stats = compact(redactor.redact_all(entries), threshold)
    return trace, {**stats, "redactions": redactor.counts}


class EvalContextReader:
    """Reads eval contexts and stored entries from the trace objects and session records."""

    def __init__(self, objects: SessionObjects, index: SessionIndex,
                 get_session: Callable[[str, str], SessionRecord]) -> None:
        self._objects = objects
        self._index = index
        self._get_session = get_session

    def get_session(self, tenant: str, session_id: str) -> SessionRecord:
        return self._get_session(tenant, session_id)

    def load(self, tenant: str, session_id: str, threshold: int | str | None = DEFAULT_THRESHOLD_BYTES,
                          chain: bool = False, *, stop: Callable[[], bool] | None = None) -> EvalContext:
        """The redacted, compacted trace judges read; with `chain`, the whole continuation chain.

        `stop` is polled between entries: once it answers True the read ends with `ContextLoadStopped`.
        """
        threshold_bytes = validate_threshold(threshold)
        records, chain_stop, missing = self.chain_records(tenant, session_id, chain)
        redactions: Counter[str] = Counter()
        entries: Iterable[TraceEntry] = itertools.chain.from_iterable(
            self._redacted_trace_of(r, redactions) for r in records)
        if stop is not None:
            entries = _stoppable(entries, stop)
        trace, stats = compact(entries, threshold_bytes)
        compaction = {**stats, "redactions": dict(sorted(redactions.items()))}
        return EvalContext(session_id=session_id, session_chain=[r.session_id for r in records], trace=trace,
                           compaction=compaction, chain_incomplete=chain_stop is not None, chain_stop_reason=chain_stop,
                           missing_parent_session_id=missing)

    def load_doc(self, tenant: str, session_id: str,
                              threshold: int | str | None = DEFAULT_THRESHOLD_BYTES, chain: bool = False, *,
                              stop: Callable[[], bool] | None = None) -> EvalContextDoc:
        """`load` for the worker: the same object in wire form (`model_dump(mode="json")`),
        built without models. A trace stored under the current redaction rules is read line by line as
        plain JSON, compacted as it streams into a compressed spool (`trace_spool`: the worker's memory per
        stored byte, bench/memory), which `trace` reads entries back from; `reload(threshold)` is the same
        spool at a lower threshold, for the context fit.
        `stop` is polled between entries (the run's deadline and cancel).
        """
        from chalicelib.services.trace_spool import SpooledTrace, TraceSpool  # the worker's: off the API's path

        threshold_bytes = validate_threshold(threshold)
        records, chain_stop, missing = self.chain_records(tenant, session_id, chain)
        redactions: Counter[str] = Counter()
        entries: Iterable[dict[str, Any]] = itertools.chain.from_iterable(
            self._wire_trace_of(r, redactions) for r in records)
        if stop is not None:
            entries = _stoppable(entries, stop)
        spool = TraceSpool(threshold_bytes)
        spool.add_all(entries)
        trace = SpooledTrace(spool)
        base = {**spool.stats(threshold_bytes), "redactions": dict(sorted(redactions.items()))}
        doc: dict[str, Any] = {"session_id": session_id, "session_chain": [r.session_id for r in records],
                               "trace": trace, "compaction": base, "chain_incomplete": chain_stop is not None,
                               "chain_stop_reason": chain_stop, "missing_parent_session_id": missing}

        def reload(lower: int) -> dict[str, Any]:
            # Compaction is idempotent: the spool at a lower threshold equals loading at `lower`.
            smaller = trace.at_threshold(lower)
            return {**doc, "trace": smaller, "compaction": {**base, **smaller.stats()}}

        return EvalContextDoc(doc=doc, reload=reload)

    def session_chain(self, tenant: str, session_id: str, chain: bool) -> list[str]:
        """The session ids an eval context of `session_id` covers, oldest first (itself only without `chain`):
        positions count entries across them in this order."""
        records, _, _ = self.chain_records(tenant, session_id, chain)
        return [r.session_id for r in records]

    def stored_entries(self, tenant: str, session_chain: Sequence[str], *,
                       stop: Callable[[], bool] | None = None) -> Iterator[dict[str, Any]]:
        """The stored (redacted, uncompacted) entries of the sessions of `session_chain` (an eval context's,
        oldest first), in wire form, one at a time: entry i is the eval context's position i. What the
        judges' tools read whole outputs from, and what the trace viewer pages through. `stop` is polled
        between entries."""
        for session_id in session_chain:
            entries: Iterator[dict[str, Any]] = self._wire_trace_of(self._get_session(tenant, session_id), Counter())
            yield from (_stoppable(entries, stop) if stop is not None else entries)

    def chain_records(self, tenant: str, session_id: str, chain: bool
                       ) -> tuple[list[SessionRecord], ChainStop | None, str | None]:
        """The session and (with `chain`) its ancestors, oldest first; why and where the walk stopped early."""
        record = self._get_session(tenant, session_id)
        records = [record]
        chain_stop: ChainStop | None = None
        missing: str | None = None
        if chain:
            seen = {record.session_id}
            current = record
            while current.parent_session_id:
                parent_id = current.parent_session_id
                if parent_id in seen:
                    chain_stop = "cycle"
                    break
                if len(records) >= MAX_CHAIN_DEPTH:
                    chain_stop = "max_depth"
                    break
                data = self._index.get_session(tenant, parent_id)
                if data is None:
                    chain_stop, missing = "missing_parent", parent_id
                    break
                current = SessionRecord.model_validate(data)
                records.append(current)
                seen.add(parent_id)
            records.reverse()
        return records, chain_stop, missing

    def _redacted_trace_of(self, record: SessionRecord, redactions: Counter[str]) -> Iterator[TraceEntry]:
        """The stored trace as judges may see it: already redacted at upload under the current rules,
        or (stored before, or under older rules) redacted now."""
        if record.redaction_version == REDACTION_VERSION:
            yield from self.trace_of(record)
            redactions.update(record.redactions)
            return
        from chalicelib.ingest.redaction import Redactor  # the detectors: only for a trace stored before

        redactor = Redactor()
        yield from redactor.redact_all(self.trace_of(record))
        redactions.update(redactor.counts)

    def _wire_trace_of(self, record: SessionRecord, redactions: Counter[str]) -> Iterator[dict[str, Any]]:
        """`_redacted_trace_of` in wire form; a trace redacted under the current rules is never validated
        into models (it was validated when it was stored, by this service)."""
        if record.redaction_version != REDACTION_VERSION:
            for entry in self._redacted_trace_of(record, redactions):
                yield entry_to_json(entry)
            return
        stream = self.open_trace(record)
        try:
            with gzip.GzipFile(fileobj=cast(Any, stream), mode="rb") as gz:
                for line in gz:
                    if line.strip():
                        yield entry_from_json_line(line)
        finally:
            stream.close()
        redactions.update(record.redactions)

    def open_trace(self, record: SessionRecord) -> SizedStream:
        stream = self._objects.open(record.storage.key)
        if stream is None:
            logger.error("session trace object missing", extra={"session_id": record.session_id})
            raise DependencyUnavailable(f"The stored trace of session {record.session_id} is unavailable; "
                                        "upload the session again.", code="trace_unavailable")
        return stream

    def trace_of(self, record: SessionRecord) -> Iterator[TraceEntry]:
        stream = self.open_trace(record)
        try:
            yield from read_trace(stream)
        finally:
            stream.close()
