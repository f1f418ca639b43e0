"""Who is calling: the authenticated principal derived from a verified bearer token."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

from chalicelib.domain.errors import Forbidden

# Tenant and user ids end up inside DynamoDB keys, S3 keys and Secrets Manager names, so they
# are restricted to characters that are safe in all three.
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+=-]{0,127}$")


class Principal(BaseModel):
    model_config = ConfigDict(frozen=True)

    tenant: str
    user: str
    roles: tuple[str, ...] = ()
    # The token's `exp` (epoch seconds): what a long-lived WebSocket connection may not outlive.
    expires_at: int | None = None

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    def require_admin(self) -> None:
        if not self.is_admin:
            raise Forbidden("This endpoint is for tenant admins only; ask an admin of your tenant.",
                            code="admin_required")
