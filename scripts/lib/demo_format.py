"""Formats the demo's JSON lines (from `statefun tail --json` / `state --json`) for people."""
import json
import sys


def restocks():
    for line in sys.stdin:
        v = json.loads(line)["value"]
        print(f"  restocked {v['restocked']} x {v['item_id']}: {v['in_stock']} in stock", flush=True)


def results():
    for line in sys.stdin:
        v = json.loads(line)["value"]
        if v["status"] == "reserved":
            print(f"  {v['request_id']}: OK    {v['user_id']} reserved {v['quantity']} x {v['item_id']} "
                  f"(cart now holds {v['in_cart']}, {v['remaining']} left in stock)", flush=True)
        else:
            print(f"  {v['request_id']}: FAIL  {v['user_id']} wanted {v['quantity']} x {v['item_id']}, "
                  f"but only {v['remaining']} in stock", flush=True)


def summary():
    state = json.load(sys.stdin)
    print("  carts:")
    for address, values in sorted(state.items()):
        if address.startswith("shoppingcart/cart/"):
            items = ", ".join(f"{q} x {i}" for i, q in sorted(values.get("items", {}).items()))
            print(f"    {address.rsplit('/', 1)[1]:<6} {items}")
    print("  inventory:")
    for address, values in sorted(state.items()):
        if address.startswith("shoppingcart/inventory/"):
            print(f"    {address.rsplit('/', 1)[1]:<6} in stock {values.get('in_stock', 0)}, "
                  f"reserved {values.get('reserved', 0)}")


{"restocks": restocks, "results": results, "summary": summary}[sys.argv[1]]()
