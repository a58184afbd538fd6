"""Guard an AI agent's tool calls with an AegisAgent gateway.

    from aegis_gateway import Client

    aegis = Client("http://127.0.0.1:8080", token=AGENT_TOKEN)

    @aegis.protect(tool="github", action="merge_pull_request",
                   resource=lambda repo, pr: f"{repo}#{pr}", source_trust="untrusted_external")
    def merge(repo: str, pr: int) -> None: ...

`merge` runs only when the gateway answers `allow`; a deny raises `Denied`, a call that needs
an operator raises `ApprovalRequired` (or waits, with `wait=True`), and a gateway that cannot
answer raises `GatewayUnavailable` (fail closed).
"""

from ._canonical import action_hash
from .client import AsyncClient, Client
from .errors import (
    AegisError,
    ApprovalRejected,
    ApprovalRequired,
    Denied,
    GatewayError,
    GatewayUnavailable,
    UnexpectedResponse,
)
from .models import Approval, Decision, ReceiptRef
from .operator import OperatorClient
from .receipts import VerificationResult, verify_receipts

__all__ = [
    "AegisError",
    "Approval",
    "ApprovalRejected",
    "ApprovalRequired",
    "AsyncClient",
    "Client",
    "Decision",
    "Denied",
    "GatewayError",
    "GatewayUnavailable",
    "OperatorClient",
    "ReceiptRef",
    "UnexpectedResponse",
    "VerificationResult",
    "action_hash",
    "verify_receipts",
]
