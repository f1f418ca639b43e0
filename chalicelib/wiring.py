"""Composition root: builds AWS clients, adapters and services lazily, once per cold start.

Only this module imports both services and adapters. Nothing is built at import time; the first
request (or worker record) calls `container()`. Tests call `use_container(...)` with a container
pointed at moto, and `reset_container()` between tests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any, Literal

from chalicelib.config import RuntimeConfig, load_runtime_config
from chalicelib.domain.clock import Clock, SystemClock, iso
from chalicelib.domain.compaction import DEFAULT_THRESHOLD_BYTES
from chalicelib.domain.errors import Unauthenticated
from chalicelib.domain.principal import Principal

if TYPE_CHECKING:
    import boto3
    from chalice.app import Request

    from chalicelib.adapters.aggregate_store import DynamoAggregateStore
    from chalicelib.adapters.alert_webhook import GuardedWebhookSender
    from chalicelib.adapters.automation_store import DynamoAutomationStore
    from chalicelib.adapters.budget_ledger import DynamoBudgetLedger
    from chalicelib.adapters.catalog_store import DynamoCatalogStore
    from chalicelib.adapters.context_limit_store import DynamoContextLimitStore
    from chalicelib.adapters.daemon_store import DynamoDaemonStore
    from chalicelib.adapters.event_publisher import EventBridgePublisher
    from chalicelib.adapters.fact_store import DynamoFactStore
    from chalicelib.adapters.job_queue import SqsJobQueue
    from chalicelib.adapters.outbound_http import OutboundGuard
    from chalicelib.adapters.rate_limiter import DynamoPacingStore, SharedRateGate
    from chalicelib.adapters.run_index import DynamoRunIndex
    from chalicelib.adapters.run_store import DynamoRunStore
    from chalicelib.adapters.secret_store import SecretStore
    from chalicelib.adapters.settings_store import SettingsStore
    from chalicelib.adapters.spend_store import DynamoSpendStore
    from chalicelib.adapters.ws_push import WebSocketPush
    from chalicelib.domain.base_url import BaseUrlPolicy
    from chalicelib.domain.evaluation import VendorName
    from chalicelib.domain.judging import JudgeModel
    from chalicelib.domain.rate_limit import VendorCallGate
    from chalicelib.services.admin_settings import AdminSettingsService
    from chalicelib.services.analytics import ScoreAnalyticsService
    from chalicelib.services.automation_budget import AutomationBudget
    from chalicelib.services.automation_dispatch import AutomatedDispatch
    from chalicelib.services.catalog import CatalogService
    from chalicelib.services.connection_test import ConnectionTestService
    from chalicelib.services.daemons import DaemonService
    from chalicelib.services.deletion import DeletionService, DerivedDataCleaner
    from chalicelib.services.eval_batches import EvalBatchService
    from chalicelib.services.eval_context import EvalContextReader
    from chalicelib.services.eval_jobs import EvalJobService
    from chalicelib.services.eval_rules import EvalRuleService, RulePresence
    from chalicelib.services.eval_runs import DaemonDirectory, EvalRunService, SessionFacts
    from chalicelib.services.export import RunExportService
    from chalicelib.services.history import RunHistoryService
    from chalicelib.services.judge_facts import IndexedRepositories, JudgeFactRetention, JudgeFactService
    from chalicelib.services.judge_tuning import RunnerTuning
    from chalicelib.services.run_lifecycle import Contribution, Finalization, FinalizationParticipant, RunLifecycle
    from chalicelib.services.session_entries import SessionEntryService
    from chalicelib.services.sessions import SessionService
    from chalicelib.services.spend import SpendService
    from chalicelib.services.spend_admin import SpendAdminService
    from chalicelib.services.spend_admission import RunBudgeting
    from chalicelib.services.spend_estimates import SpendEstimator
    from chalicelib.services.vendor_batch_runs import VendorBatchRuns


class Container:
    def __init__(self, config: RuntimeConfig, *, clock: Clock | None = None,
                 session: boto3.Session | None = None) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self._session = session

    # -- AWS clients -------------------------------------------------------------------------
    @cached_property
    def session(self) -> boto3.Session:
        import boto3

        return self._session or boto3.Session(region_name=self.config.region)

    def client(self, service: str, **config: Any) -> Any:
        """The service's client, built on its first use (see `_ClientOnFirstUse`)."""

        def build() -> Any:
            from botocore.config import Config

            cfg = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=3, read_timeout=10,
                         tcp_keepalive=True, **config)
            return self.session.client(service, endpoint_url=self.config.aws_endpoint_url,  # type: ignore[call-overload]
                                       region_name=self.config.region, config=cfg)

        return _ClientOnFirstUse(build)

    @cached_property
    def dynamodb(self) -> Any:
        return self.client("dynamodb")

    @cached_property
    def secretsmanager(self) -> Any:
        return self.client("secretsmanager")

    @cached_property
    def sqs(self) -> Any:
        return self.client("sqs")

    @cached_property
    def s3(self) -> Any:
        # SigV4 always: presigned upload URLs must sign Content-Length (S3 then refuses any other
        # size) and the SSE-KMS headers, which botocore's SigV2 default for some regions does not.
        return self.client("s3", signature_version="s3v4")

    @cached_property
    def events(self) -> Any:
        return self.client("events")

    # -- auth --------------------------------------------------------------------------------
    @cached_property
    def token_verifier(self) -> Any:
        from chalicelib.adapters.jwt_tokens import HS256TokenVerifier, JWKSTokenVerifier

        cfg = self.config
        if cfg.auth_mode == "jwks":
            if not (cfg.jwks_url and cfg.jwt_issuer and cfg.jwt_audience):
                return _rejecting("AUTH_MODE=jwks needs JWKS_URL, JWT_ISSUER and JWT_AUDIENCE")
            from jwt import PyJWKClient

            return JWKSTokenVerifier(PyJWKClient(cfg.jwks_url, cache_keys=True, lifespan=3600, timeout=5),
                                     issuer=cfg.jwt_issuer, audience=cfg.jwt_audience)
        if not cfg.dev_jwt_secret:
            # A deployed `dev` stack: the template deliberately carries no secret. Fail closed with 401s.
            return _rejecting("AUTH_MODE=hs256 needs DEV_JWT_SECRET")
        return HS256TokenVerifier(cfg.dev_jwt_secret, issuer=cfg.jwt_issuer, audience=cfg.jwt_audience)

    def authenticate(self, request: Request) -> Principal:
        from chalicelib.api.http import bearer_token

        principal: Principal = self.token_verifier.verify(bearer_token(request))
        return principal

    def authenticate_token(self, token: str) -> Principal:
        if not token:
            raise Unauthenticated("A bearer token is required.", code="missing_token")
        principal: Principal = self.token_verifier.verify(token)
        return principal

    # -- eval-runner settings ----------------------------------------------------------------
    @cached_property
    def settings_store(self) -> SettingsStore:
        from chalicelib.adapters.settings_store import SettingsStore

        return SettingsStore(self.dynamodb, self.config.table_name,
                             cache_seconds=self.config.settings_cache_seconds, monotonic=self.clock.monotonic)

    @cached_property
    def secret_store(self) -> SecretStore:
        from chalicelib.adapters.secret_store import SecretStore

        return SecretStore(self.secretsmanager, prefix=self.config.secret_prefix,
                           kms_key_id=self.config.kms_key_id, cache_seconds=self.config.secret_cache_seconds,
                           monotonic=self.clock.monotonic)

    @cached_property
    def base_url_policy(self) -> BaseUrlPolicy:
        from chalicelib.domain.base_url import BaseUrlPolicy

        return BaseUrlPolicy(allowed_hosts=self.config.allowed_base_url_hosts,
                             allow_http=self.config.allow_http_base_urls,
                             allowed_ports=self.config.allowed_base_url_ports)

    @cached_property
    def outbound_guard(self) -> OutboundGuard:
        """Connect-time SSRF guard for every outbound URL (vendor SDKs; reuse it for webhooks)."""
        from chalicelib.adapters.outbound_http import OutboundGuard

        return OutboundGuard(self.base_url_policy)

    @cached_property
    def admin_settings(self) -> AdminSettingsService:
        from chalicelib.services.admin_settings import AdminSettingsService

        return AdminSettingsService(settings=self.settings_store, secrets=self.secret_store, clock=self.clock,
                                    base_url_policy=self.base_url_policy,
                                    max_run_timeout_seconds=self.config.max_run_timeout_seconds,
                                    context_limits=self.context_limit_store)

    @cached_property
    def context_limit_store(self) -> DynamoContextLimitStore:
        """The context limits vendors stated (`CTXLIMIT#…`), read by the worker and the settings view."""
        from chalicelib.adapters.context_limit_store import DynamoContextLimitStore

        return DynamoContextLimitStore(self.dynamodb, self.config.table_name)

    def build_judge_model(self, vendor: Literal["anthropic", "openai"], *, api_key: str, base_url: str | None,
                          max_retries: int, timeout_seconds: float, gate: VendorCallGate | None = None) -> JudgeModel:
        """Vendor SDK clients behind the stage's outbound guard (imported on first use so the API
        handler's cold start never loads the SDKs)."""
        from chalicelib.adapters.judge_models import build_judge_model

        return build_judge_model(vendor, api_key=api_key, base_url=base_url, max_retries=max_retries,
                                 timeout_seconds=timeout_seconds, gate=gate, outbound=self.outbound_guard)

    @cached_property
    def connection_tests(self) -> ConnectionTestService:
        from chalicelib.services.connection_test import ConnectionTestService

        return ConnectionTestService(settings=self.admin_settings, build_judge_model=self.build_judge_model,
                                     monotonic=self.clock.monotonic)

    # -- sessions ----------------------------------------------------------------------------
    @cached_property
    def sessions(self) -> SessionService:
        from chalicelib.adapters.session_store import DynamoSessionIndex, S3SessionObjects
        from chalicelib.adapters.upload_rate_store import DynamoUploadCounter
        from chalicelib.services.sessions import SessionService
        from chalicelib.services.upload_limits import UploadRateLimit

        cfg = self.config
        rate = UploadRateLimit(DynamoUploadCounter(self.dynamodb, table_name=cfg.table_name), self.clock,
                               limit=cfg.upload_rate_limit, window_seconds=cfg.upload_rate_window_seconds)
        return SessionService(objects=S3SessionObjects(self.s3, bucket=cfg.bucket_name, kms_key_id=cfg.kms_key_id),
                              index=DynamoSessionIndex(self.dynamodb, table_name=cfg.table_name), clock=self.clock,
                              upload_rate=rate.check, enqueue_upload=self.job_queue.send_session_upload,
                              on_stored=self._announce_stored_session,
                              retention_days=self._retention_days)

    @cached_property
    def eval_contexts(self) -> EvalContextReader:
        """The sessions service's reader without the service: dispatch's spend estimate reads eval contexts,
        so its first request builds no upload rate limit and imports no upload code or models."""
        from chalicelib.adapters.session_store import DynamoSessionIndex, S3SessionObjects
        from chalicelib.services.eval_context import EvalContextReader, read_session_record

        cfg = self.config
        index = DynamoSessionIndex(self.dynamodb, table_name=cfg.table_name)
        return EvalContextReader(S3SessionObjects(self.s3, bucket=cfg.bucket_name, kms_key_id=cfg.kms_key_id),
                                 index, partial(read_session_record, index))

    def _retention_days(self, tenant: str) -> int | None:
        """The tenant's retention (spend's limits, cached with them): history's TTLs and lifecycle tag."""
        return self.spend_store.limits(tenant).retention_days

    def _announce_stored_session(self, tenant: str, record: Any) -> None:
        """One job message per stored revision of a tenant with enabled rules: the online evaluation rules
        match it in the worker, never in the upload."""
        from chalicelib.domain.automation import SessionStoredNotice

        if not self.rule_presence.has_enabled_rules(tenant):
            return
        self.job_queue.send_session_stored(SessionStoredNotice(
            tenant=tenant, session_id=record.session_id, revision=record.revision, sha256=record.sha256))

    # -- judge catalog -----------------------------------------------------------------------
    @cached_property
    def catalog_store(self) -> DynamoCatalogStore:
        from chalicelib.adapters.catalog_store import DynamoCatalogStore

        # The head shares the settings' cache lifetime; versions are immutable and cached for good.
        return DynamoCatalogStore(self.dynamodb, self.config.table_name,
                                  cache_seconds=self.config.settings_cache_seconds, monotonic=self.clock.monotonic)

    @cached_property
    def catalog(self) -> CatalogService:
        from chalicelib.services.catalog import CatalogService

        return CatalogService(store=self.catalog_store, clock=self.clock, sessions=_ContextsOnFirstUse(self),
                              runs=lambda: self.eval_runs)

    # -- eval runs (dispatch side) -----------------------------------------------------------
    @cached_property
    def run_store(self) -> DynamoRunStore:
        from chalicelib.adapters.run_store import DynamoRunStore

        return DynamoRunStore(self.dynamodb, self.config.table_name)

    @cached_property
    def job_queue(self) -> SqsJobQueue:
        from chalicelib.adapters.job_queue import SqsJobQueue

        return SqsJobQueue(self.sqs, self.config.queue_url)

    @cached_property
    def eval_runs(self) -> EvalRunService:
        from chalicelib.services.eval_runs import EvalRunService

        return EvalRunService(runs=self.run_store, queue=self.job_queue, settings=self.admin_settings,
                              catalog=self.catalog, daemons=self._daemon_directory, clock=self.clock,
                              max_run_timeout_seconds=self.config.max_run_timeout_seconds,
                              lifecycle=self.run_lifecycle, budgeting=self.run_budgeting,
                              session_exists=self._session_exists, session_facts=self._session_facts)

    def _daemon_directory(self) -> DaemonDirectory:
        return self.daemon_service

    # -- run lifecycle and spend -------------------------------------------------------------
    @cached_property
    def budget_ledger(self) -> DynamoBudgetLedger:
        from chalicelib.adapters.budget_ledger import DynamoBudgetLedger

        return DynamoBudgetLedger(self.dynamodb, self.config.table_name)

    @cached_property
    def spend_store(self) -> DynamoSpendStore:
        from chalicelib.adapters.spend_store import DynamoSpendStore

        return DynamoSpendStore(self.dynamodb, self.config.table_name,
                                cache_seconds=self.config.settings_cache_seconds, monotonic=self.clock.monotonic)

    @cached_property
    def spend(self) -> SpendService:
        from chalicelib.services.spend import SpendService

        return SpendService(ledger=self.budget_ledger, settings=self.spend_store, clock=self.clock)

    @cached_property
    def spend_estimator(self) -> SpendEstimator:
        from chalicelib.services.spend_estimates import SpendEstimator

        # A dispatch carrying a quote reads no session: the eval-context reader is built on the first estimate.
        return SpendEstimator(sessions=_ContextsOnFirstUse(self), quotes=self.spend_store, clock=self.clock,
                              tuning=lambda: self.judge_tuning)

    @cached_property
    def run_budgeting(self) -> RunBudgeting:
        from chalicelib.services.spend_admission import RunBudgeting

        return RunBudgeting(spend=self.spend, estimator=self.spend_estimator, clock=self.clock,
                            questions_for_run=self.catalog.questions_for_run)

    @cached_property
    def spend_admin(self) -> SpendAdminService:
        from chalicelib.services.spend_admin import SpendAdminService

        return SpendAdminService(store=self.spend_store, ledger=self.budget_ledger, settings=self.admin_settings,
                                 clock=self.clock, webhook_policy=self.base_url_policy)

    @cached_property
    def alert_webhook(self) -> GuardedWebhookSender:
        """Budget alert webhook POSTs, through the stage's outbound guard."""
        from chalicelib.adapters.alert_webhook import GuardedWebhookSender

        return GuardedWebhookSender(self.outbound_guard, now=lambda: iso(self.clock.now()))

    @cached_property
    def run_lifecycle(self) -> RunLifecycle:
        """The one finalizer of eval runs. Participants: spend's settlement, history's score aggregates,
        judge facts, automation's batch entries and delayed-run promotion (others add theirs here)."""
        from chalicelib.services.budget_alerts import BudgetAlerts
        from chalicelib.services.run_lifecycle import RunLifecycle
        from chalicelib.services.spend import SpendSettlement

        # Dispatch builds the lifecycle on every cold container but finalizes a run only when it fails:
        # the participants below (and history's, judge facts' and automation's modules) load on first use.
        def score_aggregation() -> FinalizationParticipant:
            from chalicelib.services.analytics import ScoreAggregation

            return ScoreAggregation(self.score_analytics)

        def automation() -> FinalizationParticipant:
            from chalicelib.services.automation_dispatch import AutomationParticipant

            return AutomationParticipant(lambda: self.automated_dispatch, self._record_batch_entries)

        alerts = BudgetAlerts(events=lambda: self.event_publisher, webhook=lambda: self.alert_webhook,
                              deliveries=self.spend_store)
        settlement = SpendSettlement(ledger=self.budget_ledger, settings=self.spend_store, clock=self.clock,
                                     alerts=alerts)
        return RunLifecycle(runs=self.run_store, clock=self.clock,
                            worker_grace_seconds=self.config.worker_grace_seconds,
                            participants=[settlement, _ParticipantOnFirstUse("history", score_aggregation),
                                          _ParticipantOnFirstUse("judge_facts", lambda: self.judge_fact_retention),
                                          _ParticipantOnFirstUse("automation", automation)],
                            registry=self.budget_ledger, daemon_deadlines=self._daemon_directory)

    # -- online and bulk evaluation (rules, eval batches, delayed runs) ------------------------
    @cached_property
    def automation_store(self) -> DynamoAutomationStore:
        from chalicelib.adapters.automation_store import DynamoAutomationStore

        return DynamoAutomationStore(self.dynamodb, self.config.table_name)

    def _record_batch_entries(self, tenant: str, batch_id: str, entries: Mapping[str, Any]) -> None:
        self.automation_store.set_batch_entries(tenant, batch_id, entries)

    @cached_property
    def automated_dispatch(self) -> AutomatedDispatch:
        from chalicelib.services.automation_dispatch import AutomatedDispatch

        return AutomatedDispatch(runs=self.run_store, store=self.automation_store, queue=self.job_queue,
                                 settings=self.admin_settings, catalog=self.catalog, budgeting=self.run_budgeting,
                                 lifecycle=self.run_lifecycle, clock=self.clock,
                                 max_run_timeout_seconds=self.config.max_run_timeout_seconds,
                                 on_batch_entries=self._record_batch_entries,
                                 on_refused=lambda run, code: self.eval_rules.run_refused(run, code))

    @cached_property
    def rule_presence(self) -> RulePresence:
        from chalicelib.services.eval_rules import RulePresence

        return RulePresence(self.automation_store, ttl_seconds=self.config.settings_cache_seconds,
                            monotonic=self.clock.monotonic)

    @cached_property
    def eval_rules(self) -> EvalRuleService:
        from chalicelib.adapters.session_store import DynamoSessionIndex
        from chalicelib.services.eval_rules import EvalRuleService

        return EvalRuleService(store=self.automation_store, settings=self.admin_settings, catalog=self.catalog,
                               dispatch=self.automated_dispatch, clock=self.clock, presence=self.rule_presence,
                               sessions=DynamoSessionIndex(self.dynamodb, table_name=self.config.table_name),
                               budget=self.automation_budget)

    @cached_property
    def eval_batches(self) -> EvalBatchService:
        from chalicelib.adapters.session_store import DynamoSessionIndex
        from chalicelib.services.eval_batches import EvalBatchService

        return EvalBatchService(store=self.automation_store, runs=self.run_store, dispatch=self.automated_dispatch,
                                sessions=DynamoSessionIndex(self.dynamodb, table_name=self.config.table_name),
                                cancel=self.eval_runs, clock=self.clock, budget=self.automation_budget)

    @cached_property
    def automation_budget(self) -> AutomationBudget:
        from chalicelib.services.automation_budget import AutomationBudget

        return AutomationBudget(budgeting=self.run_budgeting, estimator=self.spend_estimator, spend=self.spend,
                                questions_for_run=self.catalog.questions_for_run, clock=self.clock)

    # -- session entries (trace viewer, daemon tool data) ------------------------------------
    @cached_property
    def session_entries(self) -> SessionEntryService:
        from chalicelib.services.session_entries import SessionEntryService

        return SessionEntryService(self.sessions)

    # -- judge facts -------------------------------------------------------------------------
    @cached_property
    def fact_store(self) -> DynamoFactStore:
        from chalicelib.adapters.fact_store import DynamoFactStore

        return DynamoFactStore(self.dynamodb, self.config.table_name)

    @cached_property
    def session_repositories(self) -> IndexedRepositories:
        from chalicelib.adapters.session_store import DynamoSessionIndex
        from chalicelib.services.judge_facts import IndexedRepositories

        return IndexedRepositories(DynamoSessionIndex(self.dynamodb, table_name=self.config.table_name))

    @cached_property
    def judge_fact_retention(self) -> JudgeFactRetention:
        """The run lifecycle participant that keeps a finalized run's retained facts."""
        from chalicelib.services.judge_facts import JudgeFactRetention

        return JudgeFactRetention(self.fact_store, self.session_repositories)

    @cached_property
    def judge_facts(self) -> JudgeFactService:
        from chalicelib.services.judge_facts import JudgeFactService, TenantFactSettings

        return JudgeFactService(store=self.fact_store, sessions=self.session_repositories,
                                settings=TenantFactSettings(self.admin_settings))

    # -- daemon runner -----------------------------------------------------------------------
    @cached_property
    def daemon_store(self) -> DynamoDaemonStore:
        from chalicelib.adapters.daemon_store import DynamoDaemonStore

        return DynamoDaemonStore(self.dynamodb, self.config.table_name)

    @cached_property
    def ws_push(self) -> WebSocketPush:
        from chalicelib.adapters.ws_push import WebSocketPush, management_endpoint

        cfg = self.config
        endpoint = management_endpoint(endpoint_url=cfg.websocket_endpoint_url, api_id=cfg.websocket_api_id,
                                       stage=cfg.websocket_stage, region=cfg.region)
        return WebSocketPush(self._management_api_client, endpoint)

    def _management_api_client(self, endpoint: str) -> Any:
        from botocore.config import Config

        cfg = Config(retries={"mode": "standard", "max_attempts": 2}, connect_timeout=2, read_timeout=5)
        return self.session.client("apigatewaymanagementapi", endpoint_url=endpoint,
                                   region_name=self.config.region, config=cfg)

    @cached_property
    def daemon_service(self) -> DaemonService:
        from chalicelib.services.daemon_results import DaemonRunReporter
        from chalicelib.services.daemons import DaemonService

        reporter = DaemonRunReporter(store=self.daemon_store, runs=self.run_store, clock=self.clock,
                                     lifecycle=self.run_lifecycle,
                                     trace_length=lambda t, s, c: self.sessions.trace_length(t, s, c))
        return DaemonService(store=self.daemon_store, runs=self.run_store, push=self.ws_push, clock=self.clock,
                             reporter=reporter, questions=self.catalog, authenticate_token=self.authenticate_token,
                             known_patterns=lambda tenant, sid: self.judge_facts.known_patterns(tenant, sid))

    def _session_facts(self, tenant: str, session_id: str) -> SessionFacts | None:
        """One consistent GetItem of the session record at dispatch (history's denormalisation)."""
        from chalicelib.adapters.session_store import DynamoSessionIndex
        from chalicelib.services.eval_runs import SessionFacts

        record = DynamoSessionIndex(self.dynamodb, table_name=self.config.table_name).get_session(
            tenant, session_id, keep=("expires_at",))
        if record is None:
            return None
        repository, expires = record.get("repository"), record.get("expires_at")
        return SessionFacts(repository=repository if isinstance(repository, str) else None,
                            expires_at=int(expires) if isinstance(expires, int | float) else None)

    def _session_exists(self, tenant: str, session_id: str) -> bool:
        from chalicelib.adapters.session_store import DynamoSessionIndex

        return DynamoSessionIndex(self.dynamodb, table_name=self.config.table_name).get_session(
            tenant, session_id) is not None

    # -- eval worker (SQS job -> judges -> stored result) ------------------------------------
    @cached_property
    def event_publisher(self) -> EventBridgePublisher:
        from chalicelib.adapters.event_publisher import EventBridgePublisher

        return EventBridgePublisher(self.events, self.config.event_bus_name)

    @cached_property
    def judge_tuning(self) -> RunnerTuning:
        # Assign before first use of `eval_jobs` to change it (tests use short poll intervals).
        from chalicelib.services.judge_tuning import RunnerTuning

        return RunnerTuning(retry_rate_limited=self.config.vendor_rate_limiter != "off")

    @cached_property
    def pacing_store(self) -> DynamoPacingStore:
        from chalicelib.adapters.rate_limiter import DynamoPacingStore
        from chalicelib.domain.rate_limit import RateLimitPolicy

        policy = RateLimitPolicy(use_advertised=self.config.vendor_rate_limiter != "reactive")
        return DynamoPacingStore(self.dynamodb, self.config.table_name, policy=policy)

    def rate_gate(self, tenant: str, vendor: VendorName, *, log_fields: Mapping[str, Any]) -> SharedRateGate:
        """A run's view of the fleet-wide limiter of (tenant, vendor); built per run, in its event loop."""
        from chalicelib.adapters.rate_limiter import SharedRateGate

        return SharedRateGate(self.pacing_store, tenant, vendor, log_fields=log_fields)

    @cached_property
    def eval_jobs(self) -> EvalJobService:
        from chalicelib.services.eval_jobs import EvalJobService

        # Vendor SDK clients are built per run from the tenant's key (and closed after the run).
        return EvalJobService(runs=self.run_store, settings=self.admin_settings, sessions=self.sessions,
                              questions=self.catalog, build_judge_model=self.build_judge_model,
                              events=self.event_publisher, clock=self.clock,
                              grace_seconds=self.config.worker_grace_seconds, lifecycle=self.run_lifecycle,
                              tuning=self.judge_tuning,
                              rate_gates=(self.rate_gate if self.config.vendor_rate_limiter in ("shared", "reactive")
                                          else None),
                              context_limits=self.context_limit_store, stored=self.sessions, facts=self.judge_facts)

    # -- batch mode: judge calls through the vendors' batch APIs -------------------------------
    def build_batch_client(self, vendor: VendorName, *, api_key: str, base_url: str | None) -> Any:
        """A vendor batch API client behind the stage's outbound guard (SDK imported on first use)."""
        from chalicelib.adapters.vendor_batches import build_batch_client

        return build_batch_client(vendor, api_key=api_key, base_url=base_url, outbound=self.outbound_guard)

    @cached_property
    def vendor_batch_runs(self) -> VendorBatchRuns:
        from chalicelib.services.vendor_batch_runs import VendorBatchRuns

        return VendorBatchRuns(runs=self.run_store, store=self.automation_store, settings=self.admin_settings,
                               sessions=self.sessions, questions=self.catalog, clients=self.build_batch_client,
                               counting_model=self.build_judge_model, lifecycle=self.run_lifecycle,
                               events=self.event_publisher, clock=self.clock, tuning=self.judge_tuning,
                               context_limits=self.context_limit_store)

    # -- history: tenant-wide list, analytics, export, deletion -------------------------------
    @cached_property
    def run_index(self) -> DynamoRunIndex:
        from chalicelib.adapters.run_index import DynamoRunIndex

        return DynamoRunIndex(self.dynamodb, self.config.table_name)

    @cached_property
    def run_history(self) -> RunHistoryService:
        from chalicelib.adapters.cursor_keys import DynamoCursorKeys
        from chalicelib.services.history import RunHistoryService

        return RunHistoryService(index=self.run_index, runs=self.run_store,
                                 cursor_keys=DynamoCursorKeys(self.dynamodb, self.config.table_name), clock=self.clock)

    @cached_property
    def aggregate_store(self) -> DynamoAggregateStore:
        from chalicelib.adapters.aggregate_store import DynamoAggregateStore

        return DynamoAggregateStore(self.dynamodb, self.config.table_name)

    @cached_property
    def score_analytics(self) -> ScoreAnalyticsService:
        from chalicelib.services.analytics import ScoreAnalyticsService

        return ScoreAnalyticsService(store=self.aggregate_store, clock=self.clock)

    @cached_property
    def run_exports(self) -> RunExportService:
        from chalicelib.adapters.export_store import S3ExportObjects
        from chalicelib.services.export import RunExportService

        cfg = self.config
        return RunExportService(index=self.run_index, results=self.run_store, clock=self.clock,
                                objects=S3ExportObjects(self.s3, bucket=cfg.bucket_name,
                                                        kms_key_id=cfg.kms_key_id))

    def derived_data_cleaners(self) -> list[DerivedDataCleaner]:
        """What other features derive from a run or session and must delete with it (judge facts, the
        rules' decisions); each is told about every deleted run and session."""
        from chalicelib.services.eval_rules import RuleHitCleaner

        return [self.judge_facts, RuleHitCleaner(self.automation_store)]

    @cached_property
    def deletions(self) -> DeletionService:
        from chalicelib.adapters.audit_store import DynamoDeletionAudit
        from chalicelib.adapters.session_store import DynamoSessionIndex, S3SessionObjects
        from chalicelib.services.deletion import DeletionService

        cfg = self.config
        return DeletionService(
            sessions=DynamoSessionIndex(self.dynamodb, table_name=cfg.table_name),
            traces=S3SessionObjects(self.s3, bucket=cfg.bucket_name, kms_key_id=cfg.kms_key_id),
            runs=self.run_store, aggregates=self.aggregate_store,
            audit=DynamoDeletionAudit(self.dynamodb, cfg.table_name), clock=self.clock,
            settlement=self.run_lifecycle, cleaners=self.derived_data_cleaners())


def _rejecting(reason: str) -> Any:
    from chalicelib.adapters.jwt_tokens import RejectingTokenVerifier
    from chalicelib.observability import logger

    logger.error("token verification is not configured; every request is answered 401",
                 extra={"reason": reason})
    return RejectingTokenVerifier(reason)


_container: Container | None = None


def container() -> Container:
    global _container
    if _container is None:
        _container = Container(load_runtime_config())
    return _container


def use_container(new: Container) -> None:
    global _container
    _container = new


def reset_container() -> None:
    global _container
    _container = None


# -- built on first use --------------------------------------------------------------------------
# Dispatch (on every cold start) builds the catalog and the run lifecycle, but finalizes a run or reads
# a session's trace through the catalog only on other paths: those parts, and the modules behind them
# (history's aggregates, judge facts, automation; the session ingest for the catalog), are built the
# first time they are called.


class _ClientOnFirstUse:
    """An AWS client built on first use: adapters take their client when they are built, but a request
    must not pay for clients it never calls (building one loads the service's model: GET settings and
    dispatch build the settings service, whose secret store holds a Secrets Manager client they never
    call). Every attribute (methods, `meta`, `exceptions`) is the built client's."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._client: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._client is None:
            self._client = self._build()
        return getattr(self._client, name)


class _ContextsOnFirstUse:
    """The session reader of the spend estimate and of the catalog (its preview and try-it): the eval-context
    reader, built when called (a dispatch carrying a quote reads no session, and neither loads the upload side)."""

    def __init__(self, container: Container) -> None:
        self._container = container

    def get_session(self, tenant: str, session_id: str) -> Any:
        return self._container.eval_contexts.get_session(tenant, session_id)

    def load_eval_context(self, tenant: str, session_id: str, threshold: int | str | None = DEFAULT_THRESHOLD_BYTES,
                          chain: bool = False) -> Any:
        return self._container.eval_contexts.load(tenant, session_id, threshold, chain)


class _ParticipantOnFirstUse:
    """A run-lifecycle participant built the first time a run is finalized (`name` is the participant's)."""

    def __init__(self, name: str, build: Callable[[], FinalizationParticipant]) -> None:
        self.name = name
        self._build = build
        self._built: FinalizationParticipant | None = None

    def _participant(self) -> FinalizationParticipant:
        if self._built is None:
            self._built = self._build()
        return self._built

    def contribute(self, final: Finalization, *, attempt: int, refused: Mapping[str, Any] | None) -> Contribution:
        return self._participant().contribute(final, attempt=attempt, refused=refused)

    def after_finalized(self, final: Finalization) -> None:
        self._participant().after_finalized(final)
