"""Identity validation for the widget: the host site vouches for its signed-in customer with an HMAC.

The host's backend serializes the customer's attributes as a JSON string and signs exactly that string with
HMAC-SHA256 and the secret it shares with the gateway (hex digest). Signing the exact string means no
canonical-JSON rules for host sites to get wrong in their language.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field

from sessions.models import PROFILE_FIELDS

_MAX_VALUE_CHARS = 200


@dataclass(frozen=True, slots=True)
class ClaimedIdentity:
    profile: dict[str, str] = field(default_factory=dict)
    verified: bool = False


def sign_identity(payload: str, secret: str) -> str:
    """What a host site computes server-side; used by the demo page and tests."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def read_identity(payload: str | None, signature: str | None, secret: str | None) -> ClaimedIdentity:
    """Profile fields from the host page; ``verified`` only when the HMAC matches.

    A bad or missing signature does not reject the visitor: the claims are kept, marked unverified.
    """
    if not payload:
        return ClaimedIdentity()
    try:
        data = json.loads(payload)
    except ValueError:
        return ClaimedIdentity()
    if not isinstance(data, dict):
        return ClaimedIdentity()
    raw_id = data.get("id", data.get("external_id"))
    values = {**data, "external_id": raw_id}
    profile = {
        name: str(values[name])[:_MAX_VALUE_CHARS]
        for name in PROFILE_FIELDS
        if isinstance(values.get(name), str | int) and str(values[name]).strip()
    }
    verified = bool(
        secret and signature and hmac.compare_digest(sign_identity(payload, secret), signature.lower())
    )
    return ClaimedIdentity(profile, verified)
