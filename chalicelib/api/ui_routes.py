"""The web console: serves its static assets under /ui/ (public) and the stage's sign-in config.

The console is a no-build single-page app in `chalicelib/ui_static/` (packaged with the Lambda
like the rest of `chalicelib/`). Every asset goes out with a strict Content-Security-Policy and a
strong ETag; the SPA authenticates its own API calls with a bearer token it keeps in memory, so
these routes need no token. Only files that exist in the asset directory, with a known type and a
plain name, are served: anything else is the contract's 404.

Environment (read lazily, on first request, never at import):
  OIDC_CLIENT_ID         the console's public OIDC client id; set it (with AUTH_MODE=jwks) to get
                         authorization code + PKCE sign-in instead of token pasting
  OIDC_ISSUER            the OIDC issuer (authority); defaults to JWT_ISSUER
  OIDC_SCOPE             requested scopes; default "openid profile email"
  OIDC_API_TOKEN         which token the console sends to the API: access_token (default) or id_token
  OIDC_CONNECT_ORIGINS   extra origins (comma-separated) the console may call, for IdPs whose token
                         endpoint lives on another host than the issuer (e.g. a Cognito domain)
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from chalice import Response
from pydantic import BaseModel

from chalicelib.api.http import RequestContext, endpoint
from chalicelib.domain.errors import NotFound

STATIC_DIR = Path(__file__).resolve().parent.parent / "ui_static"
_TAGS = ("console",)
_ASSET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# The app's own files are not content-hashed (there is no build step), so browsers revalidate them
# on every load (a cheap 304 through the ETag); vendored libraries change only with their version.
_APP_CACHE = "no-cache"
_VENDOR_CACHE = "public, max-age=86400"
_DEFAULT_SCOPE = "openid profile email"
# Media types of the assets (documented per route in the OpenAPI document).
_ASSET_MEDIA_TYPES = tuple(dict.fromkeys(t.split(";")[0] for t in _CONTENT_TYPES.values()))


@dataclass(frozen=True)
class Asset:
    body: str
    content_type: str
    etag: str
    cache_control: str


def _asset_path(folder: str, name: str) -> Path | None:
    if not _ASSET_NAME.fullmatch(name) or Path(name).suffix.lower() not in _CONTENT_TYPES:
        return None
    base = (STATIC_DIR / folder if folder else STATIC_DIR).resolve()
    path = (base / name).resolve()
    if path.parent != base or not path.is_file():
        return None
    return path


def find_asset(folder: str, name: str) -> Asset | None:
    path = _asset_path(folder, name)
    if path is None:
        return None
    # Keyed on mtime so `make run` serves edited files at once; in Lambda the files never change.
    return _read_asset(str(path), path.stat().st_mtime_ns, folder == "vendor")


@lru_cache(maxsize=64)
def _read_asset(path: str, mtime_ns: int, vendored: bool) -> Asset:
    data = Path(path).read_bytes()
    etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
    return Asset(body=data.decode("utf-8"), content_type=_CONTENT_TYPES[Path(path).suffix.lower()], etag=etag,
                 cache_control=_VENDOR_CACHE if vendored else _APP_CACHE)


class ConsoleAuthConfig(BaseModel):
    mode: Literal["dev", "oidc", "token"]
    issuer: str | None = None
    client_id: str | None = None
    scope: str | None = None
    api_token: Literal["access_token", "id_token"] = "access_token"


class ConsoleConfig(BaseModel):
    """`GET /ui/config.json`: what the console needs before anyone signs in (nothing secret)."""

    stage: str
    auth: ConsoleAuthConfig


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def console_config() -> ConsoleConfig:
    from chalicelib.wiring import container

    cfg = container().config
    if cfg.auth_mode == "hs256":
        # Local/dev stage: tokens come from `make token`; there is no sign-in endpoint to call.
        return ConsoleConfig(stage=cfg.stage, auth=ConsoleAuthConfig(mode="dev"))
    issuer = _env("OIDC_ISSUER") or cfg.jwt_issuer
    client_id = _env("OIDC_CLIENT_ID")
    if not (issuer and client_id):
        return ConsoleConfig(stage=cfg.stage, auth=ConsoleAuthConfig(mode="token"))
    api_token: Literal["access_token", "id_token"] = (
        "id_token" if _env("OIDC_API_TOKEN") == "id_token" else "access_token")
    return ConsoleConfig(stage=cfg.stage, auth=ConsoleAuthConfig(
        mode="oidc", issuer=issuer, client_id=client_id, scope=_env("OIDC_SCOPE") or _DEFAULT_SCOPE,
        api_token=api_token))


def _origin(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


def content_security_policy(config: ConsoleConfig) -> str:
    connect = ["'self'"]
    if config.auth.mode == "oidc":
        extra = (_env("OIDC_CONNECT_ORIGINS") or "").split(",")
        for origin in (_origin(config.auth.issuer), *(_origin(o.strip()) for o in extra)):
            if origin and origin not in connect:
                connect.append(origin)
    return "; ".join([
        "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:",
        "connect-src " + " ".join(connect), "frame-ancestors 'none'", "base-uri 'none'",
        "form-action 'self'", "object-src 'none'",
    ])


# Browsers that once saw the console over HTTPS never downgrade to http for it (a year; the host and
# its subdomains only, no preload list). Ignored over plain http, so the local stack is unaffected.
STRICT_TRANSPORT_SECURITY = "max-age=31536000; includeSubDomains"


def _security_headers(config: ConsoleConfig) -> dict[str, str | list[str]]:
    return {
        "Strict-Transport-Security": STRICT_TRANSPORT_SECURITY,
        "Content-Security-Policy": content_security_policy(config),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
    }


def _serve(ctx: RequestContext, folder: str, name: str) -> Response:
    config = console_config()
    headers = _security_headers(config)
    if not folder and name == "config.json":
        headers.update({"Content-Type": "application/json", "Cache-Control": "no-store"})
        return Response(body=config.model_dump_json(), status_code=200, headers=headers)
    asset = find_asset(folder, name)
    if asset is None:
        shown = f"{folder}/{name}" if folder else name
        raise NotFound(f"The console has no file named '{shown[:120]}'; open /ui/ instead.",
                       code="asset_not_found")
    headers.update({"ETag": asset.etag, "Cache-Control": asset.cache_control})
    if asset.etag in (ctx.header("if-none-match") or ""):
        return Response(body="", status_code=304, headers=headers)
    headers["Content-Type"] = asset.content_type
    return Response(body=asset.body, status_code=200, headers=headers)


@endpoint("/ui", "GET", auth="public", tags=_TAGS, summary="The web console (single-page app)",
          response_content_types=("text/html",),
          extra_responses={301: "Redirect from /ui to /ui/"})
def console_index(ctx: RequestContext) -> Response:
    path = str((ctx.request.context or {}).get("path") or "")
    if path and not path.endswith("/"):
        # Relative asset URLs only resolve under /ui/; a relative Location keeps any stage prefix.
        return Response(body="", status_code=301, headers={"Location": "ui/", "Cache-Control": "no-cache",
                                                           "Strict-Transport-Security": STRICT_TRANSPORT_SECURITY})
    return _serve(ctx, "", "index.html")


@endpoint("/ui/{asset}", "GET", auth="public", tags=_TAGS, response_model=ConsoleConfig,
          response_content_types=("application/json", *_ASSET_MEDIA_TYPES),
          summary="A console asset, or config.json: the stage's sign-in mode, OIDC issuer and client id",
          extra_responses={304: "Not modified (If-None-Match)", 404: "No such console file"})
def console_asset(ctx: RequestContext, asset: str) -> Response:
    return _serve(ctx, "", asset)


@endpoint("/ui/vendor/{asset}", "GET", auth="public", tags=_TAGS, response_content_types=_ASSET_MEDIA_TYPES,
          summary="A vendored third-party console library",
          extra_responses={304: "Not modified (If-None-Match)", 404: "No such console file"})
def console_vendor_asset(ctx: RequestContext, asset: str) -> Response:
    return _serve(ctx, "vendor", asset)
