"""The OAR conformance cases: tampered copies of a real export
(`sample.oar`, trusted key `sample.pub`) and of small synthetic logs, each
with the verdict OAR.md §8 says a verifier must reach: "ok", "usage" (not a
bundle: exit 2), [check, seq] (the check of §8.1 that fails and the record
§8.2 names, or null), or null (refused; the case pins neither the check nor
the record, only that both verifiers agree on them).

The expectations were written from OAR.md alone, by the author of
../oar_verify.py, without reading sios's Rust code. The cases are built
with that verifier's own encoders.

    python make_cases.py OUT_DIR

writes every case's files into OUT_DIR and lists them in OUT_DIR/cases.json
as {name, kind: "bundle", bundle, pubkey, extra, description, expect}. Then
come tampered copies of two real proofs (§7.2), as {name, kind: "proof",
proof, pubkey, extra, description, expect} with expect "ok", "failed" or
"not-checked". The sios test tests/tests/audit_conformance.rs runs both
verifiers on each."""
import base64, json, os, struct, sys
sys.dont_write_bytecode = True  # keep the checkout clean
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import oar_verify as ov
from cryptography.hazmat.primitives.asymmetric import mldsa

if len(sys.argv) != 2:
    sys.exit("usage: make_cases.py OUT_DIR")
OUT = os.path.abspath(sys.argv[1])
os.makedirs(OUT, exist_ok=True)
data = open(os.path.join(HERE, "sample.oar"), "rb").read()
items, err = ov.split_items(data)
assert err is None, err
PUB = os.path.join(HERE, "sample.pub")
EM = "\u2014 "


def build(its):
    return ov.BUNDLE_MAGIC + b"".join(bytes([ord(it.tag)]) + struct.pack(">I", len(it.payload)) + it.payload for it in its)

def fix_e(its):
    nr = sum(1 for it in its if it.tag == "R"); nc = sum(1 for it in its if it.tag == "C")
    return [it if it.tag != "E" else ov.Item(it.offset, "E", struct.pack(">QQ", nr, nc)) for it in its]

def idx_R(seq, its=items):
    return [k for k, it in enumerate(its) if it.tag == "R" and ov.cbor_decode(it.payload)[1] == seq][0]

def idx_C(size, its=items):
    return [k for k, it in enumerate(its) if it.tag == "C" and ov.parse_note(it.payload).size == size][0]

def idx_P(n):
    return [k for k, it in enumerate(items) if it.tag == "P"][n]

def replace(its, k, payload):
    its = list(its); its[k] = ov.Item(its[k].offset, its[k].tag, payload); return its

def without(*ks):
    return [it for k, it in enumerate(items) if k not in ks]

def move(k_from, k_to_after):
    its = list(items); it = its[k_from]
    its.insert(k_to_after + 1, it)
    del its[k_from if k_from < k_to_after else k_from + 1]
    return its

def flip_field(seq, field):
    k = idx_R(seq); p = bytearray(items[k].payload)
    val = ov.cbor_decode(bytes(p))[field]
    enc = val.encode() if isinstance(val, str) else val
    p[bytes(p).index(enc) + len(enc) // 2] ^= 0x01
    return replace(items, k, bytes(p))

def set_fields(seq, **kw):
    """Re-encode record `seq` with fields changed (keys by number)."""
    k = idx_R(seq); m = ov.cbor_decode(items[k].payload)
    for f, val in kw.items():
        m[int(f[1:])] = val
    return ov.cbor_encode(m)

def flip_sig(size, which=0, its=items):
    k = idx_C(size, its); t = its[k].payload.decode()
    body, sigs = t[:t.rfind("\n\n") + 2], t[t.rfind("\n\n") + 2:]
    lines = sigs.split("\n")[:-1]
    pre, b64 = lines[which].rsplit(" ", 1)
    raw = bytearray(base64.b64decode(b64)); raw[4 + 1000] ^= 0x01
    lines[which] = pre + " " + base64.b64encode(bytes(raw)).decode()
    return replace(its, k, (body + "\n".join(lines) + "\n").encode())

def edit_cp(size, f, its=items):
    k = idx_C(size, its); return replace(its, k, f(its[k].payload.decode()).encode())

def cp_text(size):
    return items[idx_C(size)].payload


cases = []
def case(name, b, desc, expect, pub=PUB, extra=()):
    """expect: (check, seq) per §8.2, or "ok"."""
    b = b if isinstance(b, bytes) else build(b)
    path = f"{OUT}/{name}.oar"; open(path, "wb").write(b)
    cases.append((name, path, pub, list(extra), desc, expect))


# --- F ---------------------------------------------------------------------
case("NB-garbage", b"not a bundle at all\n", "a file without the header (§8.1: not a bundle)", "usage")
case("NB-empty", b"", "an empty file (§8.1: not a bundle)", "usage")
case("NB-short-header", ov.BUNDLE_MAGIC[:17], "17 of the 18 header bytes", "usage")
case("F-header-only", ov.BUNDLE_MAGIC, "the 18-byte header alone (a bundle; no E item)", ("F", 0))
case("F-truncate-100", data[:-100], "last 100 bytes cut (inside the last checkpoint)", ("F", 263))
case("F-truncate-E", data[:-21], "E item cut off", ("F", 263))
case("F-truncate-C263-E", build(items[:-2]), "last checkpoint and E cut off", ("F", 263))
case("F-truncate-mid", data[:len(data) // 2], "bundle cut in half (mid-item)", None)
case("F-unknown-tag", build(items[:idx_R(50)]) + b"Z\x00\x00\x00\x00" + build(items[idx_R(50):])[18:],
     "unknown item tag before record 50", ("F", 50))
# §8.2 (answer of the spec owner): an item cut short, whatever its tag, an E
# item included, is "F, before the E item" and names i; only a complete E
# item whose payload is not 16 bytes, or bytes after E, names none.
case("F-E-truncated", data[:-10], "E item cut in the middle (an item cut short: before the E item)", ("F", 263))
case("F-E-header-cut", data[:-18], "E item cut inside its header (tag + 2 length bytes left)", ("F", 263))
case("F-E-long-cut", build(items[:-1]) + b"E" + struct.pack(">I", 17) + struct.pack(">QQ", 263, 95),
     "E item claims 17 bytes, 16 present (cut short)", ("F", 263))
case("F-E-huge-cut", build(items[:-1]) + b"E" + struct.pack(">I", 1 << 31) + struct.pack(">QQ", 263, 95),
     "E item claims 2 GiB (> 16 MiB), 16 present (cut short)", ("F", 263))
case("F-E-17", items[:-1] + [ov.Item(0, "E", struct.pack(">QQ", 263, 95) + b"\0")], "E item of 17 bytes", ("F", None))
case("F-E-after-policy", items[:idx_R(2) + 1] + [ov.Item(0, "E", bytes(15))],
     "bundle ends after record 2 (policy) with a 15-byte E: F before P-a", ("F", None))
case("F-tag-after-policy", build(items[:idx_R(2) + 1]) + b"Z\x00\x00\x00\x00",
     "unknown tag right after record 2 (policy): F before P-a", ("F", 3))
case("F-K-not-utf8", replace(items, 0, items[0].payload[:10] + b"\xff" + items[0].payload[11:]),
     "first K line gets a 0xff byte", ("F", 0))
case("F-P-not-utf8", replace(items, idx_P(0), items[idx_P(0)].payload + b"\xc3"),
     "record 2's policy text ends in a cut UTF-8 sequence: F before P-b", ("F", 3))
case("F-C-not-utf8", replace(items, idx_C(141), items[idx_C(141)].payload.replace(b"\n141\n", b"\n14\xfe\n", 1)),
     "checkpoint 141 gets a 0xfe byte in its body", ("F", 141))
case("F-after-E", data + b"R\x00\x00\x00\x00", "an empty R item appended after E", ("F", None))
case("F-garbage-after-E", data + b"\x01", "one stray byte after E", ("F", None))

# --- R ---------------------------------------------------------------------
case("Ra-rec50-cbor", replace(items, idx_R(50), bytes([items[idx_R(50)].payload[0] ^ 0x40]) + items[idx_R(50)].payload[1:]),
     "record 50's map header turned into another major type", ("R-a", 50))
case("Ra-empty-record", items[:idx_R(5)] + [ov.Item(0, "R", b"")] + items[idx_R(5):], "empty R item before record 5", ("R-a", 5))
case("Rb-delete-rec100", without(idx_R(100)), "record 100 deleted", ("R-b", 100))
its = list(items); a, b_ = idx_R(100), idx_R(101); its[a], its[b_] = its[b_], its[a]
case("Rb-swap-100-101", its, "records 100 and 101 swapped", ("R-b", 100))
its = list(items); a, b_ = idx_R(5), idx_R(100); its[a], its[b_] = its[b_], its[a]
case("Rb-swap-5-100", its, "records 5 and 100 swapped", ("R-b", 5))
case("Rc-rec100-resource", flip_field(100, 6), "record 100's resource altered (middle record)", ("R-c", 100))
case("Rc-rec100-prev", flip_field(100, 7), "record 100's prev altered (middle record)", ("R-c", 100))
case("Rc-rec86-prev", flip_field(86, 7), "record 86's prev altered (first after checkpoint 86)", ("R-c", 86))
case("Rc-rec262-prev", flip_field(262, 7), "record 262's prev altered (last record)", ("R-c", 261))
case("Re-rec261-resource", flip_field(261, 6), "record 261's resource altered (an outcome: no longer matches its intent)", ("R-e", 261))
case("Rc-rec261-outputs", replace(items, idx_R(261), set_fields(261, k12=[bytes(32)])),
     "record 261's output digest altered (after checkpoint 261; record 262 then checkpoint 263 follow)", ("R-c", 261))
its = flip_field(99, 6); its = replace(its, idx_R(101), items[idx_R(101)].payload + b"\x00")
case("Rc-rec99-next-undecodable", its, "record 99 altered and record 101 gets a trailing byte (does not decode)", ("R-c", 99))
its = flip_field(99, 6); m101 = ov.cbor_decode(items[idx_R(101)].payload); del m101[7]
case("Rc-rec99-next-no-prev", replace(its, idx_R(101), ov.cbor_encode(m101)), "record 99 altered and record 101's prev removed (decodes under §3.1, fails R-a)", ("R-c", 99))
its = flip_field(99, 6); m101 = ov.cbor_decode(items[idx_R(101)].payload); m101[16] = b"\xff"  # bstr detail: decodes under §3.1
case("Rc-rec99-next-badtype", replace(its, idx_R(101), ov.cbor_encode(m101)), "record 99 altered, record 101 valid CBOR with a §3.2 type error, prev intact", ("R-c", 99))
# §8.2 (answer): the look-ahead reads the next record under R-a (all of §3).
its = flip_field(100, 7); m101 = ov.cbor_decode(items[idx_R(101)].payload); m101[16] = b"\xff"
case("Rc-rec100-prev-next-badtype", replace(its, idx_R(101), ov.cbor_encode(m101)),
     "record 100's prev altered, record 101 valid §3.1 CBOR with a §3.2 type error: fails R-a", ("R-c", 99))
its = flip_field(100, 7); m101 = ov.cbor_decode(items[idx_R(101)].payload); m101[4] = ""
case("Rc-rec100-prev-next-rule2", replace(its, idx_R(101), ov.cbor_encode(m101)),
     "record 100's prev altered, record 101's actor empty (§3.3 rule 2): fails R-a", ("R-c", 99))
its = flip_field(137, 6); its = replace(its, idx_R(138), b"\xff" + items[idx_R(138)].payload[1:])
case("Ce-rec137-next-undecodable", its, "record 137 altered (before checkpoint 138) and record 138 does not decode", ("C-e", 137))
t261 = ov.cbor_decode(items[idx_R(261)].payload)[2]
case("Rd-rec262-time", replace(items, idx_R(262), set_fields(262, k2=t261 - 1)), "last record's time set below record 261's", ("R-d", 262))
case("Re-rec262-outcome", replace(items, idx_R(262), set_fields(262, k3="outcome", k8={0: 5, 1: "ok"})),
     "last record turned into an outcome of record 5 (not an open intent)", ("R-e", 262))

# --- records altered, seen at a checkpoint (C-e) --------------------------
case("Ce-rec137-resource", flip_field(137, 6), "record 137 altered (last before checkpoint 138)", ("C-e", 137))
case("Ce-rec262-actor", flip_field(262, 4), "record 262 altered (last record)", ("C-e", 262))
case("Ce-rec0-detail", flip_field(0, 16), "record 0 altered", ("C-e", 0))
case("Ce-rec239-pubkey", flip_field(239, 15), "record 239's new key altered (key.rotate before hand-over 240)", ("C-e", 239))
# records 138..140 rewritten with their links, and record 141's link: the
# checkpoint 141 is genuine, the links hold => records from v=138 on rewritten
its = list(items); prev = ov.record_hash(items[idx_R(137)].payload)
for seq in range(138, 142):
    m = ov.cbor_decode(items[idx_R(seq)].payload); m[7] = prev
    if seq == 138:
        m[16] = m[16] + " (rewritten)"
    raw = ov.cbor_encode(m); its = replace(its, idx_R(seq), raw); prev = ov.record_hash(raw)
case("Ce-rec239-pubkey-no-cp239", replace(fix_e(without(idx_C(239))), idx_R(239) - 1, flip_field(239, 15)[idx_R(239)].payload),
     "checkpoint 239 removed (E recounted) and record 239's new key altered: K0 still signs 240, so records are blamed", ("C-e", 239))
case("Ce-rewrite-138-141", its, "records 138..141 rewritten, links included (checkpoint 141 genuine)", ("C-e", 138))
m = ov.cbor_decode(its[idx_R(141, its)].payload); m[16] = b"\xff"
case("Ce-rewrite-138-141-next-badtype", replace(its, idx_R(141, its), ov.cbor_encode(m)),
     "as above, and the rewritten record 141 (prev intact) has a §3.2 type error: fails R-a", ("C-e", 140))

# --- P ---------------------------------------------------------------------
case("Pa-delete-P", fix_e(without(idx_P(0), idx_P(1))), "both policy texts removed", ("P-a", 2))
case("Pa-move-P", move(idx_P(0), idx_R(3)), "record 2's policy text moved after record 3", ("P-a", 2))
ptext = items[idx_P(0)].payload
alt = ptext.replace(b"content_hash", b"content_hasH", 1)
case("Pb-alter-P", replace(items, idx_P(0), alt), "record 2's policy text altered", ("P-b", 2))
case("Pc-unreferenced-P", items[:idx_R(50) + 1] + [ov.Item(0, "P", b"{}")] + items[idx_R(50) + 1:],
     "an unreferenced P item inserted after record 50", ("P-c", None))
case("Pc-dup-P-altered", items[:idx_P(0) + 1] + [ov.Item(0, "P", alt)] + items[idx_P(0) + 1:],
     "record 2's policy text followed by an altered copy", ("P-c", None))
case("Pb-altered-P-then-dup", items[:idx_P(0)] + [ov.Item(0, "P", alt)] + items[idx_P(0):],
     "an altered copy inserted before record 2's (genuine) text", ("P-b", 2))
case("Pc-dup-P", items[:idx_P(0) + 1] + [items[idx_P(0)]] + items[idx_P(0) + 1:], "record 2's policy text duplicated", ("P-c", None))

# --- C ---------------------------------------------------------------------
case("Ca-cp141-extline", edit_cp(141, lambda t: t.replace("\n\n", "\nextra\n\n", 1)), "extension line in checkpoint 141's body", ("C-a", 138))
case("Ca-dup-cp141-garbled", items[:idx_C(141) + 1] + [ov.Item(0, "C", b"garbage")] + items[idx_C(141) + 1:],
     "unparsable C item right after checkpoint 141", ("C-a", None))
case("Cb-cp141-size", edit_cp(141, lambda t: t.replace("\n141\n", "\n151\n", 1)), "checkpoint 141's size changed to 151", ("C-b", 138))
case("Cb-cp263-size", edit_cp(263, lambda t: t.replace("\n263\n", "\n262\n", 1)), "last checkpoint's size changed to 262", ("C-b", 261))
case("Cb-dup-cp141", items[:idx_C(141) + 1] + [items[idx_C(141)]] + items[idx_C(141) + 1:], "checkpoint 141 duplicated", ("C-b", None))
case("Cb-dup-last-cp", items[:-1] + [items[-2], items[-1]], "final checkpoint duplicated", ("C-b", None))
case("Cb-delete-rec137", without(idx_R(137)), "record 137 (just before checkpoint 138) deleted", ("C-b", 137))
case("Cb-move-cp141-later", move(idx_C(141), idx_R(142)), "checkpoint 141 moved after record 142", ("C-b", 141))
case("Cb-move-cp145-earlier", move(idx_C(145), idx_R(142)), "checkpoint 145 moved after record 142", ("C-b", 143))
# §8.2 (answer): "signed by some key of the log" needs the line's name and
# key id (§5.2) to be the key's; a genuine signature under another name or
# key id does not count.
def sig_rename(t, f):
    body, sigs = t[:t.rfind("\n\n") + 2], t[t.rfind("\n\n") + 2:].split("\n")[:-1]
    return body + "".join(f(l) + "\n" for l in sigs)
def rename(l):
    return l.replace(" sios/audit/c", " sios/audit/d", 1)
def rekid(l):
    pre, b64 = l.rsplit(" ", 1); raw = bytearray(base64.b64decode(b64)); raw[0] ^= 0x01
    return pre + " " + base64.b64encode(bytes(raw)).decode()
moved = move(idx_C(141), idx_R(142))
case("Cb-move-cp141-later-renamed", edit_cp(141, lambda t: sig_rename(t, rename), moved),
     "checkpoint 141 moved after record 142 and its line's key name changed (signature still valid): altered", ("C-b", 138))
case("Cb-move-cp141-later-kid", edit_cp(141, lambda t: sig_rename(t, rekid), moved),
     "checkpoint 141 moved after record 142 and its line's key id changed (signature still valid): altered", ("C-b", 138))
case("Ce-rec140-cp141-renamed", edit_cp(141, lambda t: sig_rename(t, rename), flip_field(140, 6)),
     "record 140 altered and checkpoint 141's line renamed: not signed by some key of the log", ("C-e", 138))
case("Ce-rec140", flip_field(140, 6), "record 140 altered (last before checkpoint 141)", ("C-e", 140))
its = list(items); a, b_ = idx_C(141), idx_C(145); its[a], its[b_] = its[b_], its[a]
case("Cb-swap-cp141-cp145", its, "checkpoints 141 and 145 swapped", ("C-b", 141))
case("Cb-dup-cp141-size-altered", items[:idx_C(141) + 1] + [ov.Item(0, "C", cp_text(141).replace(b"\n141\n", b"\n142\n"))] + items[idx_C(141) + 1:],
     "a copy of checkpoint 141 with size 142 inserted right after it", ("C-b", None))
case("Cc-cp141-origin", edit_cp(141, lambda t: t.replace("sios/audit/c", "sios/audit/d", 1)), "checkpoint 141's origin changed", ("C-c", 138))
case("Cd-delete-cp240-fixE", fix_e(without(idx_C(240))), "hand-over checkpoint 240 deleted, E recounted", ("C-d", 239))
def root_char(t):
    lines = t.split("\n"); r = lines[2]; lines[2] = r[:5] + ("A" if r[5] != "A" else "B") + r[6:]; return "\n".join(lines)
case("Ce-cp141-root", edit_cp(141, root_char), "checkpoint 141's root changed", ("C-e", 138))
case("Cf-sig-cp141", flip_sig(141), "bit flip in checkpoint 141's signature", ("C-f", 138))
case("Cf-sig-cp240-old", flip_sig(240, 0), "old key's signature on hand-over 240 flipped", ("C-f", 239))
case("Cf-sig-cp240-new", flip_sig(240, 1), "new key's signature on hand-over 240 flipped", ("C-f", 239))
case("Cf-cp240-drop-old", edit_cp(240, lambda t: t[:t.rfind("\n\n") + 2] + t[t.rfind("\n\n") + 2:].split("\n", 1)[1]),
     "old key's line removed from hand-over 240", ("C-f", 239))
case("ok-sigline-foreign", edit_cp(242, lambda t: t + EM + "someone/else " + base64.b64encode(b"\1\2\3\4" + bytes(100)).decode() + "\n"),
     "extra signature line by an unknown key on checkpoint 242", "ok")
old_line = [l for l in cp_text(239).decode().split("\n") if l.startswith(EM)][0]
case("ok-sigline-oldkey", edit_cp(242, lambda t: t + old_line + "\n"),
     "K0's line from checkpoint 239 (invalid for 242) appended to 242: K0 not in force, ignored", "ok")

# --- E, End ----------------------------------------------------------------
case("Ea-cp-count", items[:-1] + [ov.Item(0, "E", struct.pack(">QQ", 263, 94))], "E says 94 checkpoints", ("E-a", None))
case("Ea-rec-count-low", items[:-1] + [ov.Item(0, "E", struct.pack(">QQ", 200, 95))], "E says 200 records", ("E-a", 200))
case("Ea-drop-tail", items[:idx_C(261) + 1] + [items[-1]], "records 261, 262 and checkpoint 263 removed, E not recounted", ("E-a", 261))
case("Ea-short-E", items[:-1] + [ov.Item(0, "E", bytes(15))], "E item of 15 bytes (now F)", ("F", None))
case("Ea-delete-cp141", without(idx_C(141)), "checkpoint 141 removed, E not recounted", ("E-a", None))
case("ok-delete-cp141-fixE", fix_e(without(idx_C(141))), "checkpoint 141 removed, E recounted (§0: passes)", "ok")
case("Ea-delete-last-cp", without(idx_C(263)), "last checkpoint removed, E not recounted", ("E-a", None))
case("Endb-delete-last-cp-fixE", fix_e(without(idx_C(263))), "last checkpoint removed, E recounted", ("End-b", 261))
case("ok-drop-tail-fixE", fix_e(items[:idx_C(261) + 1] + [items[-1]]), "cut back to checkpoint 261, E recounted (§0: passes)", "ok")
case("Enda-no-records", [ov.Item(0, "E", bytes(16))], "header and E(0, 0) only", ("End-a", 0))
case("Endd-K-garbage", replace(items, 0, items[0].payload[:-3] + b"AAA"), "K line's key altered", ("End-d", None))

# --- keys ------------------------------------------------------------------
origin = "sios/audit/c5511230df39d7e3"
fresh = mldsa.MLDSA65PrivateKey.generate(); fpk = fresh.public_key().public_bytes_raw()
open(f"{OUT}/fresh.pub", "w").write(ov.vkey_line(origin, fpk) + "\n")
open(f"{OUT}/old-K0.pub", "w").write(items[0].payload.decode() + "\n")
case("Endc-wrong-key", data, "untouched bundle, a fresh key (same name) trusted", ("End-c", 0), pub=f"{OUT}/fresh.pub")
case("ok-trust-K0", data, "untouched bundle, trusting the old key K0", "ok", pub=f"{OUT}/old-K0.pub")

# forged logs: a key.rotate to the attacker's key with no hand-over
trusted = ov.parse_vkey(open(PUB).read().strip())
att = mldsa.MLDSA65PrivateKey.generate(); apk = att.public_key().public_bytes_raw()

def make_records(first_fields, n, prev=bytes(32), t=1795805349295, start=0, tag="r"):
    recs = []
    for j in range(n):
        m = {0: 1, 1: start + j, 2: t + j, 7: prev}
        m.update(first_fields[j] if j < len(first_fields) else
                 {3: "event", 4: "kernel", 5: "process.ready", 6: "process:x", 16: f"{tag} {start + j}"})
        raw = ov.cbor_encode(m); recs.append(raw); prev = ov.record_hash(raw)
    return recs

def sign_note(keypairs, recs):
    body = f"{origin}\n{len(recs)}\n{base64.b64encode(ov.mth(recs)).decode()}\n"
    lines = "".join(EM + origin + " " + base64.b64encode(ov.key_id(origin, pk) + sk.sign(body.encode())).decode() + "\n"
                    for sk, pk in keypairs)
    return (body + "\n" + lines).encode()

recs = make_records([{3: "event", 4: "sios-audit", 5: "log.init", 6: origin, 15: trusted.public_key},
                     {3: "event", 4: "uid:0", 5: "key.rotate", 6: "key:attacker", 15: apk}], 7)
fitems = [ov.Item(0, "R", r) for r in recs] + [ov.Item(0, "C", sign_note([(att, apk)], recs)), ov.Item(0, "E", struct.pack(">QQ", 7, 1))]
case("Cd-forged-no-handover", fitems, "forged log: trusted key in record 0, rotation to attacker at 1, no hand-over", ("C-d", 1))

# --- §8.3 --extends ----------------------------------------------------------
def write_note(name, payload):
    p = f"{OUT}/{name}.note"; open(p, "wb").write(payload); return p
kept263 = write_note("kept-263", cp_text(263))
kept200 = write_note("kept-200", cp_text(200))
kept239 = write_note("kept-239", cp_text(239))
def cut(size, drop_k1=False):
    """Items up to checkpoint `size`, E recounted; optionally without K1's K line."""
    head = [items[0]] if drop_k1 else items[:2]
    return fix_e(head + items[2:idx_C(size) + 1] + [items[-1]])
case("Xb-cut-to-251", cut(251), "cut back to checkpoint 251; --extends the kept 263", ("X-b", 251), extra=["--extends", kept263])
case("Xb-cut-to-240", cut(240), "cut back to hand-over 240; --extends the kept 263", ("X-b", 240), extra=["--extends", kept263])
case("Endc-cut-to-200", cut(200), "cut back to 200 (before the rotation), trusting K1; --extends the kept 263", ("End-c", 0), extra=["--extends", kept263])
case("Xb-cut-to-200-K0", cut(200, True), "cut back to 200, K1's K line dropped, trusting K0; --extends the kept 263 (signed by K1 only)",
     ("X-b", 200), pub=f"{OUT}/old-K0.pub", extra=["--extends", kept263])
case("Xb-cut-to-200-K0-239", cut(200, True), "cut back to 200, K1's K line dropped, trusting K0; --extends the kept 239",
     ("X-b", 200), pub=f"{OUT}/old-K0.pub", extra=["--extends", kept239])
case("ok-extends-200", data, "untouched bundle --extends the kept 200", "ok", extra=["--extends", kept200])
case("ok-extends-263", data, "untouched bundle --extends its own last checkpoint", "ok", extra=["--extends", kept263])
case("Xc-kept-root-altered", data, "--extends a kept 200 whose root was altered (signature no longer verifies)", ("X-c", None),
     extra=["--extends", write_note("kept-200-root", root_char(cp_text(200).decode()).encode())])
def sig_lines(size):
    t = cp_text(size).decode(); return t[:t.rfind("\n\n") + 2], t[t.rfind("\n\n") + 2:].split("\n")[:-1]
b240, l240 = sig_lines(240)
case("ok-extends-240-K0-only", data, "--extends hand-over 240 with only K0's line (either key suffices)", "ok",
     extra=["--extends", write_note("kept-240-k0", (b240 + l240[0] + "\n").encode())])
case("ok-extends-240-K1-only", data, "--extends hand-over 240 with only K1's line", "ok",
     extra=["--extends", write_note("kept-240-k1", (b240 + l240[1] + "\n").encode())])
b242, _ = sig_lines(242)
case("Xc-kept-242-K0-line", data, "--extends kept 242 carrying only K0's line from 239 (K0 may not sign 242)", ("X-c", None),
     extra=["--extends", write_note("kept-242-k0", (b242 + sig_lines(239)[1][0] + "\n").encode())])
b0 = f"sios/audit/c5511230df39d7e3\n0\n{base64.b64encode(ov.H(b'')).decode()}\n\n"
case("Xa-kept-size-0", data, "--extends a note of size 0", ("X-a", None),
     extra=["--extends", write_note("kept-size-0", (b0 + l240[1] + "\n").encode())])
case("Xa-kept-origin", data, "--extends kept 200 with another origin", ("X-a", None),
     extra=["--extends", write_note("kept-200-origin", cp_text(200).replace(b"sios/audit/c", b"sios/audit/d", 1))])
case("Xa-kept-not-utf8", data, "--extends a kept note with a 0xff byte", ("X-a", None),
     extra=["--extends", write_note("kept-200-ff", cp_text(200).replace(b"\n\n", b"\n\xff\n", 1))])
case("Xa-kept-garbage", data, "--extends a file that is not a note", ("X-a", None), extra=["--extends", write_note("kept-garbage", b"hello\n")])
# X-c needs two histories signed by one key: a synthetic log with our own key
own = mldsa.MLDSA65PrivateKey.generate(); opk = own.public_key().public_bytes_raw()
open(f"{OUT}/own.pub", "w").write(ov.vkey_line(origin, opk) + "\n")
init = [{3: "event", 4: "sios-audit", 5: "log.init", 6: origin, 15: opk}]
main = make_records(init, 10)
fork = main[:5] + make_records([], 5, prev=ov.record_hash(main[4]), t=1795805349295 + 5, start=5, tag="fork")
def log_items(recs, sizes):
    its = []
    for j, r in enumerate(recs):
        its.append(ov.Item(0, "R", r))
        if j + 1 in sizes:
            its.append(ov.Item(0, "C", sign_note([(own, opk)], recs[:j + 1])))
    return fix_e(its + [ov.Item(0, "E", bytes(16))])
case("ok-synthetic", log_items(main, {3, 6, 10}), "synthetic log, own key", "ok", pub=f"{OUT}/own.pub")
kept_fork7 = write_note("kept-fork-7", sign_note([(own, opk)], fork[:7]))
case("Xd-two-histories", log_items(main, {3, 6, 10}), "synthetic log --extends a signed checkpoint 7 of a fork at record 5",
     ("X-d", None), pub=f"{OUT}/own.pub", extra=["--extends", kept_fork7])
case("Xb-synthetic-cut", log_items(main[:6], {3, 6}), "synthetic log cut to 6 --extends its kept 10", ("X-b", 6),
     pub=f"{OUT}/own.pub", extra=["--extends", write_note("kept-main-10", sign_note([(own, opk)], main))])

# --- proof files (§7.2) ------------------------------------------------------
# An inclusion proof of record 250 and a consistency proof from 13 to 240,
# both made by the appliance that exported sample.oar. Verdicts: "ok",
# "failed" (the proof is false), or "not-checked" (no signature by the
# trusted key to check it against: not a verdict on the proof).
import copy
inc = json.load(open(os.path.join(HERE, "inclusion-250.json")))
con = json.load(open(os.path.join(HERE, "consistency-13-240.json")))
K0, FRESH = f"{OUT}/old-K0.pub", f"{OUT}/fresh.pub"

def flip_hex(h, k):
    return h[:k] + ("0" if h[k] != "0" else "1") + h[k + 1:]

def note_split(note):
    cut = note.rfind("\n\n") + 2
    return note[:cut], note[cut:].split("\n")[:-1]

def flip_note_sig(note, which=-1):
    body, lines = note_split(note)
    pre, b = lines[which].rsplit(" ", 1)
    raw = bytearray(base64.b64decode(b)); raw[500] ^= 1
    lines[which] = pre + " " + base64.b64encode(bytes(raw)).decode()
    return body + "\n".join(lines) + "\n"

def keep_lines(note, kid_hex):
    body, lines = note_split(note)
    kept = [l for l in lines if base64.b64decode(l.rsplit(" ", 1)[1])[:4].hex() == kid_hex]
    return body + "\n".join(kept) + "\n"

k1_line_240 = [l for l in note_split(con["new_checkpoint"])[1]
               if base64.b64decode(l.rsplit(" ", 1)[1])[:4].hex() == "435e692f"][0]
other = mldsa.MLDSA65PrivateKey.generate()
def foreign(note, name):
    body, _ = note_split(note)
    pk = other.public_key().public_bytes_raw()
    return body + EM + name + " " + base64.b64encode(ov.key_id(name, pk) + other.sign(body.encode())).decode() + "\n"

proof_cases = []
def proof(name, obj, desc, expect, pub=PUB, extra=()):
    path = f"{OUT}/proof-{name}.json"
    with open(path, "w") as f:
        json.dump(obj, f)
    proof_cases.append({"name": name, "kind": "proof", "proof": path, "pubkey": pub, "extra": list(extra),
                        "description": desc, "expect": expect})

proof("inc-250-ok", inc, "the inclusion proof of record 250, untouched", "ok")
x = copy.deepcopy(inc); x["record"] = flip_hex(x["record"], 100)
proof("inc-record-byte", x, "a byte of the record changed", "failed")
x = copy.deepcopy(inc); x["path"][3] = flip_hex(x["path"][3], 10)
proof("inc-path-elem", x, "a hash of the path changed", "failed")
x = copy.deepcopy(inc); x["seq"] = 251
proof("inc-seq", x, "the proof claims seq 251", "failed")
x = copy.deepcopy(inc); x["tree_size"] = 286
proof("inc-treesize", x, "the proof claims tree size 286", "failed")
x = copy.deepcopy(inc); x["checkpoint"] = flip_note_sig(x["checkpoint"])
proof("inc-sig-flipped", x, "the checkpoint's signature flipped", "failed")
x = copy.deepcopy(inc); x["checkpoint"] = foreign(x["checkpoint"], "sios/audit/c5511230df39d7e3")
proof("inc-signed-by-other-key-same-name", x, "the checkpoint re-signed by another key under the log's name", "not-checked")
x = copy.deepcopy(inc); x["checkpoint"] = foreign(x["checkpoint"], "someone/else")
proof("inc-signed-by-other-name", x, "the checkpoint re-signed by another key under another name", "not-checked")
proof("inc-250-trust-K0", inc, "the untouched proof, trusting the earlier key K0", "not-checked", pub=K0)
proof("inc-250-fresh-key", inc, "the untouched proof, trusting a fresh key of the same name", "not-checked", pub=FRESH)
proof("con-ok", con, "the consistency proof 13 -> 240, untouched (13 signed by K0, 240 by both)", "ok")
proof("con-trust-K0", con, "the untouched consistency proof, trusting K0", "ok", pub=K0)
x = copy.deepcopy(con); x["new_checkpoint"] = keep_lines(x["new_checkpoint"], "5288d319")
proof("con-new-only-K0", x, "checkpoint 240 keeps only K0's line, K1 trusted", "not-checked")
x = copy.deepcopy(con); x["path"][2] = flip_hex(x["path"][2], 0)
proof("con-path-elem", x, "a hash of the consistency path changed", "failed")
x = copy.deepcopy(con)
x["new_checkpoint"] = flip_note_sig(x["new_checkpoint"], 1 if note_split(con["new_checkpoint"])[1][1] == k1_line_240 else 0)
proof("con-new-K1-sig", x, "K1's signature on checkpoint 240 flipped", "failed")
x = copy.deepcopy(con); x["old_checkpoint"] = flip_note_sig(x["old_checkpoint"])
proof("con-old-K0-sig", x, "K0's signature on checkpoint 13 flipped: the larger checkpoint proves its body", "ok")
x = copy.deepcopy(con); x["old_checkpoint"] = x["old_checkpoint"] + k1_line_240 + "\n"
proof("con-old-bad-K1-line", x, "checkpoint 240's K1 line appended to checkpoint 13 (invalid there)", "failed")
x = copy.deepcopy(con)
x["old_size"], x["new_size"], x["old_checkpoint"], x["new_checkpoint"] = 240, 13, con["new_checkpoint"], con["old_checkpoint"]
proof("con-swapped", x, "old and new swapped: the new one (13) has no K1 line", "not-checked")
x = copy.deepcopy(con); x["new_checkpoint"] = x["new_checkpoint"].replace("sios/audit/c55", "sios/audit/c56", 1)
proof("con-new-origin-body", x, "checkpoint 240's origin changed in its body only", "failed")
x = copy.deepcopy(con); x["new_checkpoint"] = x["new_checkpoint"].replace("sios/audit/c55", "sios/audit/c56")
proof("con-new-origin-and-lines", x, "checkpoint 240's origin changed in its body and its lines", "not-checked")
x = copy.deepcopy(con); x["old_checkpoint"] = x["old_checkpoint"].replace("sios/audit/c55", "sios/audit/c56")
proof("con-old-origin", x, "checkpoint 13's origin changed", "failed")
x = copy.deepcopy(con); x["old_checkpoint"] = x["old_checkpoint"].replace("\n13\n", "\n14\n"); x["old_size"] = 14
proof("con-old-size", x, "checkpoint 13 and the proof claim size 14", "failed")

# With the export given too (§7.2, "Checking a proof with an export"): the
# keys in force at each size come from its verified key history.
EXPORT = ["--bundle", os.path.join(HERE, "sample.oar")]
proof("inc-250-trust-K0-export", inc, "trusting K0, with the export: K1 is in force at 287", "ok",
      pub=K0, extra=EXPORT)
proof("con-ok-export", con, "the untouched consistency proof, with the export", "ok", extra=EXPORT)
x = copy.deepcopy(con); x["new_checkpoint"] = keep_lines(x["new_checkpoint"], "5288d319")
proof("con-new-only-K0-export", x, "checkpoint 240 (a hand-over) keeps only K0's line, with the export: K1's is missing",
      "failed", extra=EXPORT)
x = copy.deepcopy(con); x["old_checkpoint"] = flip_note_sig(x["old_checkpoint"])
proof("con-old-K0-sig-export", x, "K0's signature on checkpoint 13 flipped, with the export: K0 is in force at 13",
      "failed", extra=EXPORT)
# Two histories signed by one key (the synthetic log and its fork at record
# 5, above): a true proof of record 2 in the fork's signed tree of size 7
# holds alone, but the export of the other history has another root at 7.
fork_inc = {"format": "sios-oar-inclusion-proof/1", "seq": 2, "tree_size": 7, "record": fork[2].hex(),
            "path": [h.hex() for h in ov.gen_inclusion(2, fork[:7])],
            "checkpoint": sign_note([(own, opk)], fork[:7]).decode()}
proof("inc-fork-alone", fork_inc, "a proof in a fork's signed tree of size 7, checked alone", "ok",
      pub=f"{OUT}/own.pub")
proof("inc-fork-export", fork_inc, "the same proof, with the export of the other history (its root at 7 differs)",
      "failed", pub=f"{OUT}/own.pub", extra=["--bundle", f"{OUT}/ok-synthetic.oar"])

# --- the manifest ----------------------------------------------------------
manifest = [{"name": name, "kind": "bundle", "bundle": path, "pubkey": pub, "extra": extra,
             "description": desc, "expect": list(expect) if isinstance(expect, tuple) else expect}
            for name, path, pub, extra, desc, expect in cases] + proof_cases
assert len({c["name"] for c in manifest}) == len(manifest), "case names repeat"
with open(os.path.join(OUT, "cases.json"), "w") as f:
    json.dump(manifest, f, indent=1)
print(f"{len(manifest)} cases in {OUT}")
