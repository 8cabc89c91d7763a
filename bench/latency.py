#!/usr/bin/env python3
"""End-to-end dispatch latency of symphony-host, as a user sees it.

Starts a private redis-server on a free port and the host (target/debug or
--bin) with the `recorder` test plugin, writes N trigger keys with TTLs
spread evenly over SPREAD ms (starting 1 s out) in one pipeline, and reads the
host's JSON dispatch lines. Prints lateness (dispatch logged minus due time),
the host's duration_us (instantiate + on-expire + one Redis write) and
queued_us (heard to started).

    scripts/build-plugins.sh && cargo build -p symphony-host
    python3 bench/latency.py [--n 200] [--spread-ms 1000] [--bin PATH]

No dependencies beyond Python 3 and redis-server.
"""
import argparse, datetime, json, os, socket, subprocess, tempfile, time

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ap = argparse.ArgumentParser()
ap.add_argument("--n", type=int, default=200)
ap.add_argument("--spread-ms", type=int, default=1000)
ap.add_argument("--bin", default=os.path.join(root, "target/debug/symphony-host"))
args = ap.parse_args()


def resp(*parts):
    out = f"*{len(parts)}\r\n"
    for p in parts:
        b = str(p).encode()
        out += f"${len(b)}\r\n{p}\r\n"
    return out.encode()


with tempfile.TemporaryDirectory() as tmp:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", tmp],
                             stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                conn = socket.create_connection(("127.0.0.1", port)); break
            except OSError:
                time.sleep(0.05)
        manifest = os.path.join(tmp, "m.toml")
        with open(manifest, "w") as f:
            f.write(f'[runtime]\ncache_dir = "{root}/target/test-wasm-cache"\n'
                    f'[[plugin]]\nname = "recorder"\npath = "{root}/target/plugins/recorder.wasm"\n'
                    'actions = ["rec_"]\n')
        host = subprocess.Popen([args.bin, "--log-format", "json", "run", manifest],
                                env={**os.environ, "SYMPHONY_REDIS_URL": f"redis://127.0.0.1:{port}",
                                     "RUST_LOG": "symphony::dispatch=info,symphony_host=info"},
                                stderr=subprocess.PIPE, text=True)
        for line in host.stderr:
            if "listening for expiries" in line:
                break
        buf = resp("SELECT", 8)
        due = {}
        t0 = time.time()
        for i in range(args.n):
            ttl = 1000 + i * args.spread_ms // args.n
            due[str(i)] = t0 + ttl / 1000
            buf += resp("SET", f"acme:EXPTRIGGER:rec_lat:{i}", "", "PX", ttl)
        conn.sendall(buf)
        late, dur, queued = [], [], []
        for line in host.stderr:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("message") != "dispatch":
                continue
            ts = datetime.datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp()
            late.append((ts - due[e["id"]]) * 1000)
            dur.append(e["duration_us"]); queued.append(e["queued_us"])
            if len(late) == args.n:
                break
        host.terminate(); host.wait()
    finally:
        redis.terminate(); redis.wait()

for v in (late, dur, queued):
    v.sort()
p = lambda v, q: v[min(len(v) - 1, int(len(v) * q))]
print(f"{args.n} triggers due over {args.spread_ms} ms: "
      f"lateness p50 {p(late, .5):.0f} ms, p99 {p(late, .99):.0f} ms, max {late[-1]:.0f} ms | "
      f"duration_us p50 {p(dur, .5)}, p99 {p(dur, .99)} | queued_us p50 {p(queued, .5)}, p99 {p(queued, .99)}")
