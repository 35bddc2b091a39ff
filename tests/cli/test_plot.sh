#!/usr/bin/env bash
# test_plot.sh — `quench plot RUN_DIR` on a synthetic metrics.jsonl written
# the way a job writes it (buffer, trainer per-step and per-rollout, eval
# lines in mixed order, some keys absent, a truncated last line): every
# chart with data is written as a PNG that decodes (checked with Python's
# zlib and struct only) at the requested size; the reward chart's line
# rises left to right for a rising reward and falls for a falling one; a
# chart without data is skipped with a note; malformed lines are named by
# FILE:LINE; a missing or useless metrics.jsonl exits 1.
set -u
Q=${QN_BIN:?QN_BIN must name the quench binary}
PY=/usr/bin/python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails+1)); }

# gen DIR DIRECTION: a 24-rollout run; reward rises (up) or falls (down).
# No train/kl_loss anywhere (kl chart has one series), no eval/accuracy in
# the "noeval" variant (accuracy chart skipped).
gen() {
  "$PY" - "$1" "$2" "${3:-}" <<'PYEOF'
import json, random, sys
out, direction, variant = sys.argv[1], sys.argv[2], sys.argv[3]
random.seed(7)
lines = []
for r in range(24):
    rew = 0.1 + 0.03 * r if direction == "up" else 0.9 - 0.03 * r
    buf = {"rollout_id": r, "rollout/raw_reward": rew, "rollout/response_len/mean": 200 + 5 * r,
           "rollout/truncated_ratio": 0.02, "perf/rollout_time": 30.0,
           "perf/rollout_tokens_per_s": 5000 + 10 * r}
    if r == 5:
        del buf["rollout/response_len/mean"]          # a key missing on one line
    lines.append(buf)
    for step in range(3):
        lines.append({"rollout_id": r, "step": step, "train/pg_loss": 0.01,
                      "train/pg_clipfrac": 0.1,
                      "train/ppo_kl": 0.001 * r, "train/entropy_loss": 1.5 - 0.02 * r,
                      "train/grad_norm": 0.5, "train/lr": 1e-6})
    lines.append({"rollout_id": r, "perf/train_wait_time": 1.0, "perf/train_time": 12.0,
                  "perf/update_weights_time": 2.0, "perf/step_time": 45.0})
    if r % 4 == 0 and variant != "noeval":
        lines.append({"rollout_id": r, "eval/accuracy": 0.3 + 0.01 * r, "eval/reward": 0.3})
lines.append({"step": 99, "train/pg_loss": 5.0})      # no rollout_id: ignored
random.shuffle(lines)
with open(out + "/metrics.jsonl", "w") as f:
    for i, o in enumerate(lines):
        f.write(json.dumps(o) + "\n")
        if i == 10:
            f.write("{this is not json}\n")         # line 12: malformed
    f.write('{"rollout_id": 24, "rollout/raw_reward": 0.')   # killed mid-write
PYEOF
}

# check_pngs DIR W H NAMES...: each DIR/NAME.png is a valid PNG of W x H
# (signature, chunk CRCs, IHDR, inflated size, filter bytes).
check_pngs() {
  "$PY" - "$@" <<'PYEOF'
import struct, sys, zlib
d, w, h, names = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
bad = 0
for n in names:
    p = "%s/%s.png" % (d, n)
    try:
        b = open(p, "rb").read()
        assert b[:8] == b"\x89PNG\r\n\x1a\n", "signature"
        pos, idat, ihdr, end = 8, b"", None, False
        while pos < len(b):
            ln, = struct.unpack(">I", b[pos:pos + 4]); t = b[pos + 4:pos + 8]
            data = b[pos + 8:pos + 8 + ln]
            crc, = struct.unpack(">I", b[pos + 8 + ln:pos + 12 + ln])
            assert zlib.crc32(t + data) & 0xffffffff == crc, "CRC of %r" % t
            if t == b"IHDR": ihdr = struct.unpack(">IIBBBBB", data)
            if t == b"IDAT": idat += data
            pos += 12 + ln
            if t == b"IEND": end = True; break
        assert end and pos == len(b), "IEND"
        assert ihdr and ihdr[0] == w and ihdr[1] == h, "size %r" % (ihdr,)
        bpp = 3 if ihdr[3] == 2 else 1
        raw = zlib.decompress(idat)
        assert len(raw) == h * (w * bpp + 1), "inflated length"
        assert all(raw[y * (w * bpp + 1)] <= 4 for y in range(h)), "filter byte"
    except Exception as e:
        print("%s: %s" % (p, e)); bad += 1
sys.exit(1 if bad else 0)
PYEOF
}

# slope DIR NAME R G B: prints "rising" or "falling" (pixel rows grow
# downwards) from the mean row of the pixels of colour (R,G,B) in the left
# and right thirds of the columns holding such pixels; "none" when < 30.
slope() {
  "$PY" - "$@" <<'PYEOF'
import struct, sys, zlib
p, col = "%s/%s.png" % (sys.argv[1], sys.argv[2]), tuple(int(v) for v in sys.argv[3:6])
b = open(p, "rb").read()
pos, idat = 8, b""
while pos < len(b):
    ln, = struct.unpack(">I", b[pos:pos + 4]); t = b[pos + 4:pos + 8]
    if t == b"IHDR": w, h, depth, ctype = struct.unpack(">IIBB", b[pos + 8:pos + 18])
    if t == b"IDAT": idat += b[pos + 8:pos + 8 + ln]
    pos += 12 + ln
assert ctype == 2 and depth == 8
raw, stride = zlib.decompress(idat), w * 3 + 1
prev = bytearray(w * 3)
pts = []
for y in range(h):
    f, row = raw[y * stride], bytearray(raw[y * stride + 1:(y + 1) * stride])
    for i in range(len(row)):          # undo filters 0-4 (the writer may pick any)
        a = row[i - 3] if i >= 3 else 0; up = prev[i]; c = prev[i - 3] if i >= 3 else 0
        if f == 1: row[i] = (row[i] + a) & 255
        elif f == 2: row[i] = (row[i] + up) & 255
        elif f == 3: row[i] = (row[i] + (a + up) // 2) & 255
        elif f == 4:
            pp = a + up - c; pa, pb, pc = abs(pp - a), abs(pp - up), abs(pp - c)
            row[i] = (row[i] + (a if pa <= pb and pa <= pc else up if pb <= pc else c)) & 255
    prev = row
    for x in range(w):
        if tuple(row[3 * x:3 * x + 3]) == col: pts.append((x, y))
if len(pts) < 30: print("none"); sys.exit(0)
xs = sorted(x for x, _ in pts); lo, hi = xs[0], xs[-1]
third = (hi - lo) / 3.0
left = [y for x, y in pts if x <= lo + third]; right = [y for x, y in pts if x >= hi - third]
ml, mr = sum(left) / len(left), sum(right) / len(right)
print("rising" if mr < ml - 20 else "falling" if mr > ml + 20 else "flat")
PYEOF
}

BLUE="31 119 180"   # the first series colour of cmd_plot.c
all="reward accuracy response_length kl entropy clip_fraction tokens_per_s step_time"

# --- a rising run, default output folder
mkdir -p "$tmp/up"
gen "$tmp/up" up
"$Q" plot "$tmp/up" >"$tmp/out" 2>"$tmp/err"; rc=$?
[ $rc -eq 0 ] || fail "plot (rising) exits $rc: $(cat "$tmp/err")"
for n in $all; do
  grep -qx "$tmp/up/charts/$n.png" "$tmp/out" ||
    fail "stdout does not list charts/$n.png: $(cat "$tmp/out")"
done
[ "$(wc -l <"$tmp/out")" -eq 8 ] || fail "stdout has $(wc -l <"$tmp/out") lines, want 8"
check_pngs "$tmp/up/charts" 800 480 $all || fail "PNGs of the rising run do not decode"
grep -q "metrics.jsonl:12:" "$tmp/err" ||
  fail "no warning naming metrics.jsonl:12: $(cat "$tmp/err")"
last=$(wc -l <"$tmp/up/metrics.jsonl"); last=$((last + 1))   # the unterminated line
grep -q "metrics.jsonl:$last:" "$tmp/err" ||
  fail "no warning for truncated line $last: $(cat "$tmp/err")"
s=$(slope "$tmp/up/charts" reward $BLUE)
[ "$s" = rising ] || fail "rising reward: reward.png line is '$s'"
s=$(slope "$tmp/up/charts" entropy $BLUE)
[ "$s" = falling ] || fail "falling entropy: entropy.png line is '$s'"

# --- a falling run, --out, another size, no eval lines
mkdir -p "$tmp/down"
gen "$tmp/down" down noeval
"$Q" plot "$tmp/down" --out "$tmp/down/x/y" --width 640 --height 400 >"$tmp/out" 2>"$tmp/err"
rc=$?
[ $rc -eq 0 ] || fail "plot (falling) exits $rc: $(cat "$tmp/err")"
grep -q "skipping chart 'accuracy'" "$tmp/err" ||
  fail "no note on the skipped accuracy chart: $(cat "$tmp/err")"
[ -e "$tmp/down/x/y/accuracy.png" ] && fail "accuracy.png written without eval/accuracy"
check_pngs "$tmp/down/x/y" 640 400 reward kl step_time ||
  fail "PNGs of the falling run do not decode"
s=$(slope "$tmp/down/x/y" reward $BLUE)
[ "$s" = falling ] || fail "falling reward: reward.png line is '$s'"

# --- errors: no metrics.jsonl; nothing usable; no RUN_DIR
mkdir -p "$tmp/empty"
"$Q" plot "$tmp/empty" >"$tmp/out" 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] || fail "missing metrics.jsonl: exit $rc, want 1"
grep -q "empty/metrics.jsonl" "$tmp/err" ||
  fail "missing metrics.jsonl: message $(cat "$tmp/err")"
printf '{"step": 1, "train/pg_loss": 1}\n{"rollout_id": 3, "rollout/raw_rew' \
  >"$tmp/empty/metrics.jsonl"
"$Q" plot "$tmp/empty" >"$tmp/out" 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] || fail "no usable line: exit $rc, want 1"
grep -q "no usable line" "$tmp/err" || fail "no usable line: message $(cat "$tmp/err")"
[ -e "$tmp/empty/charts/reward.png" ] && fail "a chart was written from no usable line"
"$Q" plot >"$tmp/out" 2>"$tmp/err"; rc=$?
[ $rc -eq 2 ] || fail "no RUN_DIR: exit $rc, want 2"

echo "plot checks done; failures: $fails"
[ $fails -eq 0 ]
