#!/usr/bin/python3
# // clang-format off   <- not C++: keeps a stray `clang-format -i tests/support/*` off this file
"""Synthetic but realistic AI model files and tool installs for modelfs's demo, benchmarks and tests.

Python 3 standard library only.

  make_models.py safetensors OUT --kind KIND [--size BYTES] [--seed N] [--metadata k=v ...]
  make_models.py install ROOT --tool {a1111,comfyui,fooocus} [--seed N] [--scale small|medium]
  make_models.py dupes-folder OUT --files N --total-bytes B --dup-ratio R [--seed S]

Each subcommand prints a one-line JSON summary on stdout.

safetensors files: 8-byte little-endian header length N, N bytes of JSON padded with spaces so the
data starts at a multiple of 8, then the tensor data. Every tensor is F16; the tensor names follow
the conventions of the kind (SD checkpoints, SDXL, kohya LoRAs, VAEs, textual-inversion embeddings,
ControlNets, bare UNets) and the shapes are the real ones, scaled down for small files. Offsets are
contiguous from 0 to the end of the file. The file is the requested size exactly (an odd size is
one byte short: F16 data is always even; an embedding pads its header instead of adding tensors).

Tensor data is pseudo-random, fixed by the seed: the same seed gives the same bytes, different
seeds give different bytes. Without --seed a random seed is drawn (and printed). The high byte of
every F16 value keeps its exponent below 16, so every value is finite and |x| < 2, as in real
weights. Data is generated at several hundred MB/s per core and written in 16 MiB chunks; big
files are written by one worker process per core.
"""

import argparse
import hashlib
import json
import os
import random
import shutil
import struct
import sys
import zipfile
import zlib

MiB = 1 << 20
CHUNK = 16 * MiB  # data is generated and written in chunks of this size
PARALLEL_MIN = 64 * MiB  # files with more data than this are written by several processes

KINDS = ("checkpoint", "sdxl", "lora", "vae", "embedding", "controlnet", "unet")

# Sizes used when --size is not given: small and quick to write, still hundreds of tensors.
DEFAULT_SIZES = {
    "checkpoint": 4 * MiB,
    "sdxl": 6 * MiB,
    "lora": 512 * 1024,
    "vae": 1 * MiB,
    "embedding": 8 * 768 * 2 + 256,
    "controlnet": 2 * MiB,
    "unet": 3 * MiB,
}


# --------------------------------------------------------------------------------------------
# Pseudo-random data
# --------------------------------------------------------------------------------------------

def _clamp_table():
    # High byte of a little-endian F16: sign (0x80), exponent (0x7C), mantissa top bits (0x03).
    # Clearing 0x40 keeps the exponent <= 15: finite values with |x| < 2.
    return bytes(b & 0xBF for b in range(256))


_POOL = None


def _pool():
    """A fixed 16 MiB block of random bytes whose odd bytes (F16 high bytes) are clamped."""
    global _POOL
    if _POOL is None:
        pool = bytearray(random.Random("modelfs-make-models-pool-v1").randbytes(CHUNK))
        pool[1::2] = pool[1::2].translate(_clamp_table())
        _POOL = bytes(pool)
    return _POOL


def _class_preserving_permutation(rng):
    """A random byte substitution that maps bytes with bit 0x40 clear onto bytes with it clear."""
    low = [b for b in range(256) if not b & 0x40]
    high = [b for b in range(256) if b & 0x40]
    table = bytearray(256)
    for group in (low, high):
        shuffled = group[:]
        rng.shuffle(shuffled)
        for src, dst in zip(group, shuffled):
            table[src] = dst
    return bytes(table)


def data_chunk(seed, index, n):
    """Bytes [index*CHUNK, index*CHUNK + n) of the data stream of `seed` (n <= CHUNK, n even).

    Each chunk is a rotation of the pool by an even offset, put through a byte substitution, both
    drawn from (seed, index): chunks of one stream, and streams of different seeds, share no
    byte runs, so neither whole-file nor chunk-level deduplication finds anything in them.
    """
    rng = random.Random(f"chunk:{seed}:{index}")
    pool = _pool()
    k = rng.randrange(CHUNK // 2) * 2
    if k + n <= CHUNK:
        raw = pool[k:k + n]
    else:
        raw = pool[k:] + pool[:k + n - CHUNK]
    return raw.translate(_class_preserving_permutation(rng))


def write_data(fd, offset, nbytes, seed):
    """Writes nbytes of the seed's stream at file offset `offset` (a multiple of 2)."""
    nchunks = (nbytes + CHUNK - 1) // CHUNK

    def do(indices):
        for i in indices:
            n = min(CHUNK, nbytes - i * CHUNK)
            view = memoryview(data_chunk(seed, i, n))
            pos = 0
            while pos < n:
                pos += os.pwrite(fd, view[pos:], offset + i * CHUNK + pos)

    workers = min(4, os.cpu_count() or 1)
    if nbytes < PARALLEL_MIN or workers < 2:
        do(range(nchunks))
        return
    _pool()  # build it once, before forking
    sys.stdout.flush()
    sys.stderr.flush()
    pids = []
    for w in range(workers):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                do(range(w, nchunks, workers))
            except BaseException as e:  # noqa: BLE001 - report, and never return into the caller
                sys.stderr.write(f"make_models.py: writer {w}: {e}\n")
                code = 1
            finally:
                os._exit(code)
        pids.append(pid)
    failed = False
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            failed = True
    if failed:
        raise OSError("a data writer process failed")


def derive_seed(*parts):
    """A stable integer seed from any parts (Python's hash() is randomised per process)."""
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little")


# --------------------------------------------------------------------------------------------
# Tensor layouts
# --------------------------------------------------------------------------------------------
# A layout takes a shrink factor f and yields (name, shape, once) without end: `once` marks the
# one-off tensors at the start (embeddings, stems); the rest repeat block after block with growing
# indices. Dimensions above 4 are divided by f so that small files still hold many tensors;
# kernel sizes and latent channels stay as they are.

def _scaler(f):
    def s(*dims):
        return tuple(d if d <= 4 else max(1, d // f) for d in dims)
    return s


def unet_layout(prefix, sdxl=False, control=False):
    def gen(f):
        s = _scaler(f)
        ctx = 2048 if sdxl else 768
        yield f"{prefix}input_blocks.0.0.weight", s(320, 4, 3, 3), True
        yield f"{prefix}input_blocks.0.0.bias", s(320), True
        yield f"{prefix}time_embed.0.weight", s(1280, 320), True
        yield f"{prefix}time_embed.0.bias", s(1280), True
        yield f"{prefix}time_embed.2.weight", s(1280, 1280), True
        yield f"{prefix}time_embed.2.bias", s(1280), True
        if sdxl:
            yield f"{prefix}label_emb.0.0.weight", s(1280, 2816), True
            yield f"{prefix}label_emb.0.0.bias", s(1280), True
        if control:
            hint = [(16, 3), (16, 16), (32, 16), (32, 32), (96, 32), (96, 96), (256, 96), (320, 256)]
            for i, (o, n) in enumerate(hint):
                yield f"{prefix}input_hint_block.{2 * i}.weight", s(o, n, 3, 3), True
                yield f"{prefix}input_hint_block.{2 * i}.bias", s(o), True
        chans = (320, 640, 1280) if sdxl else (320, 640, 1280, 1280)
        depth = 2 if sdxl else 1
        parts = ("input_blocks",) if control else ("input_blocks", "output_blocks")
        k = 1
        while True:
            c = chans[((k - 1) // 3) % len(chans)]
            for part in parts:
                b = f"{prefix}{part}.{k}"
                r = f"{b}.0"
                yield f"{r}.in_layers.0.weight", s(c), False
                yield f"{r}.in_layers.0.bias", s(c), False
                yield f"{r}.in_layers.2.weight", s(c, c, 3, 3), False
                yield f"{r}.in_layers.2.bias", s(c), False
                yield f"{r}.emb_layers.1.weight", s(c, 1280), False
                yield f"{r}.emb_layers.1.bias", s(c), False
                yield f"{r}.out_layers.0.weight", s(c), False
                yield f"{r}.out_layers.0.bias", s(c), False
                yield f"{r}.out_layers.3.weight", s(c, c, 3, 3), False
                yield f"{r}.out_layers.3.bias", s(c), False
                a = f"{b}.1"
                proj = s(c, c) if sdxl else s(c, c, 1, 1)
                yield f"{a}.norm.weight", s(c), False
                yield f"{a}.norm.bias", s(c), False
                yield f"{a}.proj_in.weight", proj, False
                yield f"{a}.proj_in.bias", s(c), False
                for d in range(depth):
                    t = f"{a}.transformer_blocks.{d}"
                    for q in ("to_q", "to_k", "to_v"):
                        yield f"{t}.attn1.{q}.weight", s(c, c), False
                    yield f"{t}.attn1.to_out.0.weight", s(c, c), False
                    yield f"{t}.attn1.to_out.0.bias", s(c), False
                    yield f"{t}.attn2.to_q.weight", s(c, c), False
                    yield f"{t}.attn2.to_k.weight", s(c, ctx), False
                    yield f"{t}.attn2.to_v.weight", s(c, ctx), False
                    yield f"{t}.attn2.to_out.0.weight", s(c, c), False
                    yield f"{t}.attn2.to_out.0.bias", s(c), False
                    yield f"{t}.ff.net.0.proj.weight", s(8 * c, c), False
                    yield f"{t}.ff.net.0.proj.bias", s(8 * c), False
                    yield f"{t}.ff.net.2.weight", s(c, 4 * c), False
                    yield f"{t}.ff.net.2.bias", s(c), False
                    for n in ("norm1", "norm2", "norm3"):
                        yield f"{t}.{n}.weight", s(c), False
                        yield f"{t}.{n}.bias", s(c), False
                yield f"{a}.proj_out.weight", proj, False
                yield f"{a}.proj_out.bias", s(c), False
                if control:
                    yield f"{prefix}zero_convs.{k}.0.weight", s(c, c, 1, 1), False
                    yield f"{prefix}zero_convs.{k}.0.bias", s(c), False
            k += 1
    return gen


def vae_layout(prefix):
    def gen(f):
        s = _scaler(f)
        yield f"{prefix}encoder.conv_in.weight", s(128, 3, 3, 3), True
        yield f"{prefix}encoder.conv_in.bias", s(128), True
        for p in ("q", "k", "v", "proj_out"):
            yield f"{prefix}encoder.mid.attn_1.{p}.weight", s(512, 512, 1, 1), True
            yield f"{prefix}encoder.mid.attn_1.{p}.bias", s(512), True
        yield f"{prefix}quant_conv.weight", s(8, 8, 1, 1), True
        yield f"{prefix}quant_conv.bias", s(8), True
        yield f"{prefix}post_quant_conv.weight", s(4, 4, 1, 1), True
        yield f"{prefix}post_quant_conv.bias", s(4), True
        yield f"{prefix}decoder.conv_in.weight", s(512, 4, 3, 3), True
        yield f"{prefix}decoder.conv_in.bias", s(512), True
        lvl = 0
        while True:
            c = (128, 256, 512, 512)[lvl % 4]
            for side, part, nblocks, resample in (("encoder", "down", 2, "downsample"),
                                                  ("decoder", "up", 3, "upsample")):
                for j in range(nblocks):
                    b = f"{prefix}{side}.{part}.{lvl}.block.{j}"
                    for n in ("norm1", "conv1", "norm2", "conv2"):
                        shape = s(c, c, 3, 3) if n.startswith("conv") else s(c)
                        yield f"{b}.{n}.weight", shape, False
                        yield f"{b}.{n}.bias", s(c), False
                if lvl % 4 != 3:
                    yield f"{prefix}{side}.{part}.{lvl}.{resample}.conv.weight", s(c, c, 3, 3), False
                    yield f"{prefix}{side}.{part}.{lvl}.{resample}.conv.bias", s(c), False
            lvl += 1
    return gen


def clip_l_layout(prefix):
    """CLIP ViT-L/14 text encoder (SD 1.x, and SDXL's first text encoder)."""
    def gen(f):
        s = _scaler(f)
        yield f"{prefix}embeddings.token_embedding.weight", s(49408, 768), True
        yield f"{prefix}embeddings.position_embedding.weight", s(77, 768), True
        yield f"{prefix}final_layer_norm.weight", s(768), True
        yield f"{prefix}final_layer_norm.bias", s(768), True
        i = 0
        while True:
            layer = f"{prefix}encoder.layers.{i}"
            for p in ("k", "v", "q", "out"):
                yield f"{layer}.self_attn.{p}_proj.weight", s(768, 768), False
                yield f"{layer}.self_attn.{p}_proj.bias", s(768), False
            yield f"{layer}.layer_norm1.weight", s(768), False
            yield f"{layer}.layer_norm1.bias", s(768), False
            yield f"{layer}.mlp.fc1.weight", s(3072, 768), False
            yield f"{layer}.mlp.fc1.bias", s(3072), False
            yield f"{layer}.mlp.fc2.weight", s(768, 3072), False
            yield f"{layer}.mlp.fc2.bias", s(768), False
            yield f"{layer}.layer_norm2.weight", s(768), False
            yield f"{layer}.layer_norm2.bias", s(768), False
            i += 1
    return gen


def open_clip_g_layout(prefix):
    """OpenCLIP ViT-bigG text encoder (SDXL's second text encoder)."""
    def gen(f):
        s = _scaler(f)
        yield f"{prefix}token_embedding.weight", s(49408, 1280), True
        yield f"{prefix}positional_embedding", s(77, 1280), True
        yield f"{prefix}text_projection", s(1280, 1280), True
        yield f"{prefix}ln_final.weight", s(1280), True
        yield f"{prefix}ln_final.bias", s(1280), True
        i = 0
        while True:
            r = f"{prefix}transformer.resblocks.{i}"
            yield f"{r}.attn.in_proj_weight", s(3840, 1280), False
            yield f"{r}.attn.in_proj_bias", s(3840), False
            yield f"{r}.attn.out_proj.weight", s(1280, 1280), False
            yield f"{r}.attn.out_proj.bias", s(1280), False
            yield f"{r}.ln_1.weight", s(1280), False
            yield f"{r}.ln_1.bias", s(1280), False
            yield f"{r}.mlp.c_fc.weight", s(5120, 1280), False
            yield f"{r}.mlp.c_fc.bias", s(5120), False
            yield f"{r}.mlp.c_proj.weight", s(1280, 5120), False
            yield f"{r}.mlp.c_proj.bias", s(1280), False
            yield f"{r}.ln_2.weight", s(1280), False
            yield f"{r}.ln_2.bias", s(1280), False
            i += 1
    return gen


_LORA_UNET_BLOCKS = (
    [(f"down_blocks_{i}_attentions_{j}", c) for i, c in ((0, 320), (1, 640), (2, 1280)) for j in (0, 1)]
    + [("mid_block_attentions_0", 1280)]
    + [(f"up_blocks_{i}_attentions_{j}", c) for i, c in ((1, 1280), (2, 640), (3, 320)) for j in (0, 1, 2)]
)


def _lora_rank(budget):
    # A rank-32 SD 1.5 LoRA of every attention and MLP module is about 37 MB in F16.
    r = 128
    while r > 1 and r * 36_000 > budget:
        r //= 2
    return r


def lora_layout(rank, part):
    """kohya-ss LoRA modules, each a lora_down, a lora_up and a scalar alpha: part "te" gives the
    text encoder's (lora_te_text_model_encoder_layers_N_...), part "unet" the UNet's attention
    blocks (lora_unet_down_blocks_..., ...). Past the real modules the indices keep growing."""
    def gen(f):
        s = _scaler(f)

        def module(name, n_in, n_out, conv=False):
            tail = (1, 1) if conv else ()
            yield f"{name}.alpha", (), False
            yield f"{name}.lora_down.weight", s(rank, n_in) + tail, False
            yield f"{name}.lora_up.weight", s(n_out, rank) + tail, False

        if part == "te":
            i = 0
            while True:
                base = f"lora_te_text_model_encoder_layers_{i}"
                for p in ("q", "k", "v", "out"):
                    yield from module(f"{base}_self_attn_{p}_proj", 768, 768)
                yield from module(f"{base}_mlp_fc1", 768, 3072)
                yield from module(f"{base}_mlp_fc2", 3072, 768)
                i += 1
        d = 0
        while True:
            for blk, c in _LORA_UNET_BLOCKS:
                base = f"lora_unet_{blk}"
                if d == 0:
                    yield from module(f"{base}_proj_in", c, c, conv=True)
                t = f"{base}_transformer_blocks_{d}"
                for p in ("to_q", "to_k", "to_v"):
                    yield from module(f"{t}_attn1_{p}", c, c)
                yield from module(f"{t}_attn1_to_out_0", c, c)
                yield from module(f"{t}_attn2_to_q", c, c)
                yield from module(f"{t}_attn2_to_k", 768, c)
                yield from module(f"{t}_attn2_to_v", 768, c)
                yield from module(f"{t}_attn2_to_out_0", c, c)
                yield from module(f"{t}_ff_net_0_proj", c, 8 * c)
                yield from module(f"{t}_ff_net_2", 4 * c, c)
                if d == 0:
                    yield from module(f"{base}_proj_out", c, c, conv=True)
            d += 1
    return gen


def _nbytes(shape):
    n = 2  # F16
    for d in shape:
        n *= d
    return n


def _pick_shrink(layout, budget):
    """The smallest power-of-two shrink factor whose repeating tensors are small enough that the
    budget holds several blocks: 1/16 of it for big files, down to 1/2 for tiny ones."""
    parts = max(2, min(16, budget // (64 * 1024)))
    f = 1
    while f < (1 << 16):
        biggest = 0
        for i, (_, shape, once) in enumerate(layout(f)):
            if i >= 120:
                break
            if not once:
                biggest = max(biggest, _nbytes(shape))
        if biggest * parts <= budget:
            return f
        f *= 2
    return f


def _sections(kind, budget):
    """[(share of the data, layout)] for a kind."""
    if kind == "checkpoint":
        return [(0.80, unet_layout("model.diffusion_model.")),
                (0.08, vae_layout("first_stage_model.")),
                (0.12, clip_l_layout("cond_stage_model.transformer.text_model."))]
    if kind == "sdxl":
        return [(0.72, unet_layout("model.diffusion_model.", sdxl=True)),
                (0.02, vae_layout("first_stage_model.")),
                (0.04, clip_l_layout("conditioner.embedders.0.transformer.text_model.")),
                (0.22, open_clip_g_layout("conditioner.embedders.1.model."))]
    if kind == "lora":
        rank = _lora_rank(budget)
        return [(0.75, lora_layout(rank, "unet")), (0.25, lora_layout(rank, "te"))]
    if kind == "vae":
        return [(1.0, vae_layout(""))]
    if kind == "controlnet":
        return [(1.0, unet_layout("control_model.", control=True))]
    if kind == "unet":
        return [(1.0, unet_layout(""))]
    raise ValueError(kind)


def plan_tensors(kind, budget):
    """Realistic tensors for `kind` whose data adds up to at most `budget` bytes."""
    if kind == "embedding":
        # Textual inversion: one emb_params tensor, one 768-wide vector per token.
        if budget >= 768 * 2:
            return [("emb_params", (budget // (768 * 2), 768))]
        return [("emb_params", (1, max(1, budget // 2)))]
    out = []
    used = 0
    cum = 0.0
    for frac, layout in _sections(kind, budget):
        cum += frac
        room = int(budget * cum) - used
        if room <= 0:
            continue
        f = _pick_shrink(layout, room)
        # Each tensor costs ~100 header bytes: keep the header well under the data in small files.
        cap = max(2, room // 512)
        taken = misses = 0
        for name, shape, once in layout(f):
            n = _nbytes(shape)
            if n <= room:
                out.append((name, shape))
                room -= n
                used += n
                taken += 1
                if taken >= cap:
                    break
            elif not once:
                misses += 1
                if misses >= 8:
                    break
    if kind == "lora":
        # Keep whole modules only: alpha, lora_down and lora_up together.
        parts = {}
        for name, _ in out:
            module = name.split(".", 1)[0]
            parts[module] = parts.get(module, 0) + 1
        out = [(n, s) for n, s in out if parts[n.split(".", 1)[0]] == 3]
    return out


def filler(kind, nbytes):
    """Tensors that take up exactly nbytes (or a byte less), named as the kind names them."""
    if nbytes < 2 or kind == "embedding":
        return []
    if kind == "lora":
        # One rank-1 module: lora_down [1, a], lora_up [b, 1], alpha [].
        elems = nbytes // 2 - 1
        if elems < 2:
            return []
        a = elems // 2
        return [("lora_unet_conv_out.alpha", ()),
                ("lora_unet_conv_out.lora_down.weight", (1, a)),
                ("lora_unet_conv_out.lora_up.weight", (elems - a, 1))]
    name = {
        "checkpoint": "model.diffusion_model.out.0.weight",
        "sdxl": "model.diffusion_model.out.0.weight",
        "vae": "decoder.norm_out.weight",
        "controlnet": "control_model.middle_block_out.0.bias",
        "unet": "out.0.weight",
    }[kind]
    return [(name, (nbytes // 2,))]


def header_json(tensors, metadata):
    """(compact JSON header, data size) for tensors laid out back to back in this order."""
    hdr = {}
    if metadata:
        hdr["__metadata__"] = dict(metadata)
    off = 0
    for name, shape in tensors:
        n = _nbytes(shape)
        hdr[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    return json.dumps(hdr, separators=(",", ":"), ensure_ascii=False).encode("utf-8"), off


def _pad8(n):
    return (n + 7) // 8 * 8


def layout_for_size(kind, size, metadata):
    """(tensors, header_length) such that 8 + header_length + data == size, or a few bytes less
    (an odd size; an embedding, whose single tensor grows 1536 bytes at a time, pads its header)."""
    # The header grows with the tensors: plan, measure the header (with room for the filler),
    # shrink the budget until both fit, then size the filler tensor(s) to take up the rest.
    filler_hdr = len(header_json(filler(kind, 10**15), None)[0]) + 8
    room = size - 8 - filler_hdr - 64
    for _ in range(60):
        main = plan_tensors(kind, room) if room >= 2 else []
        if not main:
            raise ValueError(f"--size {size} is too small for a {kind}")
        hdr_len = _pad8(len(header_json(main, metadata)[0]) + filler_hdr)
        main_bytes = sum(_nbytes(s) for _, s in main)
        if 8 + hdr_len + main_bytes <= size:
            break
        room = min(size - 8 - hdr_len - 64, room - max(64, room // 16))
    else:
        raise ValueError(f"--size {size} is too small for a {kind}")
    rest = size - 8 - hdr_len - main_bytes
    for _ in range(64):
        fill = filler(kind, rest)
        hdr, data = header_json(main + fill, metadata)
        hlen = size - 8 - data
        hlen -= hlen % 8
        if hlen >= len(hdr):
            return main + fill, hlen
        rest -= _pad8(len(hdr) - hlen) + 8
    raise RuntimeError(f"could not lay out a {kind} of {size} bytes")


def write_safetensors(path, tensors, metadata, seed, header_len=None):
    """Writes the file (through a temporary name); returns (file size, header length)."""
    hdr, data = header_json(tensors, metadata)
    if header_len is None:
        header_len = _pad8(len(hdr))
    assert header_len >= len(hdr) and header_len % 8 == 0
    hdr = hdr + b" " * (header_len - len(hdr))
    total = 8 + header_len + data
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        head = struct.pack("<Q", header_len) + hdr
        os.pwrite(fd, head, 0)
        os.ftruncate(fd, total)
        write_data(fd, len(head), data, seed)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    return total, header_len


def default_metadata(kind, seed):
    """A little of the __metadata__ real files carry."""
    rng = random.Random(f"meta:{seed}:{kind}")
    if kind == "lora":
        return {"ss_network_module": "networks.lora", "ss_network_dim": "32", "ss_network_alpha": "16",
                "ss_base_model_version": "sd_v1", "ss_output_name": f"lora_{rng.randrange(10**6)}",
                "modelspec.architecture": "stable-diffusion-v1/lora", "modelspec.sai_model_spec": "1.0.0"}
    if kind == "sdxl":
        return {"modelspec.architecture": "stable-diffusion-xl-v1-base", "modelspec.sai_model_spec": "1.0.0",
                "modelspec.title": f"sdxl-{rng.randrange(10**6)}"}
    if kind == "checkpoint":
        return {"format": "pt"}
    return {}


def make_safetensors(path, kind, size=None, seed=None, metadata=None, default_meta=True):
    if seed is None:
        seed = int.from_bytes(os.urandom(8), "little")
    meta = default_metadata(kind, seed) if default_meta else {}
    meta.update(metadata or {})
    size = DEFAULT_SIZES[kind] if size is None else size
    tensors, hlen = layout_for_size(kind, size, meta)
    total, hlen = write_safetensors(path, tensors, meta, seed, hlen)
    return {"path": str(path), "kind": kind, "bytes": total, "tensors": len(tensors),
            "header_bytes": hlen, "seed": seed}


# --------------------------------------------------------------------------------------------
# Other files found next to models
# --------------------------------------------------------------------------------------------

def write_torch_zip(path, seed, size):
    """A torch.save()-style zip (what .pth/.bin/.pt files are since PyTorch 1.6): stored entries
    <stem>/data.pkl, <stem>/data/0 (the tensor storage), <stem>/version. Deterministic."""
    stem = os.path.basename(path).split(".")[0]
    pkl = b"\x80\x02}q\x00(X\x0d\x00\x00\x00params.weightq\x01X\x01\x00\x00\x000q\x02u."
    body = max(2, size - 512)
    body -= body % 2
    data = data_chunk(seed, 0, min(body, CHUNK))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for name, content in ((f"{stem}/data.pkl", pkl), (f"{stem}/data/0", data),
                              (f"{stem}/version", b"3\n")):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            z.writestr(info, content)
    return os.path.getsize(path)


def png_bytes(seed, w=8, h=8):
    """A tiny valid PNG of one colour."""
    rng = random.Random(f"png:{seed}")
    rgb = bytes(rng.randrange(256) for _ in range(3))
    raw = b"".join(b"\x00" + rgb * w for _ in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(4 * MiB), b""):
            h.update(block)
    return h.hexdigest()


def civitai_info(path, kind, seed):
    """The JSON the Civitai Helper extension writes next to a model (NAME.civitai.info)."""
    rng = random.Random(f"civitai:{seed}")
    sha = sha256_file(path).upper()
    base = {"sdxl": "SDXL 1.0"}.get(kind, "SD 1.5")
    mtype = {"checkpoint": "Checkpoint", "sdxl": "Checkpoint", "lora": "LORA", "embedding": "TextualInversion",
             "controlnet": "Controlnet", "vae": "VAE", "unet": "Checkpoint"}.get(kind, "Other")
    name = os.path.basename(path)
    return {
        "id": rng.randrange(10**5, 10**6),
        "modelId": rng.randrange(10**4, 10**5),
        "name": "v1.0",
        "baseModel": base,
        "trainedWords": [],
        "model": {"name": name.rsplit(".", 1)[0], "type": mtype, "nsfw": False},
        "files": [{"name": name, "sizeKB": os.path.getsize(path) / 1024, "type": "Model",
                   "metadata": {"fp": "fp16", "size": "pruned", "format": "SafeTensor"},
                   "hashes": {"AutoV2": sha[:10], "SHA256": sha}, "primary": True}],
        "images": [{"url": f"https://image.example/{rng.randrange(10**8)}.jpeg", "width": 512, "height": 768}],
    }


# --------------------------------------------------------------------------------------------
# Tool installs
# --------------------------------------------------------------------------------------------

# Models a seed defines: kind and size (small, medium). Content depends only on (seed, model id,
# scale), so installs made with the same seed and scale share byte-identical files.
MODELS = {
    "sd15": ("checkpoint", (2 * MiB, 48 * MiB)),
    "dreamshaper": ("checkpoint", (2 * MiB + 4096, 48 * MiB + 4096)),
    "sdxl_base": ("sdxl", (3 * MiB, 64 * MiB)),
    "juggernaut": ("sdxl", (3 * MiB + 8192, 64 * MiB + 8192)),
    "vae_mse": ("vae", (512 * 1024, 16 * MiB)),
    "sdxl_vae": ("vae", (512 * 1024 + 2048, 16 * MiB + 2048)),
    "lora_detail": ("lora", (192 * 1024, 8 * MiB)),
    "lora_offset": ("lora", (160 * 1024, 6 * MiB)),
    "lora_lowra": ("lora", (128 * 1024, 4 * MiB)),
    "lora_tweaker": ("lora", (200 * 1024, 8 * MiB)),
    "lora_film": ("lora", (176 * 1024, 6 * MiB)),
    "emb_easyneg": ("embedding", (24 * 1024, 24 * 1024)),
    "emb_badhands": ("embedding", (12 * 1024, 12 * 1024)),
    "cn_canny": ("controlnet", (1 * MiB, 24 * MiB)),
    "unet_lightning": ("unet", (1536 * 1024, 32 * MiB)),
    "esrgan": ("torchzip", (64 * 1024, 4 * MiB)),
    "fooocus_upscaler": ("torchzip", (48 * 1024, 2 * MiB)),
    "fooocus_vae_approx": ("torchzip", (16 * 1024, 16 * 1024)),
    "fooocus_expansion": ("torchzip", (96 * 1024, 4 * MiB)),
}

# Per tool: placeholder files, empty folders, and models as (id, path under the root, sidecars).
# "id@tool" is content of that tool's own (not shared); "id+meta" has the same tensors and data as
# "id" with edited __metadata__ (same AutoV3, another SHA-256).
TOOLS = {
    "a1111": {
        "stubs": {"webui.py": "# AUTOMATIC1111 stable-diffusion-webui (stub)\n",
                  "launch.py": "# stub\n", "modules/__init__.py": "",
                  "webui-user.sh": "#!/bin/bash\nexport COMMANDLINE_ARGS=\"\"\n",
                  "models/Stable-diffusion/Put Stable Diffusion checkpoints here.txt": "",
                  "models/VAE/Put VAE here.txt": "",
                  "models/Lora/.keep": ""},
        "dirs": ["models/VAE-approx", "models/hypernetworks", "models/LyCORIS", "models/ControlNet",
                 "models/ESRGAN", "extensions", "outputs"],
        "files": [
            ("sd15", "models/Stable-diffusion/v1-5-pruned-emaonly.safetensors", ("preview", "civitai")),
            ("dreamshaper", "models/Stable-diffusion/dreamshaper_8.safetensors", ("preview", "civitai")),
            ("sdxl_base", "models/Stable-diffusion/SDXL/sd_xl_base_1.0.safetensors", ()),
            ("vae_mse", "models/VAE/vae-ft-mse-840000-ema-pruned.safetensors", ()),
            ("lora_detail", "models/Lora/add_detail.safetensors", ("preview", "civitai")),
            ("lora_lowra@a1111", "models/Lora/LowRA.safetensors", ("preview",)),
            ("cn_canny", "models/ControlNet/control_v11p_sd15_canny.safetensors", ()),
            ("esrgan", "models/ESRGAN/4x-UltraSharp.pth", ()),
            ("emb_easyneg", "embeddings/EasyNegative.safetensors", ("preview",)),
            ("emb_badhands@a1111", "embeddings/bad-hands-5.safetensors", ()),
        ],
    },
    "comfyui": {
        "stubs": {"main.py": "# ComfyUI (stub)\n",
                  "folder_paths.py": "# stub\n", "comfy/__init__.py": "",
                  "extra_model_paths.yaml.example": "#comfyui:\n#    base_path: path/to/comfyui/\n",
                  "models/checkpoints/put_checkpoints_here": "",
                  "models/loras/put_loras_here": "",
                  "models/vae/put_vae_here": "",
                  "models/embeddings/put_embeddings_or_textual_inversion_concepts_here": "",
                  "models/controlnet/put_controlnets_and_t2i_here": "",
                  "models/upscale_models/put_esrgan_and_other_upscale_models_here": "",
                  "models/diffusion_models/put_diffusion_model_files_here": "",
                  "models/configs/v1-inference.yaml":
                      "model:\n  base_learning_rate: 1.0e-04\n"
                      "  target: ldm.models.diffusion.ddpm.LatentDiffusion\n"},
        "dirs": ["models/clip", "models/clip_vision", "models/text_encoders", "models/vae_approx",
                 "models/hypernetworks", "models/style_models", "models/gligen", "models/unet",
                 "input", "output", "custom_nodes"],
        "files": [
            ("sd15", "models/checkpoints/v1-5-pruned-emaonly.safetensors", ()),
            ("sdxl_base", "models/checkpoints/SDXL/sd_xl_base_1.0.safetensors", ()),
            ("juggernaut", "models/checkpoints/SDXL/juggernautXL_v9Rdphoto2Lightning.safetensors", ()),
            ("vae_mse", "models/vae/vae-ft-mse-840000-ema-pruned.safetensors", ()),
            ("sdxl_vae", "models/vae/sdxl_vae.safetensors", ()),
            ("lora_detail", "models/loras/add_detail.safetensors", ("preview", "civitai")),
            ("lora_detail", "models/loras/sd15/more_details.safetensors", ()),  # same file, renamed
            ("lora_detail+meta", "models/loras/sd15/add_detail_retagged.safetensors", ()),
            ("lora_tweaker@comfyui", "models/loras/detail-tweaker-xl.safetensors", ()),
            ("lora_offset", "models/loras/sd_xl_offset_example-lora_1.0.safetensors", ()),
            ("emb_easyneg", "models/embeddings/EasyNegative.safetensors", ()),
            ("cn_canny", "models/controlnet/control_v11p_sd15_canny.safetensors", ()),
            ("esrgan", "models/upscale_models/4x-UltraSharp.pth", ()),
            ("unet_lightning@comfyui", "models/diffusion_models/sdxl_lightning_4step_unet.safetensors", ()),
        ],
    },
    "fooocus": {
        "stubs": {"entry_with_update.py": "# Fooocus (stub)\n",
                  "fooocus_version.py": "version = '2.5.5'\n",
                  "models/checkpoints/put_checkpoints_here": "",
                  "models/loras/put_loras_here": ""},
        "dirs": ["models/controlnet", "models/clip_vision", "models/inpaint", "outputs"],
        "files": [
            ("juggernaut", "models/checkpoints/juggernautXL_v9Rdphoto2Lightning.safetensors", ()),
            ("sdxl_base", "models/checkpoints/sd_xl_base_1.0.safetensors", ()),
            ("sdxl_vae", "models/vae/sdxl_vae.safetensors", ()),
            ("lora_offset", "models/loras/sd_xl_offset_example-lora_1.0.safetensors", ()),
            ("lora_film@fooocus", "models/loras/SDXL_FILM_PHOTOGRAPHY_STYLE_V1.safetensors", ()),
            ("emb_easyneg", "models/embeddings/EasyNegative.safetensors", ()),
            ("fooocus_upscaler@fooocus", "models/upscale_models/fooocus_upscaler_s409985e5.bin", ()),
            ("fooocus_vae_approx@fooocus", "models/vae_approx/xlvaeapp.pth", ()),
            ("fooocus_expansion@fooocus", "models/prompt_expansion/fooocus_expansion/pytorch_model.bin", ()),
        ],
    },
}


def make_install(root, tool, seed, scale):
    spec = TOOLS[tool]
    scale_i = {"small": 0, "medium": 1}[scale]
    root = os.path.abspath(root)
    os.makedirs(root, exist_ok=True)
    files = models = total = 0
    for rel, text in spec["stubs"].items():
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(text)
        files += 1
    for d in spec["dirs"]:
        os.makedirs(os.path.join(root, d), exist_ok=True)
    if tool == "fooocus":
        cfg = {"path_checkpoints": [os.path.join(root, "models/checkpoints")],
               "path_loras": [os.path.join(root, "models/loras")],
               "path_embeddings": os.path.join(root, "models/embeddings"),
               "path_vae": os.path.join(root, "models/vae"),
               "path_vae_approx": os.path.join(root, "models/vae_approx"),
               "path_upscale_models": os.path.join(root, "models/upscale_models"),
               "path_fooocus_expansion": os.path.join(root, "models/prompt_expansion/fooocus_expansion")}
        with open(os.path.join(root, "config.txt"), "w") as f:
            json.dump(cfg, f, indent=4)
        files += 1
    for ident, rel, sidecars in spec["files"]:
        ident, _, owner = ident.partition("@")
        ident, _, variant = ident.partition("+")
        kind, sizes = MODELS[ident]
        mseed = derive_seed(seed, ident, owner, scale)
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if kind == "torchzip":
            size = write_torch_zip(path, mseed, sizes[scale_i])
        else:
            meta = default_metadata(kind, mseed)
            tensors, hlen = layout_for_size(kind, sizes[scale_i], meta)
            if variant == "meta":
                # Same tensors and data (so the same AutoV3), edited metadata: another SHA-256.
                meta = dict(meta, **{"ss_tag_frequency": '{"detail": {"detailed": 12}}',
                                     "modelspec.title": "add_detail (retagged)"})
                hlen = None
            size, _ = write_safetensors(path, tensors, meta, mseed, hlen)
        files += 1
        models += 1
        total += size
        stem = os.path.splitext(path)[0]
        if "preview" in sidecars:
            with open(stem + ".preview.png", "wb") as f:
                f.write(png_bytes(mseed))
            files += 1
        if "civitai" in sidecars:
            with open(stem + ".civitai.info", "w") as f:
                json.dump(civitai_info(path, kind, mseed), f, indent=4)
            files += 1
    return {"tool": tool, "root": root, "seed": seed, "scale": scale, "files": files,
            "model_files": models, "model_bytes": total}


# --------------------------------------------------------------------------------------------
# A folder full of duplicates
# --------------------------------------------------------------------------------------------

_ADJ = ("epic", "dream", "real", "pixel", "neon", "soft", "dark", "anime", "photo", "retro", "cyber",
        "vivid", "mystic", "clean", "ultra", "hyper", "lucid", "golden", "silent", "wild")
_NOUN = ("Vision", "Shaper", "Realism", "Style", "Detail", "Portrait", "Landscape", "Fantasy", "Mix",
         "Diffusion", "Light", "Ink", "Painter", "World", "Skin", "Hands", "Noise", "Flow")
_KIND_DIRS = {
    "checkpoint": ("checkpoints", "checkpoints/sd15"),
    "sdxl": ("checkpoints/sdxl", "sdxl/finetunes"),
    "lora": ("loras", "loras/styles", "loras/characters"),
    "vae": ("vae",),
    "embedding": ("embeddings",),
    "controlnet": ("controlnet",),
    "unet": ("unet", "diffusion_models"),
}
_ANY_DIRS = ("downloads", "backup/2023", "old", "to-sort")


def _kind_for_size(rng, size):
    if size <= 64 * 1024:
        return "embedding"
    if size <= 2 * MiB:
        return rng.choice(("lora", "lora", "vae"))
    if size <= 256 * MiB:
        return rng.choice(("lora", "lora", "lora", "vae", "controlnet", "unet", "checkpoint"))
    return rng.choice(("checkpoint", "checkpoint", "sdxl", "controlnet", "unet"))


def make_dupes_folder(out, nfiles, total_bytes, dup_ratio, seed):
    if nfiles < 1:
        raise ValueError("--files must be at least 1")
    if not 0 <= dup_ratio < 1:
        raise ValueError("--dup-ratio must be in [0, 1)")
    if seed is None:
        seed = int.from_bytes(os.urandom(8), "little")
    rng = random.Random(f"dupes:{seed}")
    ndup = min(nfiles - 1, round(nfiles * dup_ratio))
    nuniq = nfiles - ndup
    sources = [rng.randrange(nuniq) for _ in range(ndup)]
    copies = [1] * nuniq
    for s in sources:
        copies[s] += 1
    # Sizes vary 1:7; scaled so that all files, copies included, add up to total_bytes.
    weights = [rng.uniform(0.25, 1.75) for _ in range(nuniq)]
    unit = total_bytes / sum(w * c for w, c in zip(weights, copies))
    sizes = [max(4096, int(w * unit)) for w in weights]
    os.makedirs(out, exist_ok=True)
    used = set()

    def fresh_name(stem, ext, kind, avoid_dir=None):
        for _ in range(1000):
            d = rng.choice(_KIND_DIRS[kind] + _ANY_DIRS)
            if d == avoid_dir:
                continue
            rel = os.path.join(d, stem + ext)
            if rel not in used:
                used.add(rel)
                return rel
            stem += f"_{rng.randrange(100)}"
        raise RuntimeError("could not find a free name")

    paths = []
    kinds = []
    unique_bytes = 0
    for i, size in enumerate(sizes):
        kind = _kind_for_size(rng, size)
        stem = f"{rng.choice(_ADJ)}{rng.choice(_NOUN)}_v{rng.randrange(1, 12)}"
        rel = fresh_name(stem, ".safetensors", kind)
        p = os.path.join(out, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        info = make_safetensors(p, kind, size, derive_seed(seed, "dupes", i))
        unique_bytes += info["bytes"]
        paths.append(rel)
        kinds.append(kind)
    total = unique_bytes
    for s in sources:
        src = paths[s]
        stem = os.path.splitext(os.path.basename(src))[0]
        stem = rng.choice((f"{stem} (1)", f"{stem}_copy", f"{stem}-{rng.randrange(2, 9)}", f"Copy of {stem}", stem))
        rel = fresh_name(stem, ".safetensors", kinds[s], avoid_dir=os.path.dirname(src))
        p = os.path.join(out, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        shutil.copyfile(os.path.join(out, src), p)
        total += os.path.getsize(p)
    return {"path": str(out), "files": nfiles, "unique_files": nuniq, "bytes": total,
            "unique_bytes": unique_bytes, "seed": seed}


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def parse_size(text):
    t = text.strip().lower()
    for suffix in ("ib", "b"):
        if t.endswith(suffix) and len(t) > len(suffix):
            t = t[:-len(suffix)]
            break
    mult = 1
    if t and t[-1] in "kmgt":
        mult = 1024 ** ("kmgt".index(t[-1]) + 1)
        t = t[:-1]
    try:
        v = float(t) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (bytes, or with K, M, G: 16M, 2G, ...)")
    if v < 0:
        raise argparse.ArgumentTypeError(f"negative size: {text!r}")
    return int(v)


def parse_kv(text):
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--metadata wants KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    return k, v


def main(argv=None):
    ap = argparse.ArgumentParser(prog="make_models.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("safetensors", help="write one safetensors model file")
    p.add_argument("out")
    p.add_argument("--kind", required=True, choices=KINDS)
    p.add_argument("--size", type=parse_size, help="file size in bytes (suffixes K, M, G accepted)")
    p.add_argument("--seed", type=int)
    p.add_argument("--metadata", type=parse_kv, nargs="+", action="extend", default=[], metavar="K=V",
                   help="__metadata__ entries (added to a few kind-typical defaults)")
    p.add_argument("--no-default-metadata", action="store_true",
                   help="only the --metadata entries (none given: no __metadata__ at all)")

    p = sub.add_parser("install", help="a fake tool install with model folders, models and sidecars")
    p.add_argument("root")
    p.add_argument("--tool", required=True, choices=sorted(TOOLS))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--scale", choices=("small", "medium"), default="small")

    p = sub.add_parser("dupes-folder", help="a folder of safetensors files, some byte-identical copies")
    p.add_argument("out")
    p.add_argument("--files", type=int, required=True)
    p.add_argument("--total-bytes", type=parse_size, required=True)
    p.add_argument("--dup-ratio", type=float, required=True)
    p.add_argument("--seed", type=int)

    a = ap.parse_args(argv)
    try:
        if a.cmd == "safetensors":
            res = make_safetensors(a.out, a.kind, a.size, a.seed, dict(a.metadata),
                                   default_meta=not a.no_default_metadata)
        elif a.cmd == "install":
            res = make_install(a.root, a.tool, a.seed, a.scale)
        else:
            res = make_dupes_folder(a.out, a.files, a.total_bytes, a.dup_ratio, a.seed)
    except (ValueError, OSError) as e:
        print(f"make_models.py: {e}", file=sys.stderr)
        return 1
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
