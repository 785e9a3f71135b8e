#!/usr/bin/env python3
"""Golden reference data for SmolLM2-135M-Instruct (GGUF Q4_1).

An independent reference written only with numpy and the `gguf` package
(plus `regex` for the pre-tokeniser); it shares no code with the engine.

* Tensors and metadata are read with `gguf.GGUFReader` and dequantised to
  float32 with `gguf.quants.dequantize` (Q4_1 linears, Q8_0 embeddings).
* Tokenisation is a small pure-Python GPT-2 byte-level BPE built from
  `tokenizer.ggml.tokens` / `tokenizer.ggml.merges`, with the "smollm"
  pre-tokeniser (every digit its own piece, then the GPT-2 regex) and the
  control tokens (token_type 3) matched as whole strings first. No BOS.
* The forward pass is a plain Llama forward over the whole sequence, computed
  in float64 (weights are dequantised to float32, then widened once). RoPE keeps
  the GGUF row order of attn_q / attn_k (llama.cpp's converter permuted them)
  and rotates adjacent pairs (2i, 2i+1) by pos * base^(-2i/head_dim).
  The output layer is the tied token embedding (token_embd).

For each prompt, 8 tokens are generated greedily; for each step (step 0 =
logits at the last prompt position) the top-20 (id, logit) pairs, the argmax
and the max |logit| over the vocabulary are written to JSON.

Usage: make_golden.py MODEL.gguf [--out engine/tests/golden/smollm2_135m_q4_1.json]
"""
import argparse
import hashlib
import json
import os
import time
from importlib.metadata import version

import gguf
import numpy as np
import regex

PROMPTS = [
    "The capital of France is",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "In 1969, Apollo 11 landed on the Moon. Neil Armstrong said: \"That's one small step for man, "
    "one giant leap for mankind.\" The mission lasted 8 days, and",
]
N_STEPS, TOP_K = 8, 20
GPT2_RE = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


def field(reader, key):
    return reader.fields[key].contents()


# ---------------------------------------------------------------- tokenizer
def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


class Tokenizer:
    def __init__(self, reader):
        self.tokens = field(reader, "tokenizer.ggml.tokens")
        types = field(reader, "tokenizer.ggml.token_type")
        self.vocab = {t: i for i, t in enumerate(self.tokens)}
        self.ranks = {tuple(m.split(" ")): r for r, m in enumerate(field(reader, "tokenizer.ggml.merges"))}
        self.specials = sorted((t for t, ty in zip(self.tokens, types) if ty == 3), key=len, reverse=True)
        self.b2u = bytes_to_unicode()
        self.u2b = {u: b for b, u in self.b2u.items()}

    def bpe(self, word):
        parts = list(word)
        while len(parts) > 1:
            pairs = [(self.ranks.get(p, 1 << 30), i) for i, p in enumerate(zip(parts, parts[1:]))]
            rank, i = min(pairs)
            if rank == 1 << 30:
                break
            a, b = parts[i], parts[i + 1]
            out, j = [], 0
            while j < len(parts):  # merge every occurrence of the best pair, left to right
                if j + 1 < len(parts) and parts[j] == a and parts[j + 1] == b:
                    out.append(a + b)
                    j += 2
                else:
                    out.append(parts[j])
                    j += 1
            parts = out
        return [self.vocab[p] for p in parts]

    def encode_plain(self, text):
        ids = []
        for piece in regex.split(r"(\p{N})", text):  # smollm: each digit its own piece
            for word in GPT2_RE.findall(piece):
                ids += self.bpe("".join(self.b2u[b] for b in word.encode("utf-8")))
        return ids

    def encode(self, text):
        ids, start, i = [], 0, 0
        while i < len(text):
            sp = next((s for s in self.specials if text.startswith(s, i)), None)
            if sp is None:
                i += 1
                continue
            ids += self.encode_plain(text[start:i]) + [self.vocab[sp]]
            i = start = i + len(sp)
        return ids + self.encode_plain(text[start:])

    def decode(self, ids):
        return bytes(self.u2b[c] for i in ids for c in self.tokens[i]).decode("utf-8", errors="replace")


# ---------------------------------------------------------------- model
class Model:
    def __init__(self, reader):
        def get(key):
            return field(reader, "llama." + key)

        self.n_layer = int(get("block_count"))
        self.n_head = int(get("attention.head_count"))
        self.n_kv = int(get("attention.head_count_kv"))
        self.eps = float(get("attention.layer_norm_rms_epsilon"))
        self.base = float(get("rope.freq_base"))
        self.w = {}
        for t in reader.tensors:
            w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
            # GGUF dims are innermost-first: shape (rows, cols) = reversed(t.shape)
            self.w[t.name] = w.reshape([int(d) for d in reversed(t.shape)]).astype(np.float64)
        self.dim = self.w["token_embd.weight"].shape[1]
        self.hd = self.dim // self.n_head

    def rms(self, x, name):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * self.w[name]

    def lin(self, x, name):  # y = x @ W^T in float64
        return x @ self.w[name].T

    def rope(self, x):  # x: (T, heads, hd); rotate adjacent pairs (2i, 2i+1)
        T, hd = x.shape[0], self.hd
        inv = self.base ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
        ang = np.arange(T, dtype=np.float64)[:, None] * inv[None, :]
        cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = x0 * cos - x1 * sin
        out[..., 1::2] = x0 * sin + x1 * cos
        return out

    def logits(self, ids):
        T, hd, nh, nkv = len(ids), self.hd, self.n_head, self.n_kv
        emb = self.w["token_embd.weight"]
        x = emb[np.array(ids)]
        mask = np.triu(np.full((T, T), -np.inf), k=1)
        for l in range(self.n_layer):
            p = f"blk.{l}."
            h = self.rms(x, p + "attn_norm.weight")
            q = self.rope(self.lin(h, p + "attn_q.weight").reshape(T, nh, hd))
            k = self.rope(self.lin(h, p + "attn_k.weight").reshape(T, nkv, hd))
            v = self.lin(h, p + "attn_v.weight").reshape(T, nkv, hd)
            k = np.repeat(k, nh // nkv, axis=1)  # GQA: query head j uses kv head j // (nh/nkv)
            v = np.repeat(v, nh // nkv, axis=1)
            s = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd) + mask
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            s /= s.sum(axis=-1, keepdims=True)
            att = np.einsum("hqk,khd->qhd", s, v).reshape(T, nh * hd)
            x = x + self.lin(att, p + "attn_output.weight")
            h = self.rms(x, p + "ffn_norm.weight")
            g = self.lin(h, p + "ffn_gate.weight")
            x = x + self.lin(g / (1.0 + np.exp(-g)) * self.lin(h, p + "ffn_up.weight"), p + "ffn_down.weight")
        x = self.rms(x[-1:], "output_norm.weight")
        out = self.w["output.weight"] if "output.weight" in self.w else emb  # tied embeddings
        return (x @ out.T)[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("gguf")
    ap.add_argument("--out", default=os.path.join("engine", "tests", "golden", "smollm2_135m_q4_1.json"))
    args = ap.parse_args()
    t0 = time.time()
    with open(args.gguf, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    reader = gguf.GGUFReader(args.gguf)
    tok, model = Tokenizer(reader), Model(reader)
    prompts = []
    for text in PROMPTS:
        ids = tok.encode(text)
        seq, steps = list(ids), []
        for _ in range(N_STEPS):
            lg = model.logits(seq)
            top = np.argsort(-lg, kind="stable")[:TOP_K]
            steps.append({"token": int(top[0]), "max_abs_logit": float(np.abs(lg).max()),
                          "top": [[int(i), float(lg[i])] for i in top]})
            seq.append(int(top[0]))
        gen = [s["token"] for s in steps]
        print(f"{ids}\n  -> {gen} {tok.decode(gen)!r} (first logit {steps[0]['top'][0][1]:.6f})")
        prompts.append({"text": text, "prompt_ids": ids, "generated_text": tok.decode(gen), "steps": steps})
    doc = {
        "model": {"file": os.path.basename(args.gguf), "sha256": sha},
        "generator": f"make_golden.py (numpy {np.__version__}, gguf {version('gguf')})",
        "precision": "weights dequantised to float32 by gguf.quants.dequantize; forward pass in float64",
        "rope": "adjacent pairs (2i, 2i+1) on GGUF row order of attn_q/attn_k (no un-permute)",
        "prompts": prompts,
    }
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"wrote {args.out} in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
