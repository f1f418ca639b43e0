"""Which runner serves an eval run: the dispatch request (`EvalRunRequest`), the eval dialog's
runner options (`GET /eval/runners`) and the dispatch plan (runner, vendor, model, questions,
threshold) that a dispatch, the catalog's try-it and rule/batch runs build their runs from.

The rules (`runner_options`, `choose_runner`, `plan_dispatch`) are pure over the tenant's settings,
the user's available daemons and the judge catalog, so they are unit-tested without AWS;
`services/eval_runs.py` applies them with the stores.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Protocol

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from chalicelib.domain.catalog import ResolvedCatalog
from chalicelib.domain.compaction import DEFAULT_THRESHOLD_BYTES, MAX_THRESHOLD_BYTES, MIN_THRESHOLD_BYTES
from chalicelib.domain.errors import Conflict, InvalidRequest
from chalicelib.domain.evaluation import RunnerKind, VendorName
from chalicelib.domain.settings import VENDORS, EvalRunnerSettings
from chalicelib.judges.catalog import Question, select_questions

# The same bounds as GET /sessions/{id}/eval-context (0 truncates every tool output to its marker).
DEFAULT_THRESHOLD = DEFAULT_THRESHOLD_BYTES
MIN_THRESHOLD = MIN_THRESHOLD_BYTES
MAX_THRESHOLD = MAX_THRESHOLD_BYTES
MAX_SELECTION_TOKENS = 64
MAX_IDEMPOTENCY_KEY_LENGTH = 128

# Idempotency keys land in a DynamoDB sort key and in logs: printable, no spaces or separators
# that could be confused with our own key syntax ('#').
_IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9._:~+/=-]{1,128}$")


# ----------------------------------------------------------------------------------------- ports


class AvailableDaemon(Protocol):
    """What dispatch needs of one of the user's available daemons (the daemon service's DaemonInfo)."""

    @property
    def daemon_id(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def last_seen_at(self) -> str | None: ...


# ---------------------------------------------------------------------------------------- models

SelectionToken = Annotated[str, Field(min_length=1, max_length=200)]


class EvalRunRequest(BaseModel):
    """POST /sessions/{session_id}/eval-runs. Every field is optional; unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid")

    vendor: VendorName | None = Field(
        default=None, description="Required when both vendors are enabled (unless runner is 'daemon').")
    runner: RunnerKind | None = Field(
        default=None, description="'server' (tenant vendor) or 'daemon' (your own daemon); default: the "
                                  "server when a vendor is enabled, else your daemon.")
    questions: list[SelectionToken] | None = Field(
        default=None, max_length=MAX_SELECTION_TOKENS,
        description="Question ids or category names of the tenant's judge catalog to run (default: every "
                    "enabled question; GET /eval/questions).")
    skip: list[SelectionToken] | None = Field(
        default=None, max_length=MAX_SELECTION_TOKENS,
        description="Question ids or category names to leave out; not together with 'questions'.")
    chain: StrictBool = Field(default=False, description="Judge the whole session chain (parents first).")
    threshold: StrictInt | None = Field(
        default=None, description=f"Tool-output truncation threshold in bytes, {MIN_THRESHOLD}-{MAX_THRESHOLD} "
                                  f"(default {DEFAULT_THRESHOLD}).")
    quote: str | None = Field(
        default=None, max_length=256,
        description="The `quote` of an estimate of this same request (POST …/eval-runs/estimate, 15 minutes): "
                    "the run reserves exactly that estimate without estimating again. Ignored when stale.")


class ServerRunnerOptions(BaseModel):
    model_config = ConfigDict(defer_build=True)

    vendors: list[VendorName]
    vendor_required: bool
    default_vendor: VendorName | None
    models: dict[str, str] = Field(default_factory=dict,
                                   description="The judge model each offered vendor runs (extension).")


class DaemonEntry(BaseModel):
    model_config = ConfigDict(defer_build=True)

    daemon_id: str
    name: str
    last_seen_at: str | None


class DaemonRunnerOptions(BaseModel):
    model_config = ConfigDict(defer_build=True)

    available: bool
    daemons: list[DaemonEntry]


class RunButton(BaseModel):
    model_config = ConfigDict(defer_build=True)

    visible: bool
    routes: list[RunnerKind]


class EvalRunnersView(BaseModel):
    """GET /eval/runners: what the eval dialog shows this user."""

    model_config = ConfigDict(defer_build=True)

    server: ServerRunnerOptions
    daemon: DaemonRunnerOptions
    run_button: RunButton


# ----------------------------------------------------------------------------------------- rules


def offered_vendors(settings: EvalRunnerSettings) -> list[VendorName]:
    """Vendors a user may pick: a stored key and a model, not suspended (canonical order)."""
    return list(settings.usable_vendors)


def runner_options(settings: EvalRunnerSettings, daemons: Sequence[AvailableDaemon]) -> EvalRunnersView:
    """The seed's dialog rules: one vendor → implicit; two → the user picks; none → daemon only;
    no vendor and no daemon → the Run button is hidden."""
    vendors = offered_vendors(settings)
    routes: list[RunnerKind] = []
    if vendors:
        routes.append("server")
    if daemons:
        routes.append("daemon")
    models = {v: m for v in vendors if (m := settings.vendor(v).model) is not None}
    return EvalRunnersView(
        server=ServerRunnerOptions(vendors=vendors, vendor_required=len(vendors) > 1,
                                   default_vendor=vendors[0] if len(vendors) == 1 else None, models=models),
        daemon=DaemonRunnerOptions(available=bool(daemons), daemons=[
            DaemonEntry(daemon_id=d.daemon_id, name=d.name, last_seen_at=d.last_seen_at) for d in daemons]),
        run_button=RunButton(visible=bool(routes), routes=routes))


@dataclass(frozen=True)
class RunnerChoice:
    runner: RunnerKind
    vendor: VendorName | None = None
    model: str | None = None
    daemon_id: str | None = None


def _suspended(vendor: VendorName) -> Conflict:
    return Conflict(f"The {vendor} key is suspended (the vendor rejected it); an admin must replace the key "
                    "in the Eval runner settings before evaluations can use it.",
                    code="vendor_suspended", details={"vendor": vendor})


def vendor_choice(settings: EvalRunnerSettings, vendor: VendorName) -> RunnerChoice:
    runtime = settings.vendor(vendor)
    if runtime.status == "suspended":
        raise _suspended(vendor)
    if not runtime.usable or runtime.model is None:
        enabled = offered_vendors(settings)
        raise Conflict(f"{vendor} is not enabled for this tenant; "
                       + (f"use one of: {', '.join(enabled)}." if enabled
                          else "ask an admin to configure it, or run on your daemon."),
                       code="vendor_not_enabled", details={"vendor": vendor, "enabled_vendors": enabled})
    return RunnerChoice(runner="server", vendor=vendor, model=runtime.model)


def _daemon_choice(daemons: Sequence[AvailableDaemon], *, code: str, message: str) -> RunnerChoice:
    if not daemons:
        raise Conflict(message, code=code)
    # list_available is most-recent-heartbeat first: the daemon most likely to still be there.
    return RunnerChoice(runner="daemon", daemon_id=daemons[0].daemon_id)


def choose_runner(settings: EvalRunnerSettings, request: EvalRunRequest,
                  daemons: Callable[[], Sequence[AvailableDaemon]]) -> RunnerChoice:
    """Apply the dialog rules to a request. `daemons` is called only when the daemon route is in
    play, so a server dispatch never pays for a presence lookup."""
    if request.runner == "daemon":
        if request.vendor is not None:
            raise InvalidRequest("'vendor' applies to the server runner only; drop it, or use runner 'server'.",
                                 code="vendor_not_applicable", details={"runner": "daemon"})
        return _daemon_choice(daemons(), code="no_daemon_available",
                              message="You have no available daemon; start your daemon (it must have sent a "
                                      "heartbeat recently), or run on the server.")
    if request.vendor is not None:
        return vendor_choice(settings, request.vendor)

    vendors = offered_vendors(settings)
    if len(vendors) == 1:
        return vendor_choice(settings, vendors[0])
    if len(vendors) > 1:
        raise InvalidRequest(f"Both vendors are enabled; choose one with 'vendor': {' or '.join(vendors)}.",
                             code="vendor_required", details={"choices": vendors, "field": "vendor"})

    suspended = [v for v in VENDORS if settings.vendor(v).status == "suspended"]
    if request.runner == "server":
        if suspended:
            raise _suspended(suspended[0])
        raise Conflict("No vendor is enabled for the server runner; ask an admin to configure Anthropic or "
                       "OpenAI, or run on your daemon.", code="no_server_vendor")
    available = daemons()
    if available:
        return RunnerChoice(runner="daemon", daemon_id=available[0].daemon_id)
    if suspended:
        raise _suspended(suspended[0])
    raise Conflict("No runner is available: no vendor is enabled for this tenant and you have no available "
                   "daemon. Start your daemon, or ask an admin to configure a vendor.",
                   code="no_runner_available")


def check_threshold(value: int | None) -> int:
    if value is None:
        return DEFAULT_THRESHOLD
    if not MIN_THRESHOLD <= value <= MAX_THRESHOLD:
        raise InvalidRequest(f"threshold must be between {MIN_THRESHOLD} and {MAX_THRESHOLD} bytes.",
                             code="threshold_out_of_range",
                             details={"field": "threshold", "min": MIN_THRESHOLD, "max": MAX_THRESHOLD})
    return value


def check_idempotency_key(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if not _IDEMPOTENCY_KEY.match(value):
        raise InvalidRequest(f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_LENGTH} characters from "
                             "A-Z a-z 0-9 . _ : ~ + / = - (a UUID works).", code="invalid_idempotency_key")
    return value


@dataclass(frozen=True)
class DispatchPlan:
    questions: list[Question]
    threshold: int
    chain: bool
    choice: RunnerChoice
    catalog_version: int = 0
    trial: bool = False


def plan_dispatch(request: EvalRunRequest, settings: EvalRunnerSettings,
                  daemons: Callable[[], Sequence[AvailableDaemon]], catalog: ResolvedCatalog, *,
                  trial: Question | None = None) -> DispatchPlan:
    """Request validation first (400s), then the runner rules (400 vendor_required / 409s).

    Questions come from the tenant's enabled `catalog`, whose version the run records; a try-it run
    judges exactly its `trial` question instead (and takes no selection)."""
    threshold = check_threshold(request.threshold)
    if trial is not None:
        if request.questions is not None or request.skip is not None:
            raise InvalidRequest("A try-it run judges its one question; drop 'questions' and 'skip'.",
                                 code="selection_not_applicable")
        questions = [trial]
    else:
        questions = select_questions(request.questions, request.skip, catalog.questions, catalog.disabled_ids)
    return DispatchPlan(questions=questions, threshold=threshold, chain=request.chain,
                        choice=choose_runner(settings, request, daemons), catalog_version=catalog.version,
                        trial=trial is not None)
