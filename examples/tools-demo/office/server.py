"""The tools demo's MCP server: stdio, newline-delimited JSON-RPC (MCP's stdio transport), by
hand because the python:3.11 image has no MCP SDK. AEGIS runs it in a sandbox of its own
(server.yaml: no network, read-only, its own limits); the broker is its only client.
"""
import json
import sys

TOOLS = [
    {"name": "get_weather", "description": "Weather for a city",
     "inputSchema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
    {"name": "send_email", "description": "Send an e-mail",
     "inputSchema": {"type": "object", "properties": {"to": {"type": "string"}, "body": {"type": "string"}}, "required": ["to", "body"]}},
]


def text(t):
    return {"content": [{"type": "text", "text": t}]}


def handle(msg):
    method, params = msg.get("method"), msg.get("params") or {}
    if method == "initialize":
        return {"protocolVersion": params.get("protocolVersion", "2025-06-18"), "capabilities": {"tools": {}},
                "serverInfo": {"name": "office", "version": "1.0.0"}}
    if method == "ping":
        return {}
    if method == "tools/list":
        return {"tools": TOOLS}
    if method == "tools/call":
        args = params.get("arguments") or {}
        if params.get("name") == "get_weather":
            return text(f"{args.get('city')}: 18°C, light rain")
        if params.get("name") == "send_email":
            return text(f"sent to {args.get('to')}")
        raise KeyError(params.get("name"))
    raise LookupError(method)


for line in sys.stdin:
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if "id" not in msg:
        continue  # a notification (notifications/initialized)
    try:
        reply = {"jsonrpc": "2.0", "id": msg["id"], "result": handle(msg)}
    except LookupError as e:
        reply = {"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32601, "message": f"unknown: {e}"}}
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
