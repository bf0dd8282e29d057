#!/usr/bin/python3
# // clang-format off   <- not C++
"""The corpus of tests/bench/tensors: safetensors checkpoints that share tensors the way real ones
do (a base, its fine-tunes, a re-save, an fp16 copy), built from real float32 weights.

  tensor_corpus.py OUTDIR [--scale MiB] [--weights-cache DIR] [--seed N]
  tensor_corpus.py --verify OUTDIR

Run with Debian's python3 (/usr/bin/python3 and python3-numpy). Writes into OUTDIR:
  base.safetensors        about --scale MiB (default 512), F32, Stable Diffusion 1.x names and
                          shapes (channel dimensions scaled to the size): model.diffusion_model.
                          (UNet, ~60% of the bytes: tensors of 0.5-16 MiB at the default scale,
                          biases and norms of a few KiB), first_stage_model. (VAE, ~15%),
                          cond_stage_model.transformer. (CLIP text encoder, ~25%)
  finetune1..5            base with a different ~10% (by bytes) of the UNet changed in each (value
   .safetensors           + small seeded noise; disjoint runs of whole sub-blocks: input_blocks,
                          middle_block, output_blocks parts), their own __metadata__
  resaved.safetensors     base's tensors, same values, in a shuffled (seeded) order, own metadata
  fp16.safetensors        base converted to F16
  corpus.json             per file: name, store_name (the name tests/bench/tensors imports it as),
                          size, sha256, header_bytes (8 + N), its tensors {name, dtype, bytes,
                          sha256 of the tensor's bytes}; distinct_tensor_bytes (bytes of every
                          distinct tensor, by sha256, over the whole corpus), header_bytes (sum of
                          8 + N over the files), changed_unet_bytes per fine-tune, weights_source
The format is written by hand: 8-byte little-endian u64 N, N bytes of JSON header padded with
spaces to a multiple of 8, then the tensors' bytes, contiguous, in header order.

Real weights: the npm package @vladmandic/face-api (pinned version and integrity below) ships TF.js
models: model/*-weights_manifest.json and the *.bin shards they describe. Its tarball is fetched
once into --weights-cache (default /var/tmp/modelfs-weights; `npm pack`, else the registry over
https) and read in place with tarfile; every float32 weight in it (stored as float32, or quantised
to uint8/uint16/float16 and dequantised the way TF.js loads it: q * scale + min) goes into one pool
of real values, about 12.5 million. Tensors take consecutive runs of that pool; once a pass over
the pool is used up the next pass adds seeded noise (5% of the pool's standard deviation), so no
two tensors are equal. When the package cannot be had, the values are seeded random normals and
corpus.json says so in weights_source ("random (download failed: ...)"), as stderr does.

--verify OUTDIR re-reads every file and checks it against OUTDIR/corpus.json: sizes and hashes,
headers, contiguous data, every tensor's hash, and that each fine-tune (and resaved) shares every
tensor but its changed ones with base.
"""

import argparse
import base64
import hashlib
import json
import os
import posixpath
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request

import numpy as np

PACKAGE = "@vladmandic/face-api"
VERSION = "1.7.15"
INTEGRITY = ("sha512-WDMmK3CfNLo8jylWqMoQgf4nIst3M0fzx1dnac96wv/dvMTN4DxC/Pq1DGtduDk1lktCamQ3MIDXFnv"
             "rdHTXDw==")
TARBALL = "vladmandic-face-api-1.7.15.tgz"  # what `npm pack` names it
REGISTRY = "https://registry.npmjs.org"

SECTIONS = (  # prefix, share of the bytes
    ("model.diffusion_model.", 0.60),
    ("first_stage_model.", 0.15),
    ("cond_stage_model.transformer.", 0.25),
)
FINETUNES = 5
CHANGED_SHARE = 0.10  # of the UNet's bytes, per fine-tune


def log(msg):
    print(f"tensor_corpus: {msg}", file=sys.stderr, flush=True)


# --- real weights -------------------------------------------------------------------------------

def _integrity_ok(path):
    algo, _, want = INTEGRITY.partition("-")
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return base64.b64encode(h.digest()).decode() == want


def fetch_tarball(cache):
    """The package's tarball in CACHE, downloaded if missing; raises on failure."""
    os.makedirs(cache, exist_ok=True)
    path = os.path.join(cache, TARBALL)
    if os.path.exists(path):
        if _integrity_ok(path):
            return path, "cached"
        log(f"{path} does not match {INTEGRITY[:20]}...; fetching it again")
        os.unlink(path)
    errors = []
    tmp = tempfile.mkdtemp(prefix=".fetch-", dir=cache)
    try:
        if shutil.which("npm"):
            r = subprocess.run(["npm", "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", tmp,
                                "--silent"], capture_output=True, text=True, timeout=600)
            got = os.path.join(tmp, TARBALL)
            if r.returncode == 0 and os.path.exists(got) and _integrity_ok(got):
                os.replace(got, path)
                return path, "npm pack"
            errors.append(f"npm pack: exit {r.returncode}: {(r.stderr or r.stdout).strip()[-300:]}")
        try:
            meta_url = f"{REGISTRY}/{PACKAGE.replace('/', '%2f')}/{VERSION}"
            with urllib.request.urlopen(meta_url, timeout=60) as resp:
                url = json.load(resp)["dist"]["tarball"]
            got = os.path.join(tmp, TARBALL)
            with urllib.request.urlopen(url, timeout=300) as resp, open(got, "wb") as out:
                shutil.copyfileobj(resp, out, 1 << 20)
            if not _integrity_ok(got):
                raise ValueError(f"{url} does not match the pinned integrity {INTEGRITY[:20]}...")
            os.replace(got, path)
            return path, "registry over https"
        except Exception as e:  # noqa: BLE001 (any failure means: no real weights)
            errors.append(f"https: {e}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    raise RuntimeError("; ".join(errors))


_QBYTES = {"uint8": 1, "uint16": 2, "float16": 2}
_DBYTES = {"float32": 4, "int32": 4, "bool": 1, "string": None}


def load_pool(tgz):
    """Every float32 weight of the package's TF.js models, as one float32 array, and a summary."""
    pool, files, raw, deq = [], [], 0, 0
    with tarfile.open(tgz, "r:gz") as tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile()}
        manifests = sorted(n for n in members if n.startswith("package/model/")
                           and n.endswith("-weights_manifest.json"))
        if not manifests:
            raise ValueError(f"{tgz} has no package/model/*-weights_manifest.json")
        for man in manifests:
            groups = json.load(tar.extractfile(members[man]))
            base = posixpath.dirname(man)
            files.append(posixpath.relpath(man, "package"))
            for g in groups:
                shards = [posixpath.join(base, p) for p in g["paths"]]
                data = b"".join(tar.extractfile(members[s]).read() for s in shards)
                files.extend(posixpath.relpath(s, "package") for s in shards)
                pos = 0
                for w in g["weights"]:
                    n = int(np.prod(w["shape"], dtype=np.int64)) if w["shape"] else 1
                    q = w.get("quantization")
                    if q:
                        size = n * _QBYTES[q["dtype"]]
                    else:
                        if _DBYTES.get(w["dtype"]) is None:
                            raise ValueError(f"{man}: {w['name']}: dtype {w['dtype']} not handled")
                        size = n * _DBYTES[w["dtype"]]
                    chunk = data[pos:pos + size]
                    pos += size
                    if len(chunk) != size:
                        raise ValueError(f"{man}: {w['name']}: the shards end early")
                    if w["dtype"] != "float32":
                        continue
                    if not q:
                        pool.append(np.frombuffer(chunk, "<f4"))
                        raw += n
                    elif q["dtype"] == "float16":
                        pool.append(np.frombuffer(chunk, "<f2").astype(np.float32))
                        deq += n
                    else:
                        v = np.frombuffer(chunk, "<u1" if q["dtype"] == "uint8" else "<u2")
                        if "scale" in q:
                            pool.append((v * np.float32(q["scale"]) + np.float32(q["min"]))
                                        .astype(np.float32))
                        else:  # a lookup table (newer TF.js)
                            pool.append(np.asarray(q["table"], np.float32)[v])
                        deq += n
                if pos != len(data):
                    raise ValueError(f"{man}: {len(data) - pos} bytes of the shards not described")
    values = np.concatenate(pool)
    values = values[np.isfinite(values)]
    if values.size < 1 << 20:
        raise ValueError(f"only {values.size} float32 values in {tgz}")
    return values, {"files": files, "float32_values": int(values.size), "stored_float32": raw,
                    "dequantised": deq}


# --- layouts: Stable Diffusion 1.x names and shapes, channel dimensions times f -------------------

def _scaler(f):
    def s(*dims):
        return tuple(d if d <= 8 else max(1, int(round(d * f))) for d in dims)
    return s


def unet_layout(p, f):
    s, out = _scaler(f), []

    def add(name, *shape):
        out.append((p + name, s(*shape)))

    def res(b, cin, cout):
        add(f"{b}.in_layers.0.weight", cin)
        add(f"{b}.in_layers.0.bias", cin)
        add(f"{b}.in_layers.2.weight", cout, cin, 3, 3)
        add(f"{b}.in_layers.2.bias", cout)
        add(f"{b}.emb_layers.1.weight", cout, 1280)
        add(f"{b}.emb_layers.1.bias", cout)
        add(f"{b}.out_layers.0.weight", cout)
        add(f"{b}.out_layers.0.bias", cout)
        add(f"{b}.out_layers.3.weight", cout, cout, 3, 3)
        add(f"{b}.out_layers.3.bias", cout)
        if cin != cout:
            add(f"{b}.skip_connection.weight", cout, cin, 1, 1)
            add(f"{b}.skip_connection.bias", cout)

    def attn(b, c):
        add(f"{b}.norm.weight", c)
        add(f"{b}.norm.bias", c)
        add(f"{b}.proj_in.weight", c, c, 1, 1)
        add(f"{b}.proj_in.bias", c)
        t = f"{b}.transformer_blocks.0"
        for q in ("to_q", "to_k", "to_v"):
            add(f"{t}.attn1.{q}.weight", c, c)
        add(f"{t}.attn1.to_out.0.weight", c, c)
        add(f"{t}.attn1.to_out.0.bias", c)
        add(f"{t}.ff.net.0.proj.weight", 8 * c, c)
        add(f"{t}.ff.net.0.proj.bias", 8 * c)
        add(f"{t}.ff.net.2.weight", c, 4 * c)
        add(f"{t}.ff.net.2.bias", c)
        add(f"{t}.attn2.to_q.weight", c, c)
        add(f"{t}.attn2.to_k.weight", c, 768)
        add(f"{t}.attn2.to_v.weight", c, 768)
        add(f"{t}.attn2.to_out.0.weight", c, c)
        add(f"{t}.attn2.to_out.0.bias", c)
        for n in ("norm1", "norm2", "norm3"):
            add(f"{t}.{n}.weight", c)
            add(f"{t}.{n}.bias", c)
        add(f"{b}.proj_out.weight", c, c, 1, 1)
        add(f"{b}.proj_out.bias", c)

    add("time_embed.0.weight", 1280, 320)
    add("time_embed.0.bias", 1280)
    add("time_embed.2.weight", 1280, 1280)
    add("time_embed.2.bias", 1280)
    add("input_blocks.0.0.weight", 320, 4, 3, 3)
    add("input_blocks.0.0.bias", 320)
    levels = (320, 640, 1280, 1280)
    ch, idx, skips = 320, 1, [320]
    for lvl, c in enumerate(levels):
        for _ in range(2):
            res(f"input_blocks.{idx}.0", ch, c)
            ch = c
            if lvl < 3:
                attn(f"input_blocks.{idx}.1", c)
            skips.append(c)
            idx += 1
        if lvl < 3:
            add(f"input_blocks.{idx}.0.op.weight", c, c, 3, 3)
            add(f"input_blocks.{idx}.0.op.bias", c)
            skips.append(c)
            idx += 1
    res("middle_block.0", 1280, 1280)
    attn("middle_block.1", 1280)
    res("middle_block.2", 1280, 1280)
    idx = 0
    for lvl in (3, 2, 1, 0):
        c = levels[lvl]
        for i in range(3):
            res(f"output_blocks.{idx}.0", ch + skips.pop(), c)
            ch = c
            if lvl < 3:
                attn(f"output_blocks.{idx}.1", c)
            if lvl > 0 and i == 2:
                up = 2 if lvl < 3 else 1
                add(f"output_blocks.{idx}.{up}.conv.weight", c, c, 3, 3)
                add(f"output_blocks.{idx}.{up}.conv.bias", c)
            idx += 1
    add("out.0.weight", 320)
    add("out.0.bias", 320)
    add("out.2.weight", 4, 320, 3, 3)
    add("out.2.bias", 4)
    return out


def vae_layout(p, f):
    s, out = _scaler(f), []

    def add(name, *shape):
        out.append((p + name, s(*shape)))

    def res(b, cin, cout):
        add(f"{b}.norm1.weight", cin)
        add(f"{b}.norm1.bias", cin)
        add(f"{b}.conv1.weight", cout, cin, 3, 3)
        add(f"{b}.conv1.bias", cout)
        add(f"{b}.norm2.weight", cout)
        add(f"{b}.norm2.bias", cout)
        add(f"{b}.conv2.weight", cout, cout, 3, 3)
        add(f"{b}.conv2.bias", cout)
        if cin != cout:
            add(f"{b}.nin_shortcut.weight", cout, cin, 1, 1)
            add(f"{b}.nin_shortcut.bias", cout)

    def mid(side):
        res(f"{side}.mid.block_1", 512, 512)
        add(f"{side}.mid.attn_1.norm.weight", 512)
        add(f"{side}.mid.attn_1.norm.bias", 512)
        for q in ("q", "k", "v", "proj_out"):
            add(f"{side}.mid.attn_1.{q}.weight", 512, 512, 1, 1)
            add(f"{side}.mid.attn_1.{q}.bias", 512)
        res(f"{side}.mid.block_2", 512, 512)

    levels = (128, 256, 512, 512)
    add("encoder.conv_in.weight", 128, 3, 3, 3)
    add("encoder.conv_in.bias", 128)
    ch = 128
    for lvl, c in enumerate(levels):
        for j in range(2):
            res(f"encoder.down.{lvl}.block.{j}", ch, c)
            ch = c
        if lvl < 3:
            add(f"encoder.down.{lvl}.downsample.conv.weight", c, c, 3, 3)
            add(f"encoder.down.{lvl}.downsample.conv.bias", c)
    mid("encoder")
    add("encoder.norm_out.weight", 512)
    add("encoder.norm_out.bias", 512)
    add("encoder.conv_out.weight", 8, 512, 3, 3)
    add("encoder.conv_out.bias", 8)
    add("quant_conv.weight", 8, 8, 1, 1)
    add("quant_conv.bias", 8)
    add("post_quant_conv.weight", 4, 4, 1, 1)
    add("post_quant_conv.bias", 4)
    add("decoder.conv_in.weight", 512, 4, 3, 3)
    add("decoder.conv_in.bias", 512)
    mid("decoder")
    ch = 512
    for lvl in (3, 2, 1, 0):
        c = levels[lvl]
        for j in range(3):
            res(f"decoder.up.{lvl}.block.{j}", ch, c)
            ch = c
        if lvl > 0:
            add(f"decoder.up.{lvl}.upsample.conv.weight", c, c, 3, 3)
            add(f"decoder.up.{lvl}.upsample.conv.bias", c)
    add("decoder.norm_out.weight", 128)
    add("decoder.norm_out.bias", 128)
    add("decoder.conv_out.weight", 3, 128, 3, 3)
    add("decoder.conv_out.bias", 3)
    return out


def clip_layout(p, f):
    s, out = _scaler(f), []

    def add(name, *shape):
        out.append((p + "text_model." + name, s(*shape)))

    add("embeddings.token_embedding.weight", 49408, 768)
    add("embeddings.position_embedding.weight", 77, 768)
    for i in range(12):
        layer = f"encoder.layers.{i}"
        for q in ("k", "v", "q", "out"):
            add(f"{layer}.self_attn.{q}_proj.weight", 768, 768)
            add(f"{layer}.self_attn.{q}_proj.bias", 768)
        add(f"{layer}.layer_norm1.weight", 768)
        add(f"{layer}.layer_norm1.bias", 768)
        add(f"{layer}.mlp.fc1.weight", 3072, 768)
        add(f"{layer}.mlp.fc1.bias", 3072)
        add(f"{layer}.mlp.fc2.weight", 768, 3072)
        add(f"{layer}.mlp.fc2.bias", 768)
        add(f"{layer}.layer_norm2.weight", 768)
        add(f"{layer}.layer_norm2.bias", 768)
    add("final_layer_norm.weight", 768)
    add("final_layer_norm.bias", 768)
    return out


LAYOUTS = {"model.diffusion_model.": unet_layout, "first_stage_model.": vae_layout,
           "cond_stage_model.transformer.": clip_layout}


def nbytes(shape, itemsize=4):
    n = itemsize
    for d in shape:
        n *= d
    return n


def fit(layout, prefix, target):
    """The layout whose F32 bytes come closest to TARGET (bisection on the channel factor)."""
    def total(f):
        return sum(nbytes(sh) for _, sh in layout(prefix, f))
    lo, hi = 1e-4, 1.0
    while total(hi) < target:
        hi *= 2
    for _ in range(50):
        mid = (lo + hi) / 2
        if total(mid) < target:
            lo = mid
        else:
            hi = mid
    f = min((lo, hi), key=lambda x: abs(total(x) - target))
    return layout(prefix, f), f


# --- writing ------------------------------------------------------------------------------------

class Hashes:
    """sha256 of a tensor's bytes, once per array."""
    def __init__(self):
        self.by_id = {}

    def __call__(self, arr):
        key = id(arr)
        hit = self.by_id.get(key)
        if hit is None:
            hit = (hashlib.sha256(memoryview(arr).cast("B")).hexdigest(), arr)
            self.by_id[key] = hit
        return hit[0]


def header_for(entries, metadata):
    h, pos = {"__metadata__": metadata}, 0
    for name, arr in entries:
        h[name] = {"dtype": "F32" if arr.dtype == np.float32 else "F16",
                   "shape": list(arr.shape), "data_offsets": [pos, pos + arr.nbytes]}
        pos += arr.nbytes
    raw = json.dumps(h, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return raw


def write_file(path, entries, metadata, hashes):
    """Writes a safetensors file of ENTRIES [(name, ndarray)]; returns its corpus.json record."""
    head = header_for(entries, metadata)
    fh = hashlib.sha256()
    tensors = []
    with open(path + ".tmp", "wb") as f:
        for piece in (struct.pack("<Q", len(head)), head):
            f.write(piece)
            fh.update(piece)
        for name, arr in entries:
            mv = memoryview(arr).cast("B")
            f.write(mv)
            fh.update(mv)
            tensors.append({"name": name, "dtype": "F32" if arr.dtype == np.float32 else "F16",
                            "bytes": arr.nbytes, "sha256": hashes(arr)})
    os.replace(path + ".tmp", path)
    return {"name": os.path.basename(path), "size": os.path.getsize(path),
            "sha256": fh.hexdigest(), "header_bytes": 8 + len(head), "metadata": metadata,
            "tensors": tensors}


# --- the corpus ---------------------------------------------------------------------------------

def build(args):
    t0 = time.monotonic()
    out = os.path.abspath(args.outdir)
    os.makedirs(out, exist_ok=True)
    data_bytes = int(args.scale * (1 << 20))

    try:
        tgz, how = fetch_tarball(args.weights_cache)
        pool, info = load_pool(tgz)
        source = {"package": PACKAGE, "version": VERSION, "integrity": INTEGRITY,
                  "tarball": tgz, "fetched_by": how, **info,
                  "how": "every float32 weight of the package's TF.js models (uint8/uint16/float16 "
                         "quantised ones dequantised as TF.js loads them), concatenated in "
                         "manifest order; tensors take consecutive runs of it, each later pass "
                         "over it with seeded noise of 5% of its standard deviation"}
        log(f"real weights: {PACKAGE}@{VERSION} ({how}): {pool.size} float32 values from "
            f"{len(info['files'])} files")
    except Exception as e:  # noqa: BLE001
        msg = str(e).replace("\n", " ")[:500]
        source = f"random (download failed: {msg})"
        log("=" * 78)
        log(f"WARNING: no real weights ({msg})")
        log("WARNING: the corpus is built from SEEDED RANDOM values; corpus.json says so")
        log("=" * 78)
        pool = np.random.default_rng([args.seed, 7]).standard_normal(1 << 23, np.float32) * 0.05

    sd = float(pool.std()) or 1.0
    layout, factors = [], {}
    for prefix, share in SECTIONS:
        part, f = fit(LAYOUTS[prefix], prefix, data_bytes * share)
        layout += part
        factors[prefix] = round(f, 5)

    # base: consecutive runs of the pool; noise from the second pass on
    noise_rng = np.random.default_rng([args.seed, 1])
    hashes = Hashes()
    base, cursor, seen = {}, 0, set()
    for name, shape in layout:
        n = int(np.prod(shape, dtype=np.int64))
        idx = (cursor + np.arange(n, dtype=np.int64)) % pool.size
        vals = pool[idx]
        later = (cursor + np.arange(n, dtype=np.int64)) >= pool.size
        if later.any():
            vals[later] += noise_rng.standard_normal(int(later.sum()), np.float32) * np.float32(0.05 * sd)
        cursor += n
        arr = np.ascontiguousarray(vals.reshape(shape), dtype="<f4")
        while hashes(arr) in seen:  # equal runs (constant stretches of the pool): make it its own
            arr = arr + noise_rng.standard_normal(arr.shape, np.float32) * np.float32(0.05 * sd)
        seen.add(hashes(arr))
        base[name] = arr
    names = [n for n, _ in layout]

    # fine-tunes: consecutive whole sub-blocks of the UNet, ~10% of its bytes each, disjoint
    unet = [n for n in names if n.startswith("model.diffusion_model.")]
    unet_bytes = sum(base[n].nbytes for n in unet)
    units = {}
    for n in unet:
        parts = n[len("model.diffusion_model."):].split(".")
        # a sub-block: input_blocks.4.1 (an attention), middle_block.0, output_blocks.2.0 (a
        # resnet); time_embed and out each as a whole
        depth = {"input_blocks": 3, "output_blocks": 3, "middle_block": 2}.get(parts[0], 1)
        key = ".".join(parts[:depth])
        units.setdefault(key, []).append(n)
    order = list(units)
    target = unet_bytes * CHANGED_SHARE
    plan, k, done = [], 0, 0  # fine-tune i ends where the running total comes closest to i x 10%
    for i in range(1, FINETUNES + 1):
        chosen = []
        while k < len(order):
            u = sum(base[n].nbytes for n in units[order[k]])
            if chosen and abs(done + u - i * target) > abs(done - i * target):
                break
            chosen.append(order[k])
            done += u
            k += 1
        if not chosen:
            sys.exit("tensor_corpus: the UNet has too few blocks for the fine-tunes")
        plan.append(chosen)

    files = []
    meta_common = {"format": "pt", "modelspec.architecture": "stable-diffusion-v1",
                   "corpus.generator": "tests/bench/tensor_corpus.py", "corpus.seed": str(args.seed)}
    rec = write_file(os.path.join(out, "base.safetensors"), [(n, base[n]) for n in names],
                     dict(meta_common, **{"modelspec.title": "bench base"}), hashes)
    files.append(dict(rec, store_name="base", role="base"))
    log(f"base.safetensors: {rec['size']} bytes, {len(names)} tensors")

    changed_bytes = {}
    for i, chosen in enumerate(plan, 1):
        rng = np.random.default_rng([args.seed, 100 + i])
        changed = {}
        for u in chosen:
            for n in units[u]:
                a = base[n]
                scale = np.float32(1e-3 * (float(np.abs(a).mean()) + 1e-3))
                b = np.ascontiguousarray(a + rng.standard_normal(a.shape, np.float32) * scale, "<f4")
                while hashes(b) == hashes(a):
                    b = b + scale
                changed[n] = b
        entries = [(n, changed.get(n, base[n])) for n in names]
        meta = dict(meta_common, **{"modelspec.title": f"bench finetune {i}",
                                    "ss_training_comment": f"fine-tune {i}: {chosen[0]} .. {chosen[-1]}",
                                    "ss_steps": str(1000 * i)})
        fname = f"finetune{i}.safetensors"
        rec = write_file(os.path.join(out, fname), entries, meta, hashes)
        changed_bytes[fname] = sum(a.nbytes for a in changed.values())
        files.append(dict(rec, store_name=f"ft{i}", role="finetune", changed_blocks=chosen,
                          changed_tensors=len(changed), changed_unet_bytes=changed_bytes[fname]))
        log(f"{fname}: {rec['size']} bytes, {len(changed)} tensors changed "
            f"({changed_bytes[fname]} bytes, {100 * changed_bytes[fname] / unet_bytes:.1f}% of the UNet: "
            f"{chosen[0]} .. {chosen[-1]})")
        for a in changed.values():  # free them (the hash stays recorded in the file's record)
            hashes.by_id.pop(id(a), None)
        del changed, entries

    shuffled = list(names)
    np.random.default_rng([args.seed, 200]).shuffle(shuffled)
    rec = write_file(os.path.join(out, "resaved.safetensors"), [(n, base[n]) for n in shuffled],
                     {"format": "pt", "modelspec.title": "bench base, re-saved",
                      "note": "the same tensors in another order"}, hashes)
    files.append(dict(rec, store_name="resaved", role="resaved"))
    log(f"resaved.safetensors: {rec['size']} bytes")

    # fp16: one tensor at a time (the whole F16 copy is not kept)
    fp16_entries = []
    for n in names:
        a = base[n]
        h = np.clip(a, -65504, 65504).astype("<f2")
        fp16_entries.append((n, h))
    rec = write_file(os.path.join(out, "fp16.safetensors"), fp16_entries,
                     dict(meta_common, **{"modelspec.title": "bench base, fp16", "dtype": "float16"}),
                     hashes)
    files.append(dict(rec, store_name="fp16", role="fp16"))
    log(f"fp16.safetensors: {rec['size']} bytes")
    del fp16_entries

    distinct = {}
    for f in files:
        for t in f["tensors"]:
            distinct[t["sha256"]] = t["bytes"]
    corpus = {
        "generator": "tests/bench/tensor_corpus.py",
        "scale_mib": args.scale,
        "seed": args.seed,
        "weights_source": source,
        "files": files,
        "distinct_tensor_bytes": sum(distinct.values()),
        "distinct_tensors": len(distinct),
        "header_bytes": sum(f["header_bytes"] for f in files),
        "total_bytes": sum(f["size"] for f in files),
        "base_data_bytes": sum(a.nbytes for a in base.values()),
        "unet_bytes": unet_bytes,
        "changed_unet_bytes": changed_bytes,
        "section_bytes": {p: sum(base[n].nbytes for n in names if n.startswith(p)) for p, _ in SECTIONS},
        "channel_factors": factors,
    }
    tmp = os.path.join(out, "corpus.json.tmp")
    with open(tmp, "w") as f:
        json.dump(corpus, f, indent=1)
        f.write("\n")
    os.replace(tmp, os.path.join(out, "corpus.json"))
    log(f"wrote {len(files)} files, {corpus['total_bytes']} bytes, in {time.monotonic() - t0:.1f}s; "
        f"distinct tensor bytes {corpus['distinct_tensor_bytes']}, header bytes {corpus['header_bytes']}")
    print(json.dumps({k: corpus[k] for k in ("total_bytes", "distinct_tensor_bytes", "header_bytes",
                                                "unet_bytes", "changed_unet_bytes")}))


# --- verify -------------------------------------------------------------------------------------

def verify(outdir):
    corpus = json.load(open(os.path.join(outdir, "corpus.json")))
    problems = []
    by_file = {}
    for rec in corpus["files"]:
        path = os.path.join(outdir, rec["name"])
        fh = hashlib.sha256()
        with open(path, "rb") as f:
            raw = f.read()
        fh.update(raw)
        if len(raw) != rec["size"] or fh.hexdigest() != rec["sha256"]:
            problems.append(f"{rec['name']}: size or sha256 differs from corpus.json")
        (n,) = struct.unpack("<Q", raw[:8])
        if n % 8 or 8 + n != rec["header_bytes"]:
            problems.append(f"{rec['name']}: header length {n}")
        head = json.loads(raw[8:8 + n])
        meta = head.pop("__metadata__", None)
        if meta != rec["metadata"]:
            problems.append(f"{rec['name']}: __metadata__ differs")
        pos, got = 0, {}
        for (name, t), want in zip(head.items(), rec["tensors"]):
            lo, hi = t["data_offsets"]
            item = {"F32": 4, "F16": 2}[t["dtype"]]
            if lo != pos or hi - lo != nbytes(t["shape"], item) or name != want["name"] \
                    or t["dtype"] != want["dtype"] or hi - lo != want["bytes"]:
                problems.append(f"{rec['name']}: tensor {name}: bad entry {t}")
            h = hashlib.sha256(raw[8 + n + lo:8 + n + hi]).hexdigest()
            if h != want["sha256"]:
                problems.append(f"{rec['name']}: tensor {name}: sha256 differs")
            got[name] = h
            pos = hi
        if len(head) != len(rec["tensors"]) or 8 + n + pos != len(raw):
            problems.append(f"{rec['name']}: tensors do not cover the data section exactly")
        by_file[rec["store_name"]] = (rec, got)
    base = by_file["base"][1]
    for key, (rec, got) in by_file.items():
        if rec["role"] in ("finetune", "resaved"):
            if set(got) != set(base):
                problems.append(f"{rec['name']}: not base's tensor names")
                continue
            diff = [n for n in base if got[n] != base[n]]
            want = rec.get("changed_tensors", 0)
            if len(diff) != want or any(not n.startswith("model.diffusion_model.") for n in diff):
                problems.append(f"{rec['name']}: {len(diff)} tensors differ from base, not {want}")
            if rec["role"] == "finetune":
                b = sum(t["bytes"] for t in rec["tensors"] if t["name"] in set(diff))
                if b != corpus["changed_unet_bytes"][rec["name"]]:
                    problems.append(f"{rec['name']}: changed bytes {b}")
        if rec["role"] == "fp16" and set(got.values()) & set(base.values()):
            problems.append(f"{rec['name']}: shares a tensor with base")
    changed = [set(t["name"] for t, b in zip(r["tensors"], by_file["base"][0]["tensors"])
                   if t["sha256"] != b["sha256"]) for r, _ in by_file.values() if r["role"] == "finetune"]
    for i in range(len(changed)):
        for j in range(i + 1, len(changed)):
            if changed[i] & changed[j]:
                problems.append(f"fine-tunes {i + 1} and {j + 1} change the same tensors")
    distinct = {}
    for rec, _ in by_file.values():
        for t in rec["tensors"]:
            distinct[t["sha256"]] = t["bytes"]
    if sum(distinct.values()) != corpus["distinct_tensor_bytes"]:
        problems.append("distinct_tensor_bytes differs")
    if sum(r["header_bytes"] for r, _ in by_file.values()) != corpus["header_bytes"]:
        problems.append("header_bytes differs")
    for p in problems:
        print(f"tensor_corpus: verify: {p}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"tensor_corpus: verify: {len(by_file)} files OK ({outdir})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir")
    ap.add_argument("--scale", type=float, default=512, help="MiB of base.safetensors (default 512)")
    ap.add_argument("--weights-cache", default="/var/tmp/modelfs-weights",
                    help="where the weights package's tarball is kept (default /var/tmp/modelfs-weights)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--verify", action="store_true", help="check OUTDIR against its corpus.json")
    args = ap.parse_args()
    if args.verify:
        return verify(args.outdir)
    if not args.scale >= 4:
        ap.error("--scale wants at least 4 (MiB)")
    build(args)


if __name__ == "__main__":
    main()
