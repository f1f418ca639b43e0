"""SessionService with in-memory fakes: storage ordering, failure cleanup, limits, chains, eval context."""

from __future__ import annotations

import gzip
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import pytest

from chalicelib.domain.errors import DependencyUnavailable, Forbidden, InvalidRequest, NotFound, PayloadTooLarge
from chalicelib.domain.principal import Principal
from chalicelib.domain.session_uploads import SessionUploadJob
from chalicelib.domain.trace import TextEntry, ToolInvocation, ToolResult, TraceEntry
from chalicelib.ingest import build_eval_context, iter_jsonl_lines, parse_session
from chalicelib.ingest.redaction import REDACTION_VERSION
from chalicelib.services.sessions import (
    MAX_CHAIN_DEPTH,
    EvalContext,
    SessionDetails,
    SessionService,
    UploadAccepted,
    UploadRequest,
    stream_eval_context,
    validate_session_id,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sessions"
BOB = Principal(tenant="acme", user="bob")


# -- fakes -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Stored:
    key: str
    etag: str
    version_id: str | None
    size: int


@dataclass(frozen=True)
class _Presigned:
    url: str
    headers: dict[str, str]


class _Stream(io.BytesIO):
    @property
    def size(self) -> int:
        return len(self.getvalue())


class FakeObjects:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.puts = 0
        self.fail_reads = False

    def trace_key(self, tenant: str, session_id: str) -> str:
        return f"sessions/{tenant}/{session_id}/trace.jsonl.gz"

    def upload_key(self, tenant: str, upload_id: str) -> str:
        return f"uploads/{tenant}/{upload_id}"

    def put_trace(self, key: str, body: IO[bytes], size: int, *, tags: Any = None) -> _Stored:
        self.puts += 1
        self.data[key] = body.read()
        assert len(self.data[key]) == size
        return _Stored(key=key, etag=f"etag-{self.puts}", version_id=None, size=size)

    def open(self, key: str) -> _Stream | None:
        if self.fail_reads:
            raise DependencyUnavailable("storage down", code="storage_unavailable")
        return _Stream(self.data[key]) if key in self.data else None

    def delete(self, key: str) -> None:
        self.data.pop(key, None)

    def presign_put(self, key: str, *, expires_in: int, content_type: str,
                    content_length: int | None = None) -> _Presigned:
        return _Presigned(url=f"https://s3.test/{key}?expires={expires_in}",
                          headers={"x-amz-server-side-encryption": "aws:kms"})


class FakeIndex:
    def __init__(self) -> None:
        self.sessions: dict[tuple[str, str], dict[str, Any]] = {}
        self.uploads: dict[tuple[str, str], tuple[dict[str, Any], int]] = {}
        self.leaves: dict[tuple[str, str], str] = {}
        self.fail_put_session = False

    def get_session(self, tenant: str, session_id: str) -> dict[str, Any] | None:
        return self.sessions.get((tenant, session_id))

    def put_session(self, tenant: str, session_id: str, record: dict[str, Any]) -> dict[str, Any] | None:
        if self.fail_put_session:
            raise DependencyUnavailable("table down", code="storage_unavailable")
        old = self.sessions.get((tenant, session_id))
        self.sessions[(tenant, session_id)] = json.loads(json.dumps(record))
        return old

    def delete_session(self, tenant: str, session_id: str) -> None:
        self.sessions.pop((tenant, session_id), None)

    def list_sessions(self, tenant: str, *, limit: int, cursor: str | None = None
                      ) -> tuple[list[dict[str, Any]], str | None]:
        items = sorted((r for (t, _), r in self.sessions.items() if t == tenant),
                       key=lambda r: r["uploaded_at"], reverse=True)
        return items[:limit], None

    def put_upload(self, tenant: str, upload_id: str, record: dict[str, Any], *, expires_at: int) -> None:
        self.uploads[(tenant, upload_id)] = (record, expires_at)

    def get_upload(self, tenant: str, upload_id: str, *, now_epoch: int) -> dict[str, Any] | None:
        found = self.uploads.get((tenant, upload_id))
        return found[0] if found and found[1] > now_epoch else None

    def delete_upload(self, tenant: str, upload_id: str) -> None:
        self.uploads.pop((tenant, upload_id), None)

    def claim_upload(self, tenant: str, upload_id: str) -> bool:
        ticket = self.uploads.get((tenant, upload_id))
        if ticket is None or ticket[0].get("status", "pending") != "pending":
            return False
        ticket[0]["status"] = "processing"
        return True

    def finish_upload(self, tenant: str, upload_id: str, outcome: dict[str, Any]) -> None:
        if (tenant, upload_id) in self.uploads:
            self.uploads[(tenant, upload_id)][0].update(outcome)

    def put_leaf(self, tenant: str, leaf_uuid: str, session_id: str) -> None:
        self.leaves[(tenant, leaf_uuid)] = session_id

    def get_leaf(self, tenant: str, leaf_uuid: str) -> str | None:
        return self.leaves.get((tenant, leaf_uuid))


class FixedClock:
    def __init__(self) -> None:
        self.at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.at

    def monotonic(self) -> float:
        return 0.0


@pytest.fixture
def objects() -> FakeObjects:
    return FakeObjects()


@pytest.fixture
def index() -> FakeIndex:
    return FakeIndex()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
def service(objects: FakeObjects, index: FakeIndex, clock: FixedClock) -> SessionService:
    ids = iter(f"{n:032x}" for n in range(1, 1000))
    return SessionService(objects, index, clock, new_id=lambda: next(ids))


def native(n_results: int = 1, output: str = "ok") -> bytes:
    trace: list[dict[str, Any]] = [{"kind": "user_message", "timestamp": "2026-01-01T00:00:00Z", "text": "go"}]
    for i in range(n_results):
        trace += [{"kind": "tool_invocation", "timestamp": "2026-01-01T00:00:01Z", "tool": "Bash",
                   "call_id": f"c{i}", "arguments": {"command": "ls"}},
                  {"kind": "tool_result", "timestamp": "2026-01-01T00:00:02Z", "tool": "Bash", "call_id": f"c{i}",
                   "output": output}]
    return json.dumps({"trace": trace}).encode()


def fixture_entries(name: str, fmt: str) -> list[TraceEntry]:
    with (FIXTURES / name).open("rb") as handle:
        return list(parse_session(fmt, iter_jsonl_lines(handle)))


# -- ids -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["a", "0b1c", "123e4567-e89b-12d3-a456-426614174000", "meta.session_v2~x",
                                   "a" * 200])
def test_url_safe_ids_are_accepted(value: str) -> None:
    assert validate_session_id(value) == value


@pytest.mark.parametrize("value", ["", ".", "..", "-lead", "a" * 201, "with space", "a/b", "a#b", "a?b", "é",
                                   "a%20b"])
def test_other_ids_are_rejected(value: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        validate_session_id(value)
    assert err.value.code == "invalid_session_id"


# -- storing ---------------------------------------------------------------------------------------

def test_nothing_is_written_until_the_whole_input_parsed(service: SessionService, objects: FakeObjects,
                                                         index: FakeIndex) -> None:
    good = (FIXTURES / "claude-code-full.jsonl").read_bytes()
    with pytest.raises(InvalidRequest) as err:
        service.store_jsonl_bytes(BOB, "s1", "claude-code", good + b"{broken\n" + good)

    assert err.value.code == "invalid_jsonl"
    assert objects.puts == 0
    assert index.sessions == {}


def test_a_small_spool_rolls_to_disk_and_stores_the_same_trace(objects: FakeObjects, index: FakeIndex,
                                                               clock: FixedClock) -> None:
    tiny = SessionService(objects, index, clock, spool_memory_bytes=256)
    body = (FIXTURES / "claude-code-full.jsonl").read_bytes()

    stored = tiny.store_jsonl(BOB, "s1", "claude-code", io.BytesIO(body))

    lines = gzip.decompress(objects.data[stored.storage.key]).splitlines()
    expected = json.loads((FIXTURES / "claude-code-full.expected.json").read_text())["entries"]
    assert [json.loads(line) for line in lines] == expected
    assert stored.storage.bytes > 256


def test_session_size_cap_applies_to_inflated_bytes(objects: FakeObjects, index: FakeIndex,
                                                    clock: FixedClock) -> None:
    capped = SessionService(objects, index, clock, max_session_bytes=10_000)
    body = (FIXTURES / "claude-code-full.jsonl").read_bytes()

    with pytest.raises(PayloadTooLarge) as err:
        capped.store_jsonl(BOB, "s1", "claude-code", io.BytesIO(gzip.compress(body)))

    assert err.value.code == "session_too_large"
    assert objects.puts == 0


def test_a_truncated_gzip_body_is_invalid_gzip(service: SessionService, objects: FakeObjects) -> None:
    packed = gzip.compress((FIXTURES / "claude-code-full.jsonl").read_bytes())

    with pytest.raises(InvalidRequest) as err:
        service.store_jsonl_bytes(BOB, "s1", "claude-code", packed[: len(packed) // 2])

    assert err.value.code == "invalid_gzip"
    assert objects.puts == 0


def test_metadata_failure_on_create_removes_the_new_trace(service: SessionService, objects: FakeObjects,
                                                          index: FakeIndex) -> None:
    index.fail_put_session = True

    with pytest.raises(DependencyUnavailable):
        service.store_native(BOB, "s1", native())

    assert objects.data == {}


def test_metadata_failure_on_replace_keeps_the_object(service: SessionService, objects: FakeObjects,
                                                      index: FakeIndex) -> None:
    service.store_native(BOB, "s1", native())
    index.fail_put_session = True

    with pytest.raises(DependencyUnavailable):
        service.store_native(BOB, "s1", native(output="newer"))

    assert list(objects.data) == ["sessions/acme/s1/trace.jsonl.gz"]


def test_replace_keeps_created_at_and_bumps_revision(service: SessionService, clock: FixedClock) -> None:
    first = service.store_native(BOB, "s1", native(), SessionDetails(title="one"))
    clock.at += timedelta(minutes=5)
    second = service.store_native(BOB, "s1", native(2))

    assert (first.created, second.created) == (True, False)
    assert (second.revision, second.created_at, second.uploaded_at) == (2, first.created_at, "2026-03-01T12:05:00.000Z")
    assert second.entries == 5
    assert second.title is None


def test_lone_surrogates_in_native_json_are_replaced(service: SessionService, objects: FakeObjects) -> None:
    body = b'{"trace": [{"kind": "user_message", "timestamp": "2026-01-01T00:00:00Z", "text": "cut \\ud83d"}]}'

    stored = service.store_native(BOB, "s1", body)

    trace = service.load_eval_context("acme", "s1").trace
    assert stored.entries == 1
    assert isinstance(trace[0], TextEntry) and trace[0].text == "cut \ufffd"


# -- redaction happens once, at upload ------------------------------------------------------------

GITHUB_TOKEN = "ghp_R7tY2uI9oP4aS1dF6gH3jK8lZ5xC0vB2nM7q"


def _stored_trace(objects: FakeObjects, session_id: str = "s1") -> str:
    return gzip.decompress(objects.data[f"sessions/acme/{session_id}/trace.jsonl.gz"]).decode()


def test_the_stored_trace_is_redacted_and_reads_do_not_redact_again(service: SessionService,
                                                                     objects: FakeObjects) -> None:
    body = (FIXTURES / "claude-code-secrets.jsonl").read_bytes()

    stored = service.store_jsonl_bytes(BOB, "s1", "claude-code", body)

    assert GITHUB_TOKEN.encode() in body and GITHUB_TOKEN not in _stored_trace(objects)
    assert "<redacted:github_token>" in _stored_trace(objects)
    assert stored.redaction_version == REDACTION_VERSION and stored.redactions["github_token"] == 2
    context = service.load_eval_context("acme", "s1")
    assert context.compaction["redactions"] == stored.redactions
    reference = build_eval_context(fixture_entries("claude-code-secrets.jsonl", "claude-code"))
    assert context.trace == reference.trace and context.compaction == reference.compaction


@pytest.mark.parametrize("version", [None, REDACTION_VERSION - 1])
def test_a_trace_stored_before_redaction_at_upload_is_still_redacted_on_read(
        service: SessionService, objects: FakeObjects, index: FakeIndex, version: int | None) -> None:
    service.store_native(BOB, "s1", native(output=f"token {GITHUB_TOKEN}"))
    # What an older upload left: the raw trace, and a record without (or with an older) version.
    raw = ToolResult(timestamp="2026-01-01T00:00:00.000Z", tool="Bash", call_id="c0",
                     output=f"token {GITHUB_TOKEN}", output_bytes=47)
    objects.data["sessions/acme/s1/trace.jsonl.gz"] = gzip.compress(raw.model_dump_json().encode() + b"\n")
    record = index.sessions[("acme", "s1")]
    record.pop("redactions")
    record["redaction_version"] = version

    context = service.load_eval_context("acme", "s1")

    assert context.trace[0].output == "token <redacted:github_token>"  # type: ignore[union-attr]
    assert context.compaction["redactions"] == {"github_token": 1}


# -- presigned uploads -----------------------------------------------------------------------------

CODEX_SIZE = len((FIXTURES / "codex-full.jsonl").read_bytes())

def test_upload_ticket_and_completion(service: SessionService, objects: FakeObjects, index: FakeIndex) -> None:
    ticket = service.create_upload(BOB, "s1", UploadRequest(format="codex", title="big", content_length=CODEX_SIZE))
    assert ticket.expires_at == "2026-03-01T12:15:00.000Z"
    assert ticket.complete_path == f"/sessions/s1/uploads/{ticket.upload_id}/complete"
    objects.data[f"uploads/acme/{ticket.upload_id}"] = (FIXTURES / "codex-full.jsonl").read_bytes()

    stored = service.complete_upload(BOB, "s1", ticket.upload_id)

    assert (stored.format, stored.title, stored.created) == ("codex", "big", True)
    assert list(objects.data) == ["sessions/acme/s1/trace.jsonl.gz"]
    assert index.uploads == {}


def test_a_storage_outage_during_completion_keeps_the_upload(service: SessionService, objects: FakeObjects,
                                                             index: FakeIndex) -> None:
    ticket = service.create_upload(BOB, "s1", UploadRequest(format="codex", content_length=CODEX_SIZE))
    upload_key = f"uploads/acme/{ticket.upload_id}"
    objects.data[upload_key] = (FIXTURES / "codex-full.jsonl").read_bytes()
    index.fail_put_session = True

    with pytest.raises(DependencyUnavailable):
        service.complete_upload(BOB, "s1", ticket.upload_id)

    assert upload_key in objects.data
    assert index.uploads  # the client can retry the completion


def test_expired_tickets_are_not_found(service: SessionService, clock: FixedClock) -> None:
    ticket = service.create_upload(BOB, "s1", UploadRequest(format="codex", content_length=CODEX_SIZE))
    clock.at += timedelta(days=2)

    with pytest.raises(NotFound):
        service.complete_upload(BOB, "s1", ticket.upload_id)


# -- eval context ----------------------------------------------------------------------------------

@pytest.mark.parametrize("threshold", [0, 50, 2000, 200_000])
@pytest.mark.parametrize(("name", "fmt"), [("claude-code-full.jsonl", "claude-code"),
                                           ("claude-code-secrets.jsonl", "claude-code"),
                                           ("codex-full.jsonl", "codex")])
def test_streaming_context_equals_ingest_build_eval_context(name: str, fmt: str, threshold: int) -> None:
    entries = fixture_entries(name, fmt)

    trace, compaction = stream_eval_context(iter(entries), threshold)
    reference = build_eval_context(entries, threshold)

    assert trace == reference.trace
    assert compaction == reference.compaction


def _chain(index: FakeIndex, links: dict[str, str | None]) -> None:
    for sid, parent in links.items():
        index.sessions[("acme", sid)] = {"parent_session_id": parent}


def _store_linked(service: SessionService, index: FakeIndex, sid: str, parent: str | None) -> None:
    service.store_native(BOB, sid, native())
    index.sessions[("acme", sid)]["parent_session_id"] = parent


def test_chain_stops_at_a_cycle(service: SessionService, index: FakeIndex) -> None:
    for sid, parent in (("a", "c"), ("b", "a"), ("c", "b")):
        _store_linked(service, index, sid, parent)

    ctx = service.load_eval_context("acme", "c", chain=True)

    assert ctx.session_chain == ["a", "b", "c"]
    assert (ctx.chain_incomplete, ctx.chain_stop_reason) == (True, "cycle")


def test_chain_depth_is_bounded(service: SessionService, index: FakeIndex) -> None:
    for n in range(MAX_CHAIN_DEPTH + 10):
        _store_linked(service, index, f"s{n}", f"s{n - 1}" if n else None)

    ctx = service.load_eval_context("acme", f"s{MAX_CHAIN_DEPTH + 9}", chain=True)

    assert len(ctx.session_chain) == MAX_CHAIN_DEPTH
    assert ctx.session_chain[0] == "s10"
    assert (ctx.chain_incomplete, ctx.chain_stop_reason) == (True, "max_depth")


def test_threshold_is_validated_before_any_read(service: SessionService, objects: FakeObjects) -> None:
    objects.fail_reads = True
    with pytest.raises(InvalidRequest) as err:
        service.load_eval_context("acme", "s1", threshold=200_001)
    assert err.value.code == "threshold_out_of_range"


def test_a_missing_trace_object_is_reported(service: SessionService, objects: FakeObjects) -> None:
    service.store_native(BOB, "s1", native())
    objects.data.clear()

    with pytest.raises(DependencyUnavailable) as err:
        service.load_eval_context("acme", "s1")

    assert err.value.code == "trace_unavailable"


def test_eval_context_wire_form_omits_absent_agent_fields() -> None:
    ctx = EvalContext(session_id="s1", session_chain=["s1"], compaction={"entries": 3}, trace=[
        TextEntry(kind="user_message", timestamp="2026-01-01T00:00:00.000Z", text="hi"),
        ToolInvocation(timestamp="2026-01-01T00:00:00.000Z", tool="Task", call_id="c", agent_id="a1",
                       agent_type="explorer"),
        ToolResult(timestamp="2026-01-01T00:00:00.000Z", tool="Task", call_id="c", output="x", output_bytes=1),
    ])

    wire = json.loads(ctx.to_json())

    assert wire["trace"][0] == {"kind": "user_message", "timestamp": "2026-01-01T00:00:00.000Z", "text": "hi"}
    assert wire["trace"][1]["agent_type"] == "explorer"
    assert "agent_id" not in wire["trace"][2]
    assert set(wire) >= {"session_id", "session_chain", "trace", "compaction"}


class SteppingClock(FixedClock):
    """Every look at the monotonic clock is one second later: parsing 'takes' a second per check."""

    def __init__(self) -> None:
        super().__init__()
        self.t = 0.0

    def monotonic(self) -> float:
        self.t += 1.0
        return self.t


def test_a_direct_upload_that_parses_too_long_is_refused_with_the_presigned_path(objects: FakeObjects,
                                                                                 index: FakeIndex) -> None:
    service = SessionService(objects, index, SteppingClock())
    line = json.dumps({"type": "user", "timestamp": "2026-01-01T00:00:00Z",
                       "message": {"role": "user", "content": "hi"}}).encode() + b"\n"

    with pytest.raises(PayloadTooLarge) as err:
        service.store_jsonl_bytes(BOB, "s1", "claude-code", line * 8000)

    assert err.value.code == "direct_upload_too_large"
    assert err.value.details == {"limit_kind": "parse_seconds", "limit": 5.0, "upload_path": "/sessions/s1/uploads"}
    assert objects.puts == 0 and index.sessions == {}


def test_a_file_of_another_size_than_announced_is_refused_and_discarded(service: SessionService,
                                                                        objects: FakeObjects,
                                                                        index: FakeIndex) -> None:
    ticket = service.create_upload(BOB, "s1", UploadRequest(format="codex", content_length=CODEX_SIZE - 1))
    objects.data[f"uploads/acme/{ticket.upload_id}"] = (FIXTURES / "codex-full.jsonl").read_bytes()

    with pytest.raises(InvalidRequest) as err:
        service.complete_upload(BOB, "s1", ticket.upload_id)

    assert err.value.code == "upload_size_mismatch"
    assert objects.data == {} and index.uploads == {} and index.sessions == {}


ALICE = Principal(tenant="acme", user="alice")
ADMIN = Principal(tenant="acme", user="root", roles=("admin",))


def test_only_the_uploader_or_an_admin_may_replace_a_session(service: SessionService, objects: FakeObjects,
                                                             index: FakeIndex) -> None:
    service.store_native(BOB, "s1", native(output="bob's"))
    body = (FIXTURES / "codex-full.jsonl").read_bytes()

    for attempt in (lambda: service.store_native(ALICE, "s1", native(output="alice's")),
                    lambda: service.store_jsonl_bytes(ALICE, "s1", "codex", body),
                    lambda: service.create_upload(ALICE, "s1", UploadRequest(format="codex", content_length=9))):
        with pytest.raises(Forbidden) as err:
            attempt()
        assert err.value.code == "not_session_owner"
    assert index.sessions[("acme", "s1")]["uploaded_by"] == "bob" and objects.puts == 1

    assert service.store_native(BOB, "s1", native(output="bob again")).revision == 2
    assert service.store_native(ADMIN, "s1", native(output="admin's")).uploaded_by == "root"


def test_a_session_taken_between_start_and_completion_is_not_replaced(service: SessionService,
                                                                      objects: FakeObjects) -> None:
    ticket = service.create_upload(ALICE, "s1", UploadRequest(format="codex", content_length=CODEX_SIZE))
    objects.data[f"uploads/acme/{ticket.upload_id}"] = (FIXTURES / "codex-full.jsonl").read_bytes()
    service.store_native(BOB, "s1", native())

    with pytest.raises(Forbidden) as err:
        service.complete_upload(ALICE, "s1", ticket.upload_id)

    assert err.value.code == "not_session_owner"
    with pytest.raises(NotFound):  # nor by anyone but the member who started it
        service.complete_upload(BOB, "s1", ticket.upload_id)


# -- large uploads complete in the background --------------------------------------------------------

def _async_service(objects: FakeObjects, index: FakeIndex, clock: FixedClock,
                   jobs: list[SessionUploadJob]) -> SessionService:
    return SessionService(objects, index, clock, enqueue_upload=jobs.append, sync_complete_max_bytes=100)


def test_a_large_upload_is_accepted_then_stored_by_the_worker(objects: FakeObjects, index: FakeIndex,
                                                              clock: FixedClock) -> None:
    jobs: list[SessionUploadJob] = []
    service = _async_service(objects, index, clock, jobs)
    ticket = service.create_upload(BOB, "s1", UploadRequest(format="codex", content_length=CODEX_SIZE))
    objects.data[f"uploads/acme/{ticket.upload_id}"] = (FIXTURES / "codex-full.jsonl").read_bytes()

    accepted = service.complete_upload(BOB, "s1", ticket.upload_id)
    again = service.complete_upload(BOB, "s1", ticket.upload_id)

    assert isinstance(accepted, UploadAccepted) and accepted.status == "processing"
    assert accepted.status_path == f"/sessions/s1/uploads/{ticket.upload_id}" and again == accepted
    assert len(jobs) == 1 and index.sessions == {}  # one job, nothing stored yet
    assert service.upload_status(BOB, "s1", ticket.upload_id).status == "processing"

    assert service.complete_upload_job(jobs[0]) == "succeeded"
    assert service.complete_upload_job(jobs[0]) == "succeeded"  # a redelivered job does nothing

    status = service.upload_status(BOB, "s1", ticket.upload_id)
    assert status.status == "succeeded" and status.session is not None and status.session.format == "codex"
    assert list(objects.data) == ["sessions/acme/s1/trace.jsonl.gz"] and objects.puts == 1
    with pytest.raises(NotFound):
        service.upload_status(ALICE, "s1", ticket.upload_id)


def test_a_large_bad_upload_fails_in_the_background_and_stores_nothing(objects: FakeObjects, index: FakeIndex,
                                                                       clock: FixedClock) -> None:
    jobs: list[SessionUploadJob] = []
    service = _async_service(objects, index, clock, jobs)
    body = b'{"type":"user"}\n' * 20 + b"{not json}\n"
    ticket = service.create_upload(BOB, "s1", UploadRequest(format="claude-code", content_length=len(body)))
    objects.data[f"uploads/acme/{ticket.upload_id}"] = body

    assert isinstance(service.complete_upload(BOB, "s1", ticket.upload_id), UploadAccepted)
    assert service.complete_upload_job(jobs[0]) == "failed"

    status = service.upload_status(BOB, "s1", ticket.upload_id)
    assert status.status == "failed" and status.error is not None
    assert status.error.code == "invalid_jsonl" and status.error.details == {"line": 21, "column": 2}
    assert objects.data == {} and index.sessions == {}


# -- the worker's wire-form context ----------------------------------------------------------------

@pytest.mark.parametrize(("name", "fmt"), [("claude-code-full.jsonl", "claude-code"),
                                           ("claude-code-secrets.jsonl", "claude-code"),
                                           ("codex-full.jsonl", "codex")])
@pytest.mark.parametrize("stored_before", [False, True])
def test_the_wire_form_context_equals_the_models_dump_and_reloads_like_a_fresh_load(
        service: SessionService, objects: FakeObjects, index: FakeIndex, name: str, fmt: str,
        stored_before: bool) -> None:
    service.store_jsonl_bytes(BOB, "s1", fmt, (FIXTURES / name).read_bytes())
    if stored_before:  # an upload from before redaction at ingest: the raw trace, no version
        raw = "".join(e.model_dump_json(exclude_none=True) + "\n" for e in fixture_entries(name, fmt))
        objects.data["sessions/acme/s1/trace.jsonl.gz"] = gzip.compress(raw.encode())
        index.sessions[("acme", "s1")]["redaction_version"] = None

    loaded = service.load_eval_context_doc("acme", "s1", 2000)

    def as_read(doc: dict[str, Any]) -> dict[str, Any]:
        return {**doc, "trace": list(doc["trace"])}  # the worker's trace is spooled, read entry by entry

    assert as_read(loaded.doc) == service.load_eval_context("acme", "s1", 2000).model_dump(mode="json")
    for lower in (1000, 50, 0):
        assert as_read(loaded.reload(lower)) == service.load_eval_context("acme", "s1", lower).model_dump(mode="json")
