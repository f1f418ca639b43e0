"""Admin-only routes: the tenant's Eval runner settings (vendors, keys, run timeout), audit, test."""

from __future__ import annotations

from chalice import Blueprint

admin_bp = Blueprint(__name__)
