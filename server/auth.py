"""Bearer-token authentication for every method except the health service."""

from __future__ import annotations

import hmac

import grpc
from fairy_proto.v1.status import error_trailers

__all__ = ["BearerTokenInterceptor"]

_OPEN_PREFIXES = ("/grpc.health.v1.Health/",)


def _aborting_handler(handler: grpc.RpcMethodHandler | None, message: str) -> grpc.RpcMethodHandler:
    def abort(request_or_iterator, context):
        context.set_trailing_metadata(error_trailers("AuthenticationError"))
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    # Same shape as the real method, so streaming calls fail as cleanly as unary ones.
    streaming_in = bool(handler and handler.request_streaming)
    streaming_out = bool(handler and handler.response_streaming)
    if streaming_in and streaming_out:
        return grpc.stream_stream_rpc_method_handler(abort)
    if streaming_in:
        return grpc.stream_unary_rpc_method_handler(abort)
    if streaming_out:
        return grpc.unary_stream_rpc_method_handler(abort)
    return grpc.unary_unary_rpc_method_handler(abort)


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Refuses a missing or wrong ``authorization: Bearer <token>`` with UNAUTHENTICATED."""

    def __init__(self, token: str):
        if not token:
            raise ValueError("an empty token would let anyone in")
        self._expected = f"Bearer {token}".encode()

    def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method.startswith(_OPEN_PREFIXES):
            return continuation(handler_call_details)
        presented = b""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                presented = value.encode() if isinstance(value, str) else bytes(value)
                break
        if hmac.compare_digest(presented, self._expected):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        reason = "missing bearer token" if not presented else "wrong bearer token"
        return _aborting_handler(handler, f"{reason}: this server requires `authorization: Bearer <token>`")
