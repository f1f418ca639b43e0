"""What the key-scrubbing tests share: a gateway-shaped key and whether a text still holds any piece of a key."""

from __future__ import annotations

from chalicelib.domain.judging import SECRET_FRAGMENT_CHARS

# Not "sk-" shaped: a gateway's own key format, so only the secret match (not a key-shape rule) saves it.
KEY = "gw_live_Q7mZ4xT9kL2pR8vN3bC6yH1d"


def leaked(text: str, secret: str = KEY) -> bool:
    """Does `text` hold any SECRET_FRAGMENT_CHARS-long piece of the secret, in any case?"""
    low, s = text.lower(), secret.lower()
    return any(s[i:i + SECRET_FRAGMENT_CHARS] in low for i in range(len(s) - SECRET_FRAGMENT_CHARS + 1))
