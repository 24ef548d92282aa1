"""A gRPC client that knows nothing of Meridian's protos: it learns the API
from the gateway's server reflection, creates a ticket with messages built
from the reflected descriptors, and prints what it found as JSON.

Usage: reflection_client.py HOST:PORT
"""

import json
import sys

import grpc
from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main(target: str) -> None:
    channel = grpc.insecure_channel(target)
    database = ProtoReflectionDescriptorDatabase(channel)
    services = sorted(database.get_services())

    pool = descriptor_pool.DescriptorPool(database)
    service = pool.FindServiceByName("meridian.v1.TicketService")
    method = service.FindMethodByName("CreateTicket")
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)

    create = channel.unary_unary(
        f"/{service.full_name}/{method.name}",
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )
    response = create(
        request_class(subject="From Python", customer="reflection", tier="standard"),
        timeout=10,
    )
    print(
        json.dumps(
            {
                "services": services,
                "methods": [m.name for m in service.methods],
                "ticket_id": response.ticket.id,
                "owner_region": response.ticket.owner.owner_region,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
