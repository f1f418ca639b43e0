"""What the daemon-protocol tests share: a settable clock, so deadlines pass and long polls end without sleeping,
and a daemon's side of the protocol through the API (register, upload, dispatch, claim, events, verdicts, result)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib.domain.evaluation import JudgeVerdict
from chalicelib.judges.aggregation import aggregate
from chalicelib.judges.catalog import get_question


class FrozenClock:
    """A settable clock so deadlines can pass without sleeping."""

    def __init__(self) -> None:
        self.current = datetime.now(UTC)
        self.mono = 0.0

    def now(self) -> datetime:
        return self.current

    def monotonic(self) -> float:
        # Every look at the clock moves it, so a long poll ends after a few iterations, instantly.
        self.mono += 5.0
        return self.mono

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


TRACE = {"trace": [
    {"kind": "user_message", "timestamp": "2026-11-29T10:00:00.000Z", "text": "Add a test for the parser."},
    {"kind": "assistant_message", "timestamp": "2026-11-29T10:00:05.000Z", "text": "Done: tests/test_parser.py."},
]}


def register(client: Any, token: str, name: str = "laptop", judges: list[str] | None = None) -> str:
    resp = client.post("/daemons", token=token, json_body={"name": name, "platform": "linux-x86_64",
                                                             "judges": judges or ["claude"]})
    assert resp.status_code == 201, resp.json
    return str(resp.json["daemon_id"])


def upload_session(client: Any, token: str, session_id: str = "sess-1") -> None:
    resp = client.put(f"/sessions/{session_id}", token=token, json_body=TRACE)
    assert resp.status_code in (200, 201), resp.json


def dispatch(client: Any, token: str, session_id: str = "sess-1", **body: Any) -> dict[str, Any]:
    resp = client.post(f"/sessions/{session_id}/eval-runs", token=token,
                       json_body={"runner": "daemon", **body})
    assert resp.status_code == 202, resp.json
    return dict(resp.json)


def claim(client: Any, token: str, daemon_id: str) -> Any:
    return client.get(f"/daemons/{daemon_id}/jobs?wait=0", token=token)


def verdict(question_id: str, score: int, **kw: Any) -> dict[str, Any]:
    q = get_question(question_id)
    assert q is not None
    body = {"category": q.category, "question_id": question_id, "score": score,
            "verdict": "pass" if score >= 4 else "warn" if score >= 2 else "fail",
            "finding": f"finding for {question_id}", "evidence": "turn 2",
            "recommendation": None if score == 5 else "Add a rule to AGENTS.md.", "tools_used": None}
    body.update(kw)
    return body


def result_body(run_id: str, verdicts: list[dict[str, Any]], questions: list[str]) -> dict[str, Any]:
    selected = [q for q in (get_question(i) for i in questions) if q is not None]
    payload = aggregate(run_id, "sonnet", selected, [JudgeVerdict.model_validate(v) for v in verdicts], None)
    return payload.model_dump(mode="json")


def event(run_id: str, type_: str, **fields: Any) -> dict[str, Any]:
    return {"type": type_, "eval_run_id": run_id, **fields}
