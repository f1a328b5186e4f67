// The benchmark's counter as a Restate Virtual Object: reads an integer state,
// adds the request's value, writes it back and answers the new value (Restate
// has no egress streams: the answer is the result). statefun-bench writes this
// file next to the installed SDK (.local/bench/restate) and runs it with node.

// The SDK uses Promise.withResolvers (Node 22); this machine has Node 20.
if (typeof Promise.withResolvers !== "function") {
  Promise.withResolvers = function () {
    let resolve, reject;
    const promise = new Promise((res, rej) => {
      resolve = res;
      reject = rej;
    });
    return { promise, resolve, reject };
  };
}
const restate = await import("@restatedev/restate-sdk");

const counter = restate.object({
  name: "counter",
  handlers: {
    add: async (ctx, value) => {
      const count = ((await ctx.get("count")) ?? 0) + value;
      ctx.set("count", count);
      return count;
    },
  },
});

const port = Number(process.env.PORT ?? 9080);
restate.serve({ services: [counter], port }).then((bound) => console.log(`listening on ${bound}`));
