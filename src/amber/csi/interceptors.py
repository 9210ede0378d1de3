"""The one way Amber's server interceptors wrap a CSI method's behaviour.

gRPC hands an interceptor the method's handler; to run code around the call, the interceptor
must build a new handler of the same kind around a wrapped behaviour. `WrappingInterceptor`
does that once: a subclass says only how to wrap a unary and a server-streaming behaviour.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc

__all__ = ["WrappingInterceptor"]


class WrappingInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped
    """Wraps the behaviour of every known unary and server-streaming method.

    Unknown methods (gRPC answers UNIMPLEMENTED) and client streams (CSI has none) pass
    through untouched. `method` is the full gRPC method name (`/csi.v1.Node/NodeGetInfo`).
    """

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None or handler.request_streaming:
            return handler
        method: str = details.method
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.unary_unary_rpc_method_handler(
            self._wrap_unary(method, handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _wrap_unary(self, method: str, inner: Callable[[Any, Any], Any]) -> Callable[..., Any]:
        raise NotImplementedError

    def _wrap_stream(
        self, method: str, inner: Callable[[Any, Any], Iterator[Any]]
    ) -> Callable[..., Iterator[Any]]:
        raise NotImplementedError
