"""Where each µs of server CPU per event goes: py-spy raw stacks split by part.

    PROFILE_RAW=/tmp/b1000.raw ~/.cache/quart-sse-bench/venv/bin/python bench/profile.py quart_sse b1000 --seconds 8
    python3 bench/parts.py /tmp/b1000.raw 26.2      # 26.2: the server µs/event `table` measured

Each stack goes to the part of its innermost frame that matches a rule (the rules of
docs/PERFORMANCE.md, "How to reproduce"); prints one markdown row per part: µs/event, share.
"""
import collections, sys
RULES = [
    ("socket write", ["_SelectorSocketTransport.write"]),
    ("hub", ["Hub.", "Reader.wake", "DirectTransport.write"]),
    ("store", ["stores/"]),
    ("log writer", ["LogWriter.", "Channel.drain"]),
    ("encoding", ["encode_chunk", "encode_event", "json/"]),
    ("channel", ["Channel.put", "Channel.offer"]),
    ("generation's wake", ["_Pacer", "SimulatedProvider"]),
    ("generation", ["generation.py"]),
    ("pump", ["pump.py", "transport.py"]),
    ("edge", ["quart_sse/http/", "app.py", "lifecycle.py"]),
    ("Hypercorn and h11", ["hypercorn/", "h11/"]),
    ("event loop", ["_run_once", "Handle._run", "selectors.py"]),
]
def part(stack):
    frames = stack.split(";")
    for fr in reversed(frames):
        for name, pats in RULES:
            for p in pats:
                if p in fr and (p != "app.py" or "quart_sse/app.py" in fr or "(app.py" in fr):
                    if p == "transport.py" and "quart_sse" not in fr and "engine/transport" not in fr:
                        continue
                    return name
    return "other"
raw, us = sys.argv[1], float(sys.argv[2])
c = collections.Counter(); t = 0
for line in open(raw):
    stack, _, n = line.rstrip("\n").rpartition(" ")
    if not stack: continue
    n = int(n); t += n; c[part(stack)] += n
for name, _ in RULES + [("other", [])]:
    print(f"| {name} | {c[name]/t*us:.1f} | {100*c[name]/t:.0f} % |")
print(f"total samples {t}")
