"""An AI agent's view of a tenant's tools, through the official MCP Python SDK
(`pip install mcp`, 2.x): run by tests/mcp.rs against the real engine.

    python3 mcp_agent.py URL DEMO_KEY NARROW_KEY OTHER_KEY MODE

DEMO_KEY is the demo tenant's key (every scope); NARROW_KEY is the demo
tenant's too, with tools:call but not permission:network; OTHER_KEY belongs to
another tenant, whose one tool is `hostile`. The demo tenant also has
`cancel-order`, a destructive tool that requires confirmation. MODE is the SDK's: `legacy`
(initialize, 2025-11-25) or `auto` (server/discover, 2026-07-28).
Every check is an assert; the last line printed is "ok".
"""

import asyncio
import sys

import httpx2
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import ElicitResult

CONFIRMED = {"io.mcp-engine/confirmed": True}


def connect(url, key, mode, elicitation_callback=None):
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"},
                              timeout=httpx2.Timeout(30, read=60))
    transport = streamable_http_client(url, http_client=http)
    if elicitation_callback is None:
        return http, Client(transport, mode=mode)
    return http, Client(transport, mode=mode, elicitation_callback=elicitation_callback)


def user_who_says(yes, asked):
    async def answer(context, params):
        asked.append(params.message)
        return ElicitResult(action="accept", content={"confirm": yes})
    return answer


async def all_tools(client):
    tools, cursor, pages = [], None, 0
    while True:
        page = await client.list_tools(cursor=cursor)
        tools += page.tools
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            return tools, pages


def text_of(result):
    return " ".join(c.text for c in result.content if c.type == "text")


async def main(url, demo_key, narrow_key, other_key, mode):
    http, client = connect(url, demo_key, mode)
    async with http, client:
        print("protocol", client.protocol_version)
        tools, pages = await all_tools(client)
        names = [t.name for t in tools]
        assert names == sorted(names), names
        assert names == ["cancel-order", "order-api", "order-lookup"], names
        assert pages == 3, f"one tool a page (MCP_TOOLS_PAGE_SIZE=1): {pages} pages"
        cancel, order_api = tools[0], tools[1]
        assert order_api.annotations.read_only_hint is True, order_api.annotations
        assert order_api.annotations.open_world_hint is True, order_api.annotations
        assert cancel.annotations.destructive_hint is True, cancel.annotations
        assert cancel.annotations.read_only_hint is False, cancel.annotations
        assert order_api.input_schema["required"] == ["order_id"], order_api.input_schema
        assert "order_id" in order_api.input_schema["properties"], order_api.input_schema
        assert order_api.output_schema["properties"]["status"]["type"] == "string"
        assert order_api.description.startswith("Looks an order up")

        found = await client.call_tool("order-api", {"order_id": "AB1234"})
        assert not found.is_error, text_of(found)
        assert found.structured_content == {
            "order_id": "AB1234", "status": "out for delivery", "eta_minutes": 12,
        }, found.structured_content
        assert '"out for delivery"' in text_of(found), text_of(found)

        bad = await client.call_tool("order-api", {"order_id": "nope"})
        assert bad.is_error, bad
        assert "/order_id" in text_of(bad), text_of(bad)
        missing = await client.call_tool("order-api", {})
        assert missing.is_error and "order_id" in text_of(missing), text_of(missing)

        # 10 a second per caller: a burst of 30 runs into it.
        burst = await asyncio.gather(*(
            client.call_tool("order-api", {"order_id": "CD5678"}) for _ in range(30)))
        limited = [r for r in burst if r.is_error]
        assert limited, "the rate limit was never hit"
        assert all("retry in" in text_of(r) for r in limited), [text_of(r) for r in limited]
        assert all(r.meta and r.meta.get("retryAfterMs", 0) > 0 for r in limited)
        assert any(not r.is_error for r in burst)

        # Another tenant's tool is neither listed nor callable.
        assert "hostile" not in names
        foreign = await client.call_tool("hostile", {"mode": "ok"})
        assert foreign.is_error and "no tool named" in text_of(foreign), text_of(foreign)

        # No way to ask the user: the call is refused, saying how to confirm;
        # confirmed in _meta, it runs.
        unconfirmed = await client.call_tool("cancel-order", {"order_id": "AB1234"})
        assert unconfirmed.is_error, unconfirmed
        assert "io.mcp-engine/confirmed" in text_of(unconfirmed), text_of(unconfirmed)
        confirmed = await client.call_tool("cancel-order", {"order_id": "AB1234"}, meta=CONFIRMED)
        assert not confirmed.is_error, text_of(confirmed)
        assert confirmed.structured_content == {"cancelled": True}, confirmed

    # A client that can ask its user (elicitation) is asked, and the answer
    # decides.
    for yes in (True, False):
        asked = []
        http, client = connect(url, demo_key, mode, user_who_says(yes, asked))
        async with http, client:
            result = await client.call_tool("cancel-order", {"order_id": "AB1234"})
            assert len(asked) == 1 and "cancel-order" in asked[0], asked
            if yes:
                assert not result.is_error, text_of(result)
                assert result.structured_content == {"cancelled": True}
            else:
                assert result.is_error and "did not confirm" in text_of(result), text_of(result)

    http, client = connect(url, narrow_key, mode)
    async with http, client:
        denied = await client.call_tool("order-api", {"order_id": "AB1234"})
        assert denied.is_error, denied
        assert "permission:network" in text_of(denied), text_of(denied)

    http, client = connect(url, other_key, mode)
    async with http, client:
        tools, _ = await all_tools(client)
        assert [t.name for t in tools] == ["hostile"], [t.name for t in tools]
        fine = await client.call_tool("hostile", {"mode": "ok"})
        assert not fine.is_error and fine.structured_content == {"fine": True}, fine
        foreign = await client.call_tool("order-api", {"order_id": "AB1234"})
        assert foreign.is_error and "no tool named" in text_of(foreign), text_of(foreign)
    print("ok")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
