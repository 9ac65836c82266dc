# Regenerates crates/app-agg/tests/data/trades.jsonl and the pandas golden file beside it.
# Needs pandas >= 3.0 (pip install pandas). The test suite itself never runs Python.
# One-off: build a replay fixture and compute the expected aggregates with pandas.
import json, os, random
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
import numpy as np, pandas as pd
random.seed(20261125)
instruments = {"BTC-PERPETUAL": 67000.0, "ETH-PERPETUAL": 3500.0, "BTC-27DEC24-70000-C": 0.045,
               "ETH-27DEC24-3000-P": 0.021, "SOL_USDC-PERPETUAL": 150.0}
seq = {k: random.randint(1000, 900000) for k in instruments}
t = 1732500000000 + 123  # ms
trades = []
for i in range(4000):
    name = random.choices(list(instruments), weights=[40, 25, 10, 10, 15])[0]
    r = random.random()
    t += 0 if r < 0.3 else (random.randint(1, 50) if r < 0.7 else (random.randint(50, 5000) if r < 0.97 else random.randint(5000, 200000)))
    instruments[name] *= 1 + random.gauss(0, 0.0008)
    seq[name] += 1
    price = round(instruments[name], 4 if instruments[name] < 1 else 2)
    tr = {"trade_seq": seq[name], "trade_id": str(300000000 + i), "timestamp": t, "tick_direction": random.randint(0, 3),
          "price": price, "mark_price": price, "instrument_name": name, "index_price": round(instruments[name], 2),
          "direction": random.choice(["buy", "sell"]), "amount": random.choice([1, 2, 5, 10, 0.1, 0.5, 30, 250])}
    if "-C" in name or "-P" in name:
        tr["iv"] = round(random.uniform(40, 70), 2); tr["contracts"] = tr["amount"]
    trades.append(tr)
# Lines: mostly 100ms-style notifications grouping consecutive trades, some bare trade objects.
lines = []
i = 0
while i < len(trades):
    n = random.choice([1, 1, 2, 3, 5])
    group = trades[i:i + n]; i += n
    if n == 1 and random.random() < 0.5:
        lines.append(json.dumps(group[0]))
    else:
        lines.append(json.dumps({"jsonrpc": "2.0", "method": "subscription",
                                 "params": {"channel": "trades.any.BTC.100ms", "data": group}}))
open(ROOT + "/crates/app-agg/tests/data/trades.jsonl", "w").write("\n".join(lines) + "\n")

# Expected aggregates, 1m windows, half-lives 30s and 5m, grace 0, no late trades in this data
# (per-instrument and global times are non-decreasing).
df = pd.DataFrame(trades)
df["ts"] = pd.to_datetime(df["timestamp"], unit="ms").astype("datetime64[ms]")
out = []
for name, g in df.groupby("instrument_name"):
    g = g.sort_values("trade_seq")
    ew = {}
    for h in (30_000, 300_000):
        hl = pd.Timedelta(milliseconds=h)
        ew[(h, "price")] = g["price"].ewm(halflife=hl, times=g["ts"]).mean()
        pa = (g["price"] * g["amount"]).ewm(halflife=hl, times=g["ts"]).mean()
        a = g["amount"].ewm(halflife=hl, times=g["ts"]).mean()
        ew[(h, "vw")] = pa / a
    g = g.assign(window_start=(g["timestamp"] // 60000) * 60000)
    for ws, w in g.groupby("window_start"):
        last = w.index[-1]
        out.append({"instrument_name": name, "window_start": int(ws), "trade_count": len(w),
                    "volume": float(w["amount"].sum()),
                    "vwap": float((w["price"] * w["amount"]).sum() / w["amount"].sum()),
                    "open": float(w["price"].iloc[0]), "high": float(w["price"].max()),
                    "low": float(w["price"].min()), "close": float(w["price"].iloc[-1]),
                    "ewma": [{"halflife_ms": h, "price": float(ew[(h, "price")][last]),
                              "vw_price": float(ew[(h, "vw")][last])} for h in (30_000, 300_000)]})
out.sort(key=lambda a: (a["window_start"], a["instrument_name"]))
with open(ROOT + "/crates/app-agg/tests/data/trades.pandas.jsonl", "w") as f:
    for a in out:
        f.write(json.dumps(a) + "\n")
print(len(lines), "lines", len(trades), "trades", len(out), "aggregates", pd.__version__)
