"""fairy.v1: messages (``fairy_pb2``), service stubs (``fairy_pb2_grpc``) and the hand-written rules around
them (``jobs``, ``settings``).

Nothing is imported here, so ``fairy_proto.v1.settings`` loads without protobuf or gRPC (the model library
and the Blender extension's UI read it); ``from fairy_proto.v1 import fairy_pb2`` imports the submodule.
"""
