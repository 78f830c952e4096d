"""fairy.v1: messages (``fairy_pb2``) and service stubs (``fairy_pb2_grpc``)."""

from . import fairy_pb2, fairy_pb2_grpc

__all__ = ["fairy_pb2", "fairy_pb2_grpc"]
