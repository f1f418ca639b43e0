"""Admin-only route: test a vendor's stored key with one minimal judge call.

Apart from the settings routes because it needs the judges (prompt, verdict schema and parsing): a
cold container that reads or writes settings does not load them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chalicelib.api.admin_routes import ERRORS, SETTINGS_PATH, TAGS, VENDOR_PARAM
from chalicelib.api.http import RequestContext, endpoint
from chalicelib.domain.settings import parse_vendor
from chalicelib.services.connection_test import ConnectionTestResult

if TYPE_CHECKING:
    from chalicelib.services.connection_test import ConnectionTestService


def _connection_tests() -> ConnectionTestService:
    from chalicelib.wiring import container

    return container().connection_tests


@endpoint(SETTINGS_PATH + "/vendors/{vendor}/test", "POST", path_params=VENDOR_PARAM, auth="admin",
          response_model=ConnectionTestResult, tags=TAGS,
          extra_responses={**ERRORS, 404: "Unknown vendor", 409: "The vendor has no key or model"})
def test_eval_runner_vendor(ctx: RequestContext, vendor: str) -> ConnectionTestResult:
    """One minimal judge call with the stored key; a 401/403 from the vendor suspends it."""
    return _connection_tests().test_vendor_connection(ctx.principal, parse_vendor(vendor))
