"""Service-account tokens, as the API server's TokenRequest issues them for projected volumes.

https://kubernetes.io/docs/reference/kubernetes-api/authentication-resources/token-request-v1/ : a JWT
with the audience, expiry, issuer, subject ``system:serviceaccount:<namespace>:<account>`` and the
``kubernetes.io`` claims. Signed here with HS256 and a key of the runner's own (nobody verifies it but a
test's stand-in, which can be made the issuer instead: ``PodRunner(token_issuer=...)``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time

TOKEN_ISSUER = "https://kubernetes.default.svc.cluster.local"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenSigner:
    """Service-account tokens as the API server's TokenRequest issues them: a JWT (here signed HS256 with
    a key of the runner's) with the audience, expiry and ``kubernetes.io`` claims of the pod's account."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def __call__(self, namespace: str, account: str, audience: str, seconds: int) -> str:
        issued = int(time.time())
        header = {"alg": "HS256", "kid": _b64(hashlib.sha256(self._key).digest()[:8]), "typ": "JWT"}
        claims = {
            "aud": [audience],
            "exp": issued + seconds,
            "iat": issued,
            "nbf": issued,
            "iss": TOKEN_ISSUER,
            "sub": f"system:serviceaccount:{namespace}:{account}",
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": account}},
        }
        signing = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        signature = hmac.new(self._key, signing.encode(), hashlib.sha256).digest()
        return f"{signing}.{_b64(signature)}"
