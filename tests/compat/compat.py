"""Drives the real Python library `mimeiapify==1.4.3` against a redis-server,
for the compatibility test in tests/all/compat.rs.

    python compat.py write <redis-url>   writes records with the library, sets
                                         the trigger that runs our driver
                                         plugin, prints the library's own view
                                         of what it wrote (JSON)
    python compat.py read <redis-url>    reads, with the library, what the
                                         plugin wrote, and prints it (JSON)
"""
import asyncio
import json
import sys

from mimeiapify.symphony_ai import GlobalSymphony, GlobalSymphonyConfig
from mimeiapify.symphony_ai.redis.redis_handler import (
    RedisBatch,
    RedisGeneric,
    RedisSharedState,
    RedisStateHandler,
    RedisTable,
    RedisTrigger,
    RedisUser,
)

T = "acme"
RECORD = {
    "name": "Ann",
    "age": 30,
    "vip": True,
    "score": 1.5,
    "tags": ["a", "b"],
    "meta": {"k": "ü", "n": [1, 2.5]},
    "none": None,
    "count": 1,
}

# What the driver plugin runs when the library's trigger fires: read every
# record the library wrote, then write records the library reads back.
SCRIPT = [
    ["user.get", "py:1"],
    ["state.get", "chat", "py:1"],
    ["table.get", "orders:2024", "pk:1"],
    ["shared.get", "conv:x", "py:1"],
    ["batch.get-chunk", "wa", "ent1", "act", 0, -1],
    ["generic.get", "py:value"],
    ["user.upsert", "rs:1", RECORD, None],
    ["state.upsert", "chat", "rs:1", RECORD, None],
    ["table.upsert", "orders:2024", "pk:2", RECORD, None],
    ["shared.upsert", "conv:y", "rs:1", RECORD],
    ["batch.enqueue", "wa", "ent2", "act", RECORD],
    ["generic.set", "rs:value", RECORD, None],
    ["trigger.set", "py_followup", "rs:1", 600000],
]


async def write():
    # The library's own view of each record, as its get() returns it.
    user = RedisUser(tenant=T, user_id="py:1")
    await user.upsert(RECORD)
    state = RedisStateHandler(tenant=T, user_id="py:1")
    await state.upsert("chat", RECORD)
    table = RedisTable(tenant=T)
    await table.upsert("orders:2024", "pk:1", RECORD)
    shared = RedisSharedState(tenant=T, user_id="py:1")
    await shared.upsert("conv:x", RECORD)
    batch = RedisBatch(tenant=T)
    await batch.enqueue("wa", "ent1", "act", RECORD)
    await batch.enqueue("wa", "ent1", "act", "plain text")
    generic = RedisGeneric(tenant=T)
    await generic.set("py:value", RECORD)
    await generic.set("script:py1", SCRIPT)
    view = [
        await user.get(),
        await state.get("chat"),
        await table.get("orders:2024", "pk:1"),
        await shared.get("conv:x"),
        await batch.get_chunk("wa", "ent1", "act"),
        await generic.get("py:value"),
    ]
    # Schedule the plugin run through the library's own trigger API.
    ok = await RedisTrigger(tenant=T).set("drive", "py1", 1)
    assert ok, "RedisTrigger.set failed"
    return view


async def read():
    return {
        "user": await RedisUser(tenant=T, user_id="rs:1").get(),
        "state": await RedisStateHandler(tenant=T, user_id="rs:1").get("chat"),
        "table": await RedisTable(tenant=T).get("orders:2024", "pk:2"),
        "shared": await RedisSharedState(tenant=T, user_id="rs:1").get("conv:y"),
        "batch": await RedisBatch(tenant=T).get_chunk("wa", "ent2", "act"),
        "generic": await RedisGeneric(tenant=T).get("rs:value"),
        "pending": sorted(await RedisBatch.get_pending_tenants("wa")),
        "trigger_exists": await RedisTrigger(tenant=T).delete("py_followup", "rs:1") == 1,
    }


async def main(mode, url):
    await GlobalSymphony.create(GlobalSymphonyConfig(redis_url=url))
    try:
        out = await (write() if mode == "write" else read())
    finally:
        await GlobalSymphony.shutdown()
    print(json.dumps(out, ensure_ascii=False, default=str))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
