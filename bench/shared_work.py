"""Shared work per event with 1 and 2 workers on one Redis: Redis commands per delivered event
and each worker's CPU per event, at the same paced load (b200: 200 streams x 40 chunks/s).

    python3 bench/shared_work.py        # from anywhere; needs the project's .venv and bench/setup.sh

Each round starts a redis-server and `quart_sse --workers N` on free ports, runs the load
generator for 10 s, and prints one JSON line (docs/PERFORMANCE.md, "several workers").
"""
import json, os, socket, subprocess, sys, time, urllib.request
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__))); PY = ROOT + "/.venv/bin/python"; LG = os.path.expanduser("~/.cache/quart-sse-bench/venv/bin/python")
def free():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
def kids(pid):
    out = []
    for t in os.listdir(f"/proc/{pid}/task"):
        out += [int(x) for x in open(f"/proc/{pid}/task/{t}/children").read().split()]
    return out
def rcli(port, *a):
    return subprocess.run(["redis-cli", "-p", str(port), *a], capture_output=True, text=True).stdout
for workers in (1, 2, 1, 2):
    rp = free(); sp = free()
    redis = subprocess.Popen(["redis-server", "--port", str(rp), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    time.sleep(0.3)
    env = dict(os.environ, REDIS_URL=f"redis://127.0.0.1:{rp}/0", SIM_CHUNK_DELAY_MS="25", SIM_RESPONSE_CHUNKS="60", MAX_STREAMS="20000")
    srv = subprocess.Popen([PY, "-m", "quart_sse", "--host", "127.0.0.1", "--port", str(sp), "--workers", str(workers), "--log-level", "warning"], env=env, cwd="/tmp", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{sp}/health", timeout=1); break
        except Exception:
            time.sleep(0.1)
    time.sleep(1)
    pids = kids(srv.pid) if workers > 1 else [srv.pid]
    rcli(rp, "config", "resetstat")
    c0 = {p: cpu(p) for p in pids}
    out = subprocess.run([LG, ROOT + "/bench/loadgen.py", "--host", "127.0.0.1", "--port", str(sp), "-c", "200", "--duration", "10", "--pacing-ms", "25", "--ramp", "1.5", "--uvloop"], capture_output=True, text=True).stdout
    c1 = {p: cpu(p) for p in pids}
    res = json.loads(out.strip().splitlines()[-1])
    stats = rcli(rp, "info", "commandstats")
    calls = {l.split(":")[0][8:]: int(l.split("calls=")[1].split(",")[0]) for l in stats.splitlines() if l.startswith("cmdstat_")}
    ev = res["events"]; total_calls = sum(calls.values())
    evalsha = calls.get("evalsha", 0)
    # commands sent by clients (not those inside scripts): evalsha + the plain ones the store sends
    print(json.dumps({"workers": workers, "events": ev, "chunk_ev_s": res["chunk_events_per_s"], "errors": res["errors"], "failed": res["streams_failed"],
        "streams": res["streams_started"], "evalsha_per_event": round(evalsha / ev, 4), "redis_calls_per_event": round(total_calls / ev, 3),
        "evalsha_per_stream": round(evalsha / res["streams_started"], 2),
        "cpu_us_per_event_each_worker": [round((c1[p] - c0[p]) / ev * 1e6 * len(pids), 1) for p in pids],
        "cpu_us_per_event_all": round(sum(c1[p] - c0[p] for p in pids) / ev * 1e6, 1),
        "top": sorted(calls.items(), key=lambda kv: -kv[1])[:6]}))
    os.killpg(srv.pid, 15); srv.wait(timeout=20); redis.terminate(); redis.wait()
