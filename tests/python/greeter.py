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
import traceback
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from statefun import (
    IntType,
    RequestReplyHandler,
    StatefulFunctions,
    StringType,
    ValueSpec,
    kinesis_egress_message,
    message_builder,
)
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


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        request = self.rfile.read(length)
        try:
            reply = handler.handle_sync(request)
        except Exception:
            text = traceback.format_exc()
            sys.stderr.write(f"greeter.py: request of {length} bytes failed:\n{text}")
            sys.stderr.flush()
            body = text.encode("utf-8")
            self.send_response(500)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        try:
            sys.stderr.write(f"greeter.py: {describe(request, reply)}\n")
        except Exception as e:  # logging must never fail a request
            sys.stderr.write(f"greeter.py: (could not describe request: {e})\n")
        sys.stderr.flush()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format, *args):
        pass  # describe() logs every request already


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
