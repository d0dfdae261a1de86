"""A plain JAX Phi-3 (the way a JAX user writes it), used as the reference side of bench.py.

Projection weights are stored [in, out] and applied as x @ W (the HF [out, in] tensors are
transposed once when loading). The KV cache is static: one K and one V array per layer, each
[B, n_kv_heads, max_seq, head_dim], written at the given positions. Prefill attends causally over
its own S tokens (and writes them into the cache at positions 0..S-1); decode writes one
position per row (dynamic_update_slice per row, or a scatter with cache_write="scatter") and
attends over the whole cache with a position mask.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def load_params(hf, cfg, dtype):
    """hf: dict name -> numpy array in the HF Phi-3 layout. Returns a pytree of device arrays."""
    def w(name):  # [out, in] -> [in, out]
        return jnp.asarray(np.ascontiguousarray(hf[name].T), dtype=dtype)

    def v(name):
        return jnp.asarray(hf[name], dtype=dtype)

    layers = []
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        layers.append({
            "ln1": v(p + "input_layernorm.weight"),
            "qkv": w(p + "self_attn.qkv_proj.weight"),        # [H, (nh + 2 nkv) hd]
            "o": w(p + "self_attn.o_proj.weight"),            # [nh hd, H]
            "ln2": v(p + "post_attention_layernorm.weight"),
            "gate_up": w(p + "mlp.gate_up_proj.weight"),      # [H, 2 I]
            "down": w(p + "mlp.down_proj.weight"),            # [I, H]
        })
    return {
        "embed": v("model.embed_tokens.weight"),              # [V, H] (a gather table)
        "layers": layers,
        "norm": v("model.norm.weight"),
        "lm_head": w("lm_head.weight"),                       # [H, V]
    }


def rms_norm(x, weight, eps):
    # HF Phi3RMSNorm: statistics in f32, cast back to the input dtype before the weight multiply.
    xf = x.astype(jnp.float32)
    xf = xf * lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return weight * xf.astype(x.dtype)


def rope(x, positions, theta):
    """x: [B, S, heads, hd]; positions: [B, S]. Default RoPE, NeoX half rotation."""
    hd = x.shape[-1]
    inv_freq = 1.0 / (theta ** (jnp.arange(0, hd, 2, dtype=jnp.float32) / hd))
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq           # [B, S, hd/2]
    emb = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]          # [B, S, 1, hd]
    cos, sin = jnp.cos(emb).astype(x.dtype), jnp.sin(emb).astype(x.dtype)
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return x * cos + jnp.concatenate([-x2, x1], axis=-1) * sin


def attention(q, k, v, mask):
    """q: [B, nh, Sq, hd]; k, v: [B, nkv, Sk, hd]; mask: bool [B, 1, Sq, Sk]."""
    nh, nkv = q.shape[1], k.shape[1]
    if nh != nkv:  # GQA: repeat the KV heads
        k = jnp.repeat(k, nh // nkv, axis=1)
        v = jnp.repeat(v, nh // nkv, axis=1)
    scores = jnp.einsum("bhqd,bhkd->bhqk", q, k).astype(jnp.float32) / math.sqrt(q.shape[-1])
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
    return jnp.einsum("bhqk,bhkd->bhqd", probs, v)


def write_cache(cache, new, positions, cache_write):
    """cache: [B, nkv, T, hd]; new: [B, nkv, S, hd]; positions: [B, S] (row b starts at positions[b, 0])."""
    if cache_write == "scatter":
        b, s = new.shape[0], new.shape[2]
        rows = jnp.arange(b)[:, None]
        pos = positions[:, :s]
        return cache.at[rows, :, pos].set(jnp.swapaxes(new, 1, 2))  # [B, S, nkv, hd] at (b, pos)
    zero = jnp.int32(0)
    for r in range(new.shape[0]):
        cache = lax.dynamic_update_slice(cache, new[r:r + 1], (jnp.int32(r), zero, positions[r, 0], zero))
    return cache


def forward(params, caches, input_ids, positions, *, cfg, decode, cache_write="dus"):
    """Returns (logits f32 [B, V] at the last position, updated caches)."""
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hidden = cfg["hidden_size"]
    hd = hidden // nh
    inter = cfg["intermediate_size"]
    eps, theta = cfg["rms_norm_eps"], cfg.get("rope_theta", 10000.0)
    b, s = input_ids.shape

    x = params["embed"][input_ids]                                          # [B, S, H]
    if decode:  # one token per row, attending the whole cache up to its position
        t = caches[0][0].shape[2]
        mask = (jnp.arange(t)[None, :] <= positions[:, -1:])[:, None, None, :]   # [B, 1, 1, T]
    else:       # prefill: causal over its own tokens
        mask = (positions[:, None, :] <= positions[:, :, None])[:, None]         # [B, 1, S, S]

    new_caches = []
    for layer, (kc, vc) in zip(params["layers"], caches):
        h = rms_norm(x, layer["ln1"], eps)
        qkv = h @ layer["qkv"]
        q = qkv[..., : nh * hd].reshape(b, s, nh, hd)
        k = qkv[..., nh * hd: (nh + nkv) * hd].reshape(b, s, nkv, hd)
        v = qkv[..., (nh + nkv) * hd:].reshape(b, s, nkv, hd)
        q, k = rope(q, positions, theta), rope(k, positions, theta)
        q, k, v = (jnp.swapaxes(a, 1, 2) for a in (q, k, v))                  # [B, heads, S, hd]
        kc = write_cache(kc, k, positions, cache_write)
        vc = write_cache(vc, v, positions, cache_write)
        new_caches.append((kc, vc))
        if decode:
            o = attention(q, kc, vc, mask)
        else:
            o = attention(q, k, v, mask)
        o = jnp.swapaxes(o, 1, 2).reshape(b, s, nh * hd)
        x = x + o @ layer["o"]

        h = rms_norm(x, layer["ln2"], eps)
        gu = h @ layer["gate_up"]
        x = x + (jax.nn.silu(gu[..., :inter]) * gu[..., inter:]) @ layer["down"]

    x = rms_norm(x[:, -1], params["norm"], eps)                             # last position only
    logits = (x @ params["lm_head"]).astype(jnp.float32)
    return logits, new_caches


def init_caches(cfg, batch, max_seq, dtype, device=None):
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg["hidden_size"] // nh
    shape = (batch, nkv, max_seq, hd)
    return [(jnp.zeros(shape, dtype, device=device), jnp.zeros(shape, dtype, device=device))
            for _ in range(cfg["num_hidden_layers"])]


def make_step(cfg, decode, cache_write="dus", compiler_options=None):
    """jit(forward) with the caches (argument 1) donated, so the cache outputs reuse the inputs' buffers.
    compiler_options: XLA option overrides by flag name (jax.jit's), e.g. a set's xla_options."""
    fn = functools.partial(forward, cfg=cfg, decode=decode, cache_write=cache_write)
    return jax.jit(fn, donate_argnums=(1,), compiler_options=compiler_options or None)
