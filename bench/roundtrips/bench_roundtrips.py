"""AWS round trips per API request and per worker run, counted exactly under moto.

Every AWS API call the service makes passes botocore's `before-parameter-build` event once (SDK
retries of that call are not extra calls), so a hook registered on the boto3 session before the
container builds its clients sees each one, with its parameters. DynamoDB calls are attributed to
the item they touch by its sort-key prefix (SETTINGS#, RUN#, SESSION#, ...), so the worker's calls
split into settings, run reads, cancel polls, run writes (start, progress, finish) and session
metadata. Judges are the real anthropic SDK talking to the in-process FakeVendor.

The scenarios are importable: `tests/unit/test_roundtrip_budgets.py` runs the same ones and fails
when a count grows past its target. Prints one markdown section on stdout.

Usage: .venv/bin/python bench/roundtrips/bench_roundtrips.py [--latency 1.0]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.harness import drain_queue, hermetic_aws_env, quiet_stdout, sample_trace, table, token, worker_context

TENANT = "acme"
ADMIN = ("root", ["admin"])
MEMBER = ("bob", [])
SESSION = "sess-roundtrips"
MODEL = "claude-sonnet-4-6"
KEYS = ("sk-ant-roundtrips-key-0001-abcdefgh", "sk-ant-roundtrips-key-0002-ijklmnop")
DEV_SECRET = "bench-roundtrips-dev-secret-0123456789abcdef"

# Targets from issue 7 (item 2).
SETTINGS_READ_COLD = 1  # a request's settings read: at most one GetItem, none from a warm cache
# Cold: the settings, the judge catalog head, the spend limits and the price overrides (one GetItem each),
# the session record (the repository and retention end a run copies from it, for history), the run
# transaction (with the spend ledger's admission), the SQS send. Warm: the session record and the last two.
DISPATCH_BUDGET = 7
SECRET_READS_PER_KEY_VERSION = 1  # per warm container
RUN_WRITES_BUDGET = 20  # DynamoDB writes of a 13-question run


# ----------------------------------------------------------------------------------- counting


def _dynamo_target(op: str, params: dict[str, Any]) -> str:
    if op == "TransactWriteItems":
        kinds = sorted({_sk_kind(next(iter(item.values()))) for item in params.get("TransactItems", [])})
        return "txn[" + "+".join(kinds) + "]"
    if op in ("Query", "Scan"):
        values = params.get("ExpressionAttributeValues", {})
        return "query " + ",".join(sorted(str(v.get("S", "")).split("#")[0] for v in values.values() if "S" in v))
    return _sk_kind(params)


def _sk_kind(params: dict[str, Any]) -> str:
    key = params.get("Key") or params.get("Item") or {}
    sk = str(key.get("sk", {}).get("S", ""))
    return sk.split("#", 1)[0] or "?"


@dataclass
class Call:
    service: str
    operation: str
    target: str  # DynamoDB: the item kind (SETTINGS, RUN, SESSION, ...); else ""
    projection: bool = False

    @property
    def name(self) -> str:
        return f"{self.service}.{self.operation}"


class CallLog:
    """botocore `before-parameter-build` hook: one `Call` per AWS API call while active."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.active = False

    def __call__(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        if not self.active:
            return
        service = model.service_model.service_name
        target = _dynamo_target(model.name, params) if service == "dynamodb" else ""
        self.calls.append(Call(service, model.name, target, projection="ProjectionExpression" in params))

    @contextmanager
    def measure(self) -> Iterator[list[Call]]:
        self.calls = []
        self.active = True
        try:
            yield self.calls
        finally:
            self.active = False


def by_operation(calls: list[Call]) -> Counter[str]:
    return Counter(c.name for c in calls)


DYNAMO_WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"})


def worker_breakdown(calls: list[Call]) -> Counter[str]:
    """A worker run's calls by purpose."""
    out: Counter[str] = Counter()
    for c in calls:
        if c.service == "dynamodb":
            if c.target == "SETTINGS":
                out["settings read (DynamoDB GetItem)" if c.operation == "GetItem" else f"settings {c.operation}"] += 1
            elif c.target == "RUN" and c.operation == "GetItem":
                out["cancel polls (GetItem status only)" if c.projection else "run read (GetItem)"] += 1
            elif c.target == "RUN" and c.operation in DYNAMO_WRITES:
                out["run writes (UpdateItem: start, progress, finish)"] += 1
            elif c.target == "SESSION":
                out["session metadata (GetItem)"] += 1
            elif c.target.startswith("RATE"):
                out[f"vendor rate limiter state ({c.operation})"] += 1
            else:
                out[f"dynamodb {c.operation} {c.target}"] += 1
        elif c.service == "secretsmanager":
            out[f"secret ({c.operation})"] += 1
        elif c.service == "s3":
            out[f"session trace (S3 {c.operation})"] += 1
        elif c.service == "events":
            out[f"SessionEvalCompleted (EventBridge {c.operation})"] += 1
        else:
            out[c.name] += 1
    return out


def dynamo_writes(calls: list[Call]) -> int:
    return sum(1 for c in calls if c.service == "dynamodb" and c.operation in DYNAMO_WRITES)


# ----------------------------------------------------------------------------------- harness


@dataclass
class Harness:
    client: Any  # chalice.test.Client
    container: Any
    log: CallLog
    fake: Any  # devstack.fake_vendor.FakeVendor
    keys: list[str] = field(default_factory=lambda: list(KEYS))

    def token(self, who: tuple[str, list[str]]) -> str:
        return token(TENANT, who[0], who[1], secret=DEV_SECRET)

    def request(self, method: str, path: str, who: tuple[str, list[str]], body: Any = None,
                headers: dict[str, str] | None = None, expect: int | tuple[int, ...] = 200) -> Any:
        hdrs = {"Authorization": f"Bearer {self.token(who)}", **(headers or {})}
        payload = None
        if body is not None:
            payload = json.dumps(body)
            hdrs["Content-Type"] = "application/json"
        resp = getattr(self.client.http, method.lower())(path, headers=hdrs, body=payload)
        expected = (expect,) if isinstance(expect, int) else expect
        text = resp.body.decode() if isinstance(resp.body, bytes) else str(resp.body)
        if resp.status_code not in expected:
            raise AssertionError(f"{method} {path} → {resp.status_code}: {text[:500]}")
        return json.loads(text) if text.startswith("{") else None

    def cold_caches(self) -> None:
        """What a fresh container has: no cached settings, catalog, spend limits/prices or keys (clients
        stay built)."""
        self.container.settings_store.reset()
        self.container.catalog_store.reset()
        self.container.secret_store.reset()
        self.container.spend_store.reset()

    def settings_body(self, key: str | None = None) -> dict[str, Any]:
        block: dict[str, Any] = {"model": MODEL, "base_url": self.fake.anthropic_base_url}
        if key is not None:
            block["api_key"] = key
        return {"anthropic": block}

    def drain_queue_event(self) -> dict[str, Any]:
        return {"Records": drain_queue(self.container.sqs, self.container.config.queue_url)}


@contextmanager
def harness(*, settings_cache_seconds: float = 5.0, vendor_latency: float = 0.0,
            tuning: Any = None) -> Iterator[Harness]:
    """moto + the infra template's resources + the app's container + an in-process FakeVendor."""
    hermetic_aws_env()
    import boto3
    from chalice.test import Client
    from moto import mock_aws

    from app import app
    from chalicelib.config import runtime_config_from_env
    from chalicelib.wiring import Container, reset_container, use_container
    from devstack.fake_vendor import FakeVendor, FakeVendorOptions
    from devstack.resources import provision

    with mock_aws():
        session = boto3.Session(region_name="us-east-1")
        log = CallLog()
        # Registered before any client exists: each client copies the session's hooks when built.
        session.events.register("before-parameter-build", log)
        resources = provision(session, stack_name="eval-runner-roundtrips")
        env = {**resources.env(stage="test"), "STAGE": "test", "AUTH_MODE": "hs256", "DEV_JWT_SECRET": DEV_SECRET,
               "ALLOWED_BASE_URL_HOSTS": "127.0.0.1,localhost", "ALLOW_HTTP_BASE_URLS": "true",
               "SETTINGS_CACHE_SECONDS": str(settings_cache_seconds)}
        container = Container(runtime_config_from_env(env), session=session)
        if tuning is not None:
            container.judge_tuning = tuning
        use_container(container)
        try:
            with FakeVendor(options=FakeVendorOptions(latency=vendor_latency)) as fake, \
                    Client(app, stage_name="dev") as client:
                yield Harness(client=client, container=container, log=log, fake=fake)
        finally:
            session.events.unregister("before-parameter-build", log)
            reset_container()


# ----------------------------------------------------------------------------------- scenarios


@dataclass
class Measured:
    name: str
    calls: list[Call]
    note: str = ""

    @property
    def total(self) -> int:
        return len(self.calls)

    def ops(self) -> Counter[str]:
        return by_operation(self.calls)


def api_requests(h: Harness) -> dict[str, Measured]:
    """Admin settings and dashboard requests, each with cold and warm in-process caches."""
    out: dict[str, Measured] = {}

    def measure(name: str, method: str, path: str, who: tuple[str, list[str]], body: Any = None, *,
                cold: bool, headers: dict[str, str] | None = None, expect: int | tuple[int, ...] = 200,
                note: str = "") -> Any:
        if cold:
            h.cold_caches()
        with h.log.measure() as calls:
            result = h.request(method, path, who, body, headers=headers, expect=expect)
        out[name] = Measured(name, list(calls), note)
        return result

    settings = "/admin/settings/eval-runner"
    measure("PUT settings: first key (creates the secret)", "PUT", settings, ADMIN, h.settings_body(h.keys[0]),
            cold=True)
    view = measure("GET settings (admin)", "GET", settings, ADMIN, cold=True,
                   note="always read fresh: its version is the ETag for If-Match")
    measure("GET settings (admin), warm container", "GET", settings, ADMIN, cold=False)
    measure("PUT settings: run timeout only, If-Match", "PUT", settings, ADMIN, {"run_timeout_seconds": 600},
            headers={"If-Match": str(view["version"])}, cold=True)
    measure("PUT settings: stale If-Match → 412", "PUT", settings, ADMIN, {"run_timeout_seconds": 300},
            headers={"If-Match": str(view["version"])}, cold=True, expect=412)
    measure("PUT settings: same key re-sent (not a rotation)", "PUT", settings, ADMIN, h.settings_body(h.keys[0]),
            cold=True)
    measure("test connection, cold container", "POST", settings + "/vendors/anthropic/test", ADMIN, cold=True)
    measure("test connection, warm container", "POST", settings + "/vendors/anthropic/test", ADMIN, cold=False)

    h.request("PUT", f"/sessions/{SESSION}", MEMBER, {"trace": sample_trace()}, expect=(200, 201))
    measure("GET /eval/runners, cold settings cache", "GET", "/eval/runners", MEMBER, cold=True)
    measure("GET /eval/runners, warm", "GET", "/eval/runners", MEMBER, cold=False)
    # Dispatches carry their estimate's quote, as the console's eval dialog sends them.
    quote = h.request("POST", f"/sessions/{SESSION}/eval-runs/estimate", MEMBER, {"threshold": 2000})["quote"]
    body = {"threshold": 2000, "quote": quote}
    measure("dispatch, the tenant's first (creates its spend ledger)", "POST", f"/sessions/{SESSION}/eval-runs",
            MEMBER, body, headers={"Idempotency-Key": "rt-0"}, cold=True, expect=202,
            note="once per tenant: the ledger's maps and the sweep marker, then the dispatch transaction again")
    accepted = measure("dispatch, cold settings cache", "POST", f"/sessions/{SESSION}/eval-runs", MEMBER,
                       body, headers={"Idempotency-Key": "rt-1"}, cold=True, expect=202)
    measure("dispatch, warm", "POST", f"/sessions/{SESSION}/eval-runs", MEMBER, body,
            headers={"Idempotency-Key": "rt-2"}, cold=False, expect=202)
    measure("dispatch, repeated Idempotency-Key", "POST", f"/sessions/{SESSION}/eval-runs", MEMBER,
            body, headers={"Idempotency-Key": "rt-2"}, cold=False, expect=(200, 202))
    measure("GET run", "GET", f"/eval-runs/{accepted['eval_run_id']}", MEMBER, cold=False)
    h.drain_queue_event()  # these runs are not judged here
    return out


@dataclass
class WorkerRun:
    name: str
    calls: list[Call]
    status: str
    questions: int

    def breakdown(self) -> Counter[str]:
        return worker_breakdown(self.calls)

    @property
    def writes(self) -> int:
        return dynamo_writes(self.calls)


def worker_run(h: Harness, name: str, *, cold: bool) -> WorkerRun:
    """Dispatch one full run (all 13 questions), then judge it with the SQS handler, counting its calls."""
    from chalicelib.worker.eval_worker import handle_sqs_batch

    accepted = h.request("POST", f"/sessions/{SESSION}/eval-runs", MEMBER, {"threshold": 2000},
                         headers={"Idempotency-Key": f"worker-{name}"}, expect=202)
    event = h.drain_queue_event()
    assert len(event["Records"]) == 1, event
    if cold:
        h.cold_caches()
    with h.log.measure() as calls:
        result = handle_sqs_batch(event, worker_context())
    assert result == {"batchItemFailures": []}, result
    run = h.request("GET", f"/eval-runs/{accepted['eval_run_id']}", MEMBER)
    return WorkerRun(name, list(calls), run["status"], run["progress"]["completed"])


def worker_runs(h: Harness) -> dict[str, WorkerRun]:
    """Cold container, warm container (same key), and warm after a key rotation."""
    h.request("PUT", "/admin/settings/eval-runner", ADMIN, h.settings_body(h.keys[0]))
    h.request("PUT", f"/sessions/{SESSION}", MEMBER, {"trace": sample_trace()}, expect=(200, 201))
    out = {"cold": worker_run(h, "cold", cold=True), "warm": worker_run(h, "warm", cold=False)}
    h.request("PUT", "/admin/settings/eval-runner", ADMIN, h.settings_body(h.keys[1]))  # rotation
    # The settings cache of another container still holds the old item for up to its TTL; this one
    # saw the write. Either way the new key version is a cache miss: exactly one secret read.
    out["rotated"] = worker_run(h, "rotated", cold=False)
    return out


def staggered_worst_case(h: Harness, step_seconds: float = 0.08) -> WorkerRun:
    """Judges finish one by one, each further apart than the progress flush interval: the most progress
    writes the coalescing allows (one per finished judge)."""
    from chalicelib.judges.catalog import QUESTIONS

    h.request("PUT", "/admin/settings/eval-runner", ADMIN, h.settings_body(h.keys[0]))
    h.request("PUT", f"/sessions/{SESSION}", MEMBER, {"trace": sample_trace()}, expect=(200, 201))
    for i, question in enumerate(QUESTIONS):
        h.fake.script(question.id, latency=step_seconds * (i + 1))
    return worker_run(h, "staggered", cold=False)


# ----------------------------------------------------------------------------------- report


def _fmt_ops(ops: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(ops.items())) or "none"


def _api_target(name: str, m: Measured) -> str:
    settings_reads = sum(1 for c in m.calls if c.target == "SETTINGS" and c.operation == "GetItem")
    if name.startswith("dispatch, the tenant's first"):
        return "once per tenant"
    if name.startswith("dispatch"):
        ok = m.total <= DISPATCH_BUDGET and (settings_reads == 0 or "cold" in name)
        return f"≤ {DISPATCH_BUDGET} → {'met' if ok else 'NOT met'}"
    if name.startswith("GET /eval/runners"):
        want = SETTINGS_READ_COLD if "cold" in name else 0
        return f"settings reads ≤ {want} → {'met' if settings_reads <= want else 'NOT met'}"
    if name.startswith("GET settings") and "warm" in name:
        return (f"≤ {SETTINGS_READ_COLD} → {'met' if m.total <= SETTINGS_READ_COLD else 'NOT met'}; 0 from a warm "
                "cache is met by the runner-side reads (dialog, dispatch, worker), not by this admin read")
    if name.startswith("GET settings"):
        return f"≤ {SETTINGS_READ_COLD} → {'met' if m.total <= SETTINGS_READ_COLD else 'NOT met'}"
    return ""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=1.0,
                        help="seconds per fake judge call for the worker runs (cancel polls scale with it)")
    args = parser.parse_args()
    from chalicelib.services.judge_runner import RunnerTuning

    with quiet_stdout():  # the service's JSON log lines and EMF metrics go to stdout
        with harness() as h:
            api = api_requests(h)
        with harness(vendor_latency=args.latency) as h:
            runs = worker_runs(h)
        with harness(tuning=RunnerTuning(progress_flush_seconds=0.02)) as h:
            worst = staggered_worst_case(h)

    print("## AWS round trips\n")
    print("Exact counts of AWS API calls (botocore `before-parameter-build` hook under moto; an SDK retry "
          "of a call is not counted again). \"Cold\" = the container's settings and secret caches are "
          "empty (a fresh Lambda container); clients are built either way. Settings cache TTL 5 s, "
          "secret cache 300 s (defaults).\n")
    print(table(("request", "AWS calls", "by operation", "target"),
                [(name + (f" ({m.note})" if m.note else ""), m.total, _fmt_ops(m.ops()), _api_target(name, m))
                 for name, m in api.items()], "lrll"))

    print(f"\nWorker, one 13-question run through `handle_sqs_batch` (anthropic SDK → FakeVendor at "
          f"{args.latency:g} s per call; warm-up judge, 12 in parallel, retrospective):\n")
    cols = [("cold container", runs["cold"]), ("warm container", runs["warm"]),
            ("warm, after a key rotation", runs["rotated"]),
            ("worst case: judges finish one by one", worst)]
    purposes = sorted({p for _, r in cols for p in r.breakdown()})
    print(table(("purpose", *(c for c, _ in cols)), [
        *([p, *(r.breakdown().get(p, 0) for _, r in cols)] for p in purposes),
        ["**all AWS calls**", *(f"**{len(r.calls)}**" for _, r in cols)],
        ["**DynamoDB writes**", *(f"**{r.writes}**" for _, r in cols)],
        ["run status / questions judged", *(f"{r.status} / {r.questions}" for _, r in cols)]],
        "l" + "r" * len(cols)))
    secret = [sum(1 for c in r.calls if c.service == "secretsmanager") for _, r in cols[:3]]
    max_writes = max(r.writes for _, r in cols)
    print(f"\nTargets: DynamoDB writes per 13-question run ≤ {RUN_WRITES_BUDGET} → max {max_writes} "
          f"({'met' if max_writes <= RUN_WRITES_BUDGET else 'NOT met'}; by design ≤ 2 + one per judge, since a "
          "progress batch is written only once it has waited the flush interval and the last batch rides on the "
          f"finish write). Secrets Manager ≤ {SECRET_READS_PER_KEY_VERSION} per warm container per key version → "
          f"cold {secret[0]}, warm {secret[1]}, after rotation {secret[2]} "
          f"({'met' if secret[0] <= 1 and secret[1] == 0 and secret[2] <= 1 else 'NOT met'}). "
          "Cancel polls are one consistent `GetItem` of the status attribute per second while judges are in "
          "flight, so they scale with the run's wall time (about 1 per second of judging).\n")


if __name__ == "__main__":
    main()
