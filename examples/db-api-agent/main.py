"""Reads rows from PostgreSQL, sends each to an HTTPS API, writes the answers back.

The database connection stays open while the API calls run: both kinds of egress at once.
Then it shows what the policy refuses: another database port, and an unlisted host.
"""
import json
import os
import socket
import urllib.request

import psycopg2

db = psycopg2.connect(host="db.internal", port=5432, dbname="app", user="agent", password=os.environ["DB_PASSWORD"], connect_timeout=10)
db.autocommit = True
cur = db.cursor()
cur.execute("create table if not exists answers (item int primary key, api_host text, path text)")
cur.execute("select id, name from items order by id")
rows = cur.fetchall()
print("DB rows from db.internal:5432:", rows)

for item_id, name in rows:
    req = urllib.request.Request("https://api.openai.com/v1/embeddings", data=json.dumps({"input": name}).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        answer = json.loads(r.read())
    cur.execute("insert into answers values (%s, %s, %s) on conflict (item) do update set api_host = excluded.api_host", (item_id, answer["host"], answer["path"]))
    print("API https://api.openai.com%s for %r -> stored" % (answer["path"], name))

cur.execute("select count(*) from answers")
print("answers stored in the database:", cur.fetchone()[0])
db.close()

# What the policy does not allow fails at once (a refusal, not a timeout).
for host, port in (("db.internal", 5433), ("198.51.100.66", 5432)):
    try:
        socket.create_connection((host, port), timeout=10).recv(1)
        print("REACHED %s:%d (should not happen)" % (host, port))
    except OSError as e:
        print("REFUSED %s:%d: %s" % (host, port, e.__class__.__name__))
