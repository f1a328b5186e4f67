// Preloaded (NODE_OPTIONS=--require) into the node processes LocalStack starts, by
// scripts/local-aws.sh: LocalStack's Kinesis engine (kinesis-mock, from npm) listens on all
// interfaces and has no setting for its address, so every TCP server of the process that would
// listen on all interfaces (no host, 0.0.0.0 or ::) listens on 127.0.0.1 instead.
"use strict";

const net = require("net");

const LOOPBACK = "127.0.0.1";
const ANY = new Set([undefined, null, "", "0.0.0.0", "::"]);
const isPort = (value) => typeof value === "number" || (typeof value === "string" && /^\d+$/.test(value));

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const [first] = args;
  if (isPort(first) || first === undefined || typeof first === "function") {
    // listen([port[, host[, backlog]]][, callback])
    if (typeof first === "function" || first === undefined) {
      args.splice(0, first === undefined ? 1 : 0, 0, LOOPBACK);
    } else if (typeof args[1] === "string") {
      if (ANY.has(args[1])) args[1] = LOOPBACK;
    } else {
      args.splice(1, 0, LOOPBACK);
    }
  } else if (first && typeof first === "object" && first.path === undefined && first.fd === undefined
      && first.handle === undefined && first._handle === undefined) {
    // listen(options[, callback]) with a TCP port
    if (ANY.has(first.host)) args[0] = { ...first, host: LOOPBACK };
  }
  return listen.apply(this, args);
};
