"""shoppingcart/inventory written with the OFFICIAL Apache Flink StateFun Python SDK
(PyPI apache-flink-statefun==3.3.0): the same contract as the Rust example's inventory
(functions/examples/shopping-cart/src/inventory.rs), so a test can put it in the chain
between Rust carts.

  states: in_stock, reserved (IntType)
  RequestItem from a cart: reserve if enough is in stock, answer ItemAvailability
  (RESERVED or UNAVAILABLE, with the stock left) to the caller.
  RestockItem: add to the stock, emit {"item_id","restocked","in_stock"} as JSON to
  egress shoppingcart/kinesis, stream inventory-updates, partition key = the item.

The protobuf classes are built at start from the runtime's descriptor set (a
FileDescriptorSet file, argv[1]), so no generated code is needed.

Usage: python inventory.py DESCRIPTORS [PORT]
Prints "listening on http://127.0.0.1:<port>" once it accepts requests.
"""

import json
import sys

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from serve import serve
from statefun import (
    IntType,
    RequestReplyHandler,
    StatefulFunctions,
    ValueSpec,
    kinesis_egress_message,
    make_protobuf_type,
    message_builder,
)


def load_messages(path):
    with open(path, "rb") as f:
        files = descriptor_pb2.FileDescriptorSet.FromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        if file.package == "shoppingcart":
            pool.Add(file)
    factory = message_factory.MessageFactory(pool)
    return {
        name: factory.GetPrototype(pool.FindMessageTypeByName(f"shoppingcart.{name}"))
        for name in ("RequestItem", "RestockItem", "ItemAvailability")
    }


MESSAGES = load_messages(sys.argv[1])
REQUEST_ITEM = make_protobuf_type(MESSAGES["RequestItem"])
RESTOCK_ITEM = make_protobuf_type(MESSAGES["RestockItem"])
ITEM_AVAILABILITY = make_protobuf_type(MESSAGES["ItemAvailability"])
ItemAvailability = MESSAGES["ItemAvailability"]

functions = StatefulFunctions()


@functions.bind(
    typename="shoppingcart/inventory",
    specs=[ValueSpec(name="in_stock", type=IntType), ValueSpec(name="reserved", type=IntType)],
)
def inventory(context, message):
    item = context.address.id
    if message.is_type(REQUEST_ITEM):
        request = message.as_type(REQUEST_ITEM)
        if request.quantity <= 0:
            raise ValueError(f"inventory {item}: quantity must be positive, got {request.quantity}")
        caller = context.caller
        if caller is None:
            raise ValueError(f"inventory {item}: RequestItem without a caller to answer")
        stock = context.storage.in_stock or 0
        if stock >= request.quantity:
            stock -= request.quantity
            context.storage.in_stock = stock
            context.storage.reserved = (context.storage.reserved or 0) + request.quantity
            status = ItemAvailability.RESERVED
        else:
            status = ItemAvailability.UNAVAILABLE
        answer = ItemAvailability(
            status=status, item_id=item, quantity=request.quantity, request_id=request.request_id, remaining=stock
        )
        context.send(
            message_builder(target_typename=caller.typename, target_id=caller.id, value=answer, value_type=ITEM_AVAILABILITY)
        )
    elif message.is_type(RESTOCK_ITEM):
        restock = message.as_type(RESTOCK_ITEM)
        if restock.quantity <= 0:
            raise ValueError(f"inventory {item}: restock quantity must be positive, got {restock.quantity}")
        stock = (context.storage.in_stock or 0) + restock.quantity
        context.storage.in_stock = stock
        update = {"item_id": item, "restocked": restock.quantity, "in_stock": stock}
        context.send_egress(
            kinesis_egress_message(
                typename="shoppingcart/kinesis",
                stream="inventory-updates",
                partition_key=item,
                value=json.dumps(update, separators=(",", ":")),
            )
        )
    else:
        raise TypeError(f"inventory {item}: unexpected message type {message.value_typename()}")


handler = RequestReplyHandler(functions)


if __name__ == "__main__":
    serve(handler, "inventory.py", int(sys.argv[2]) if len(sys.argv) > 2 else 0)
