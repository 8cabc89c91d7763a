"""The Python library `mimeiapify==1.4.3` on the benchmark suite's workloads,
driven the way its docs say to use it, for the `library` section of
bench/suite.rs (which runs symphony-host on the same workloads first).

    python mimeiapify_bench.py listen <redis-url> <n> <idle-secs> [write|noop]
        Runs the library's own listener (`run_expiry_listener`) with one
        handler for the action `pybench` that makes one Redis write through
        the library (`RedisGeneric.set`), or with `noop` does nothing but
        note its start, prints `ready` once subscribed, and
        when <n> handlers have run (or none for <idle-secs> after the first)
        prints JSON: each id's start times (Unix s), the writes that
        succeeded and failed (by error), and the process's CPU seconds.

    python mimeiapify_bench.py burst <redis-url> <n> <first-due>
        Arms <n> triggers with the library (`RedisTrigger.set`, 32 at a
        time), all due within one second from <first-due> (Unix s): the TTL
        is whole seconds, so each gets ceil(first_due - now). Prints JSON:
        each id's due time and how long arming took.

    python mimeiapify_bench.py steady <redis-url> <rate> <secs>
        Arms <rate> triggers a second for <secs> seconds, each with a TTL of
        1 s (the library's smallest), in ticks of 10 ms. Prints the same JSON.
"""
import asyncio
import json
import math
import sys
import time

from mimeiapify.symphony_ai import GlobalSymphony, GlobalSymphonyConfig
from mimeiapify.symphony_ai.redis.listeners import (
    expiration_registry,
    run_expiry_listener,
)
from mimeiapify.symphony_ai.redis.redis_handler import RedisGeneric, RedisTrigger

TENANT = "bench"
ACTION = "pybench"
IN_FLIGHT = 32
# The listener gives up after this long, whatever it has seen.
MAX_LISTEN_SECS = 900


async def listen(url, n, idle_secs, write):
    await GlobalSymphony.create(GlobalSymphonyConfig(redis_url=url))
    starts = {}
    outcome = {"ok": 0, "failed": {}}
    last = [None]

    @expiration_registry.on_expire_action(ACTION)
    async def handler(identifier, full_key):
        starts.setdefault(identifier, []).append(time.time())
        if not write:
            outcome["ok"] += 1
            last[0] = time.monotonic()
            return
        tenant = full_key.split(":", 1)[0]
        try:
            await RedisGeneric(tenant=tenant).set(f"done:{identifier}", 1)
            outcome["ok"] += 1
        except Exception as e:  # what the library raises under load
            name = type(e).__name__
            outcome["failed"][name] = outcome["failed"].get(name, 0) + 1
        last[0] = time.monotonic()

    listener = asyncio.create_task(run_expiry_listener())
    # The listener subscribes in its first loop turn; give it that turn.
    await asyncio.sleep(0.5)
    cpu0 = time.process_time()
    print("ready", flush=True)
    began = time.monotonic()
    while True:
        await asyncio.sleep(0.05)
        done = outcome["ok"] + sum(outcome["failed"].values())
        if done >= n:
            break
        if last[0] is not None and time.monotonic() - last[0] > idle_secs:
            break
        if time.monotonic() - began > MAX_LISTEN_SECS:
            break
    cpu = time.process_time() - cpu0
    listener.cancel()
    await GlobalSymphony.shutdown()
    print(json.dumps({"starts": starts, "ok": outcome["ok"],
                      "failed": outcome["failed"], "cpu_secs": cpu}))


async def burst(url, n, first_due):
    """Arms n triggers due within [first_due, first_due + 1), IN_FLIGHT at a time."""
    await GlobalSymphony.create(GlobalSymphonyConfig(redis_url=url))
    trigger = RedisTrigger(tenant=TENANT)
    due = {}
    failed = 0

    async def one(ident):
        nonlocal failed
        now = time.time()
        ttl = max(1, math.ceil(first_due - now))
        if await trigger.set(ACTION, ident, ttl):
            due[ident] = now + ttl
        else:
            failed += 1

    start = time.time()
    ids = [f"b{k}" for k in range(n)]
    for i in range(0, n, IN_FLIGHT):
        await asyncio.gather(*(one(k) for k in ids[i:i + IN_FLIGHT]))
    took = time.time() - start
    await GlobalSymphony.shutdown()
    print(json.dumps({"due": due, "failed": failed, "arm_secs": took,
                      "armed_by": start + took}))


async def steady(url, rate, secs):
    await GlobalSymphony.create(GlobalSymphonyConfig(redis_url=url))
    trigger = RedisTrigger(tenant=TENANT)
    due = {}
    failed = 0
    n = rate * secs
    armed = 0
    start = time.monotonic()
    wall0 = time.time()

    async def one(ident):
        nonlocal failed
        now = time.time()
        if await trigger.set(ACTION, ident, 1):
            due[ident] = now + 1
        else:
            failed += 1

    while armed < n:
        await asyncio.sleep(0.01)
        target = min(n, int((time.monotonic() - start) * rate))
        batch = [f"s{k}" for k in range(armed, target)]
        armed = target
        for i in range(0, len(batch), IN_FLIGHT):
            await asyncio.gather(*(one(k) for k in batch[i:i + IN_FLIGHT]))
    took = time.time() - wall0
    await GlobalSymphony.shutdown()
    print(json.dumps({"due": due, "failed": failed, "arm_secs": took,
                      "armed_by": wall0 + took}))


if __name__ == "__main__":
    mode, url = sys.argv[1], sys.argv[2]
    if mode == "listen":
        write = (sys.argv[5] if len(sys.argv) > 5 else "write") == "write"
        asyncio.run(listen(url, int(sys.argv[3]), float(sys.argv[4]), write))
    elif mode == "burst":
        asyncio.run(burst(url, int(sys.argv[3]), float(sys.argv[4])))
    elif mode == "steady":
        asyncio.run(steady(url, int(sys.argv[3]), int(sys.argv[4])))
    else:
        sys.exit(f"unknown mode {mode!r}; see the docstring")
