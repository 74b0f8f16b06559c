"""A reflection client that is not ours (grpcio-reflection from PyPI): lists
the server's services and resolves ProcessMessage's types from the server
alone, with no proto files. Usage: reflection_client.py HOST:PORT"""

import sys

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

channel = grpc.insecure_channel(sys.argv[1])
database = ProtoReflectionDescriptorDatabase(channel)
print("services:", ",".join(sorted(database.get_services())))
pool = DescriptorPool(database)
method = pool.FindServiceByName("mcp.engine.v2.MCPEngine").FindMethodByName("ProcessMessage")
print("input:", method.input_type.full_name, ",".join(f.name for f in method.input_type.fields))
print("output:", method.output_type.full_name, ",".join(f.name for f in method.output_type.fields))
tenant = method.input_type.fields_by_name["tenant_context"].message_type
print("tenant_context:", tenant.full_name, ",".join(f.name for f in tenant.fields))
