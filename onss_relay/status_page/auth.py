"""Who may read the status page: anyone on a loopback listener with no secret configured; otherwise whoever
sends the HTTP basic password (metrics.password_file) or the bearer token (metrics.token_file)."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hmac

from onss_relay.config import MetricsConfig, read_secret
from onss_relay.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Guard:
    """Given the secrets configured (None: not configured), decide whether a request's Authorization header
    may read a page. With neither secret every request may (config refuses that off loopback)."""

    user: str
    password: bytes | None
    token: bytes | None

    @property
    def open(self) -> bool:
        return self.password is None and self.token is None

    def allows(self, authorization: str | None) -> bool:
        """Given the request's Authorization header (or None), return whether it may read the page."""
        if self.open:
            return True
        scheme, _, value = (authorization or "").partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and self.token is not None:
            return hmac.compare_digest(value.encode(), self.token)
        if scheme.lower() == "basic" and self.password is not None:
            try:
                user, _, password = base64.b64decode(value, validate=True).partition(b":")
            except (binascii.Error, ValueError):
                return False
            same_user = hmac.compare_digest(user, self.user.encode())
            return hmac.compare_digest(password, self.password) and same_user
        return False

    def challenge(self) -> str:
        """Return the WWW-Authenticate header a refused request gets."""
        return 'Basic realm="onss-relay", charset="UTF-8"' if self.password is not None else 'Bearer realm="onss-relay"'


def guard_for(metrics: MetricsConfig) -> Guard:
    """Given the [metrics] settings, read the secret files they name and return the guard (ConfigError naming
    the key when a file cannot be read or is empty)."""
    password = read_secret(metrics.password_file, "metrics.password_file")
    token = read_secret(metrics.token_file, "metrics.token_file")
    for key, secret in (("metrics.password_file", password), ("metrics.token_file", token)):
        if secret is not None and not secret:
            raise ConfigError(f"{key}: the file is empty; put the secret in it")
    return Guard(metrics.user, password, token)
