"""Two stateful functions written with the OFFICIAL Apache Flink StateFun Python SDK
(PyPI apache-flink-statefun==3.3.0), served over plain HTTP with the standard library.

Used by tests/tests/python_compat.rs to prove that our runtime drives StateFun SDK
functions unchanged: state negotiation (incomplete_invocation_context, including an
expiration spec), state mutations, function-to-function messages and Kinesis egress.

  compat/greeter  states: seen (IntType, no expiry), last_name (StringType, expire after write 1 h)
                  on a name (StringType): seen += 1, last_name = name, emits
                  "Hello <name>! (greeting #<seen>)" to egress compat/kinesis, stream `greetings`,
                  partition key = the function id; on the first greeting of an id it also sends
                  the name to compat/counter/all.
  compat/counter  state: total (IntType); per message total += 1 and emits "total=<n>" to
                  stream `totals` (partition key = the function id).

Usage: python greeter.py [PORT]   (PORT 0 or absent: any free port)
Prints "listening on http://127.0.0.1:<port>" on stdout once it accepts requests; logs one line
per request to stderr.
"""

import sys
from datetime import timedelta

from statefun import (
    IntType,
    RequestReplyHandler,
    StatefulFunctions,
    StringType,
    ValueSpec,
    kinesis_egress_message,
    message_builder,
)
from serve import serve
from statefun.request_reply_pb2 import FromFunction, ToFunction

EGRESS = "compat/kinesis"

functions = StatefulFunctions()


@functions.bind(
    typename="compat/greeter",
    specs=[
        ValueSpec(name="seen", type=IntType),
        ValueSpec(name="last_name", type=StringType, expire_after_write=timedelta(hours=1)),
    ],
)
def greeter(context, message):
    # Messages from an ingress carry no caller (StateFun protocol: Invocation.caller absent).
    if context.caller is not None:
        raise ValueError(f"greeter expects ingress messages only, got one from {context.caller}")
    if not message.is_string():
        raise TypeError(f"greeter expects {StringType.typename}, got {message.value_typename()}")
    name = message.as_string()
    seen = (context.storage.seen or 0) + 1
    context.storage.seen = seen
    context.storage.last_name = name
    context.send_egress(
        kinesis_egress_message(
            typename=EGRESS,
            stream="greetings",
            partition_key=context.address.id,
            value=f"Hello {name}! (greeting #{seen})",
        )
    )
    if seen == 1:
        context.send(message_builder(target_typename="compat/counter", target_id="all", str_value=name))


@functions.bind(typename="compat/counter", specs=[ValueSpec(name="total", type=IntType)])
def counter(context, message):
    # A function-to-function message carries its sender as the caller.
    caller = context.caller
    if caller is None or caller.typename != "compat/greeter":
        raise ValueError(f"counter expects messages from compat/greeter, got caller {caller}")
    if not message.is_string():
        raise TypeError(f"counter expects {StringType.typename}, got {message.value_typename()}")
    total = (context.storage.total or 0) + 1
    context.storage.total = total
    context.send_egress(
        kinesis_egress_message(typename=EGRESS, stream="totals", partition_key=context.address.id, value=f"total={total}")
    )


handler = RequestReplyHandler(functions)


def describe(request: bytes, reply: bytes) -> str:
    """One log line per request: target, states received, batch size, and what we answered."""
    to_fn = ToFunction()
    to_fn.ParseFromString(request)
    inv = to_fn.invocation
    target = f"{inv.target.namespace}/{inv.target.type}/{inv.target.id}"
    def state(s):
        if not s.HasField("state_value"):
            return "unset"  # no TypedValue at all
        if not s.state_value.has_value:
            return f"empty:{s.state_value.typename}"  # a TypedValue with has_value = false
        return "set"

    states = ",".join(f"{s.state_name}={state(s)}" for s in inv.state)
    from_fn = FromFunction()
    from_fn.ParseFromString(reply)
    kind = from_fn.WhichOneof("response")
    if kind == "incomplete_invocation_context":
        missing = ",".join(
            f"{m.state_name}:{m.type_typename}:mode={m.expiration_spec.mode}/{m.expiration_spec.expire_after_millis}ms"
            for m in from_fn.incomplete_invocation_context.missing_values
        )
        answer = f"incomplete(missing {missing})"
    else:
        result = from_fn.invocation_result
        answer = (
            f"result(mutations={len(result.state_mutations)} messages={len(result.outgoing_messages)} "
            f"egress={len(result.outgoing_egresses)})"
        )
    return f"{target} states[{states}] batch={len(inv.invocations)} -> {answer}"


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    serve(handler, "greeter.py", port, describe)


if __name__ == "__main__":
    main()
