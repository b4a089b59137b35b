"""An agent with a dependency from its image: httpx (Debian's python3-httpx), through the gateway."""
import sys

import httpx

print(f"httpx {httpx.__version__}")
try:
    r = httpx.get("https://api.example.com/", timeout=5)
    print(f"api.example.com: {r.status_code}")
except httpx.HTTPError as e:
    # Without that host on the network, the gateway answers; the agent reports it and exits 0.
    print(f"api.example.com: {type(e).__name__}", file=sys.stderr)
