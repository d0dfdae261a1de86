"""Our CPU-preset graphs vs a plain JAX Phi-3, on the same XLA CPU PJRT plugin, in one jaxlib.

  bench.py make-model --out DIR            random HF Phi-3 folder (config.json + model.safetensors, f32)
  bench.py run --model DIR --set DTYPE:B=GRAPHS_DIR:WEIGHTS_FILE ... --plugin SO --out JSON

Both sides are compiled by the same client (the plugin, registered with JAX as platform "xcpu";
JAX's built-in CPU backend is never initialised): ours from the HloModuleProto files that
build-graphs wrote (converted to StableHLO with jaxlib's hlo_to_stablehlo, compiled with
Client.compile_and_load and run with LoadedExecutable.execute_sharded), JAX's through jax.jit.
Before any timing the logits of both sides are compared; after it, each case runs in alternating
rounds (ours, JAX, ours, JAX, ...).
"""

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import struct
import subprocess
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "xcpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
F32_TOL = 1e-3    # max |ours - JAX| / max |logit|, f32: the brief's bound, fails the run
BF16_TOL = 5e-2   # bf16: a sanity bound only (different rounding points), fails the run too


# ----------------------------------------------------------------------------------------------
# The random model


def make_model(out, seed=0):
    from safetensors.numpy import save_file
    with open(os.path.join(HERE, "config.json")) as f:
        cfg = json.load(f)
    h, inter, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = h // nh
    rng = np.random.default_rng(seed)

    def rand(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02))

    t = {"model.embed_tokens.weight": rand(v, h)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = np.ones(h, np.float32)
        t[p + "self_attn.qkv_proj.weight"] = rand((nh + 2 * nkv) * hd, h)
        t[p + "self_attn.o_proj.weight"] = rand(h, nh * hd)
        t[p + "post_attention_layernorm.weight"] = np.ones(h, np.float32)
        t[p + "mlp.gate_up_proj.weight"] = rand(2 * inter, h)
        t[p + "mlp.down_proj.weight"] = rand(h, inter)
    t["model.norm.weight"] = np.ones(h, np.float32)
    t["lm_head.weight"] = rand(v, h)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    save_file(t, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    print(f"bench-jax: wrote {out} ({sum(a.nbytes for a in t.values()) / 1e6:.0f} MB, seed {seed})",
          file=sys.stderr)


def read_safetensors(path):
    """name -> numpy array (memory-mapped); bf16 as ml_dtypes.bfloat16."""
    import ml_dtypes
    dtypes = {"F32": np.float32, "BF16": ml_dtypes.bfloat16, "F16": np.float16,
              "I32": np.int32, "I64": np.int64}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        out[name] = data[a:b].view(dtypes[info["dtype"]]).reshape(info["shape"])
    return out


# ----------------------------------------------------------------------------------------------
# Our graphs in jaxlib



class OurGraph:
    """One HloModuleProto compiled by the plugin's client; call(...) runs it with donated caches."""

    def __init__(self, client, device, path, spec):
        from jax._src.lib import xla_client
        self.spec = spec
        self.name = spec["name"]
        with open(path, "rb") as f:
            proto = f.read()
        # HloModuleProto -> StableHLO bytecode. The proto's input_output_alias comes through as
        # the module attribute mhlo.input_output_alias, which the plugin's compiler honours
        # (checked at run time in check_aliasing: each cache output sits in its input's buffer).
        self.stablehlo = xla_client._xla.mlir.hlo_to_stablehlo(proto)
        # The compile options jax.jit uses for a one-device computation, so both sides are compiled alike.
        from jax._src import compiler
        opts = compiler.get_compile_options(num_replicas=1, num_partitions=1, backend=client)
        # The XLA options the graph's manifest entry lists (the f32 cpu preset's XNNPACK dots in
        # token generation), as the phi3 runtime compiles it; the same field jax.jit's
        # compiler_options fills.
        self.xla_options = spec.get("xla_options", {})
        opts.env_option_overrides = sorted(self.xla_options.items())
        t0 = time.perf_counter()
        self.exe = client.compile_and_load(self.stablehlo, [device], opts)
        self.compile_s = time.perf_counter() - t0
        # input_output_alias entries that survived into the compiled module
        hlo = self.exe.hlo_modules()[0].to_string()
        head = hlo.split("\n", 1)[0]
        self.compiled_aliases = len(re.findall(r"may-alias|must-alias", head))
        self.roles = [i["role"] for i in spec["inputs"]]
        self.cache_in = [k for k, r in enumerate(self.roles) if r == "kv_cache"]
        self.alias = {o["aliases_input"]: j for j, o in enumerate(spec["outputs"]) if "aliases_input" in o}
        assert sorted(self.alias) == self.cache_in, f"{self.name}: every cache input must be aliased"
        assert spec["outputs"][0]["role"] == "logits"

    def __call__(self, head, weights, caches):
        """head: [input_ids, position_ids, seq_ids] device arrays; weights: list in parameter order;
        caches: list in parameter order (donated). Returns (logits, new caches)."""
        outs = self.exe.execute_sharded(head + weights + caches).disassemble_into_single_device_arrays()
        outs = [o[0] for o in outs]
        return outs[0], outs[1:]


class OurSet:
    def __init__(self, client, device, graphs_dir, weights_file, names, weight_cache):
        import jax
        with open(os.path.join(graphs_dir, "manifest.json")) as f:
            self.manifest = json.load(f)
        m = self.manifest
        self.kv = m["kv_state"]
        self.graphs = {}
        for g in m["graphs"]:
            if g["name"] in names:
                self.graphs[g["name"]] = OurGraph(client, device, os.path.join(graphs_dir, g["files"][0]), g)
        missing = set(names) - set(self.graphs)
        assert not missing, f"{graphs_dir}: no graph {sorted(missing)}"
        key = (weights_file, json.dumps([(w["name"], w["dtype"], w["shape"]) for w in m["weights"]]))
        if key not in weight_cache:
            import ml_dtypes
            dtname = {np.dtype(np.float32): "f32", np.dtype(ml_dtypes.bfloat16): "bf16", np.dtype(np.float16): "f16"}
            host = read_safetensors(weights_file)
            for w in m["weights"]:
                a = host.get(w["name"])
                if a is None or list(a.shape) != w["shape"] or dtname.get(a.dtype) != w["dtype"]:
                    raise SystemExit(f"bench-jax: {weights_file}: {w['name']} is not {w['dtype']}{w['shape']} "
                                     f"as {graphs_dir}/manifest.json wants")
            weight_cache.clear()  # one weight set alive at a time
            weight_cache[key] = {w["name"]: jax.device_put(np.asarray(host[w["name"]]), device)
                                 for w in m["weights"]}
        self.weights = weight_cache[key]
        self.device = device
        for g in self.graphs.values():
            ins = g.spec["inputs"]
            g.weight_args = [self.weights[i["weight"]] for i in ins if i["role"] == "weight"]
            assert g.roles[:3] == ["input_ids", "position_ids", "seq_ids"], g.roles[:3]
            assert g.roles[3:3 + len(g.weight_args)] == ["weight"] * len(g.weight_args)
            assert g.roles[3 + len(g.weight_args):] == ["kv_cache"] * len(g.cache_in)
            # cache inputs in parameter order = (layer, key/value)
            order = [(i["layer"], i["tensor"]) for i in ins if i["role"] == "kv_cache"]
            assert order == [(l, t) for l in range(self.kv["layers"]) for t in ("key", "value")], order

    def zero_caches(self):
        import jax.numpy as jnp
        dt = {"f32": jnp.float32, "bf16": jnp.bfloat16}[self.kv["dtype"]]
        return [jnp.zeros(self.kv["shape"], dt, device=self.device) for _ in range(2 * self.kv["layers"])]


# ----------------------------------------------------------------------------------------------
# Helpers


def flat(caches):
    """JAX side [(k, v), ...] -> [k0, v0, k1, v1, ...] (our parameter order)."""
    return [a for kv in caches for a in kv]


def pairs(flat_caches):
    return [(flat_caches[i], flat_caches[i + 1]) for i in range(0, len(flat_caches), 2)]


def pointers(arrays):
    return [a.unsafe_buffer_pointer() for a in arrays]


def rel_diff(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b))), float(np.max(np.abs(b)))


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return ""


def machine_info(plugin):
    import jax
    import jaxlib
    cpu = sh("lscpu | sed -n 's/^Model name: *//p'")
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "lscpu_cpus": sh("lscpu | sed -n 's/^CPU(s): *//p'"),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "numpy": np.__version__,
        "plugin": plugin,
        "plugin_platform_version": " ".join(jax.devices()[0].client.platform_version.split()),
        "cpu_family_model_stepping": "/".join(sh(f"lscpu | sed -n 's/^{k}: *//p'") for k in ("CPU family", "Model", "Stepping")),
        "cpu_flags": [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")
                      if f in sh("lscpu | sed -n 's/^Flags: *//p'").split()],
        "hypervisor": sh("lscpu | sed -n 's/^Hypervisor vendor: *//p'"),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "devices": [str(d) for d in jax.devices()],
        "git_commit": sh(f"git -C {HERE} rev-parse --short HEAD"),
        "loadavg_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def hlo_summary(text, cache_shape):
    """Counts in an optimised HLO module, over the instructions of the non-fused computations
    (a fusion counts as its fused computation's root op): whole-KV-cache moves (copy/transpose
    with a cache-sized result, or a fusion with one inside, such as the `copy_bitcast_fusion`
    XLA makes of a transposed key cache), dots, dynamic-update-slices and scatters."""
    n_cache = int(np.prod(cache_shape))
    inst = re.compile(r"^\s*(ROOT )?%?([\w.\-]+) = (\w+)\[([\d,]*)\][^ ]* ([\w\-]+)\((.*)$")
    comps, cur = {}, None
    for line in text.splitlines():
        if line and not line[0].isspace() and line.rstrip().endswith("{"):
            cur = line.split()[1 if line.startswith("ENTRY") else 0].lstrip("%")
            comps[cur] = {"entry": line.startswith("ENTRY"), "insts": [], "root": None}
            continue
        m = inst.match(line)
        if m and cur:
            root, name, _, dims, op, rest = m.groups()
            size = int(np.prod([int(d) for d in dims.split(",")])) if dims else 1
            calls = re.search(r"calls=%?([\w.\-]+)", rest)
            comps[cur]["insts"].append((op, size, calls.group(1) if calls else None))
            if root:
                comps[cur]["root"] = op
    called_by_fusion = {c for v in comps.values() for op, _, c in v["insts"] if op == "fusion" and c}

    def moves(comp):  # a cache-sized copy or transpose inside a fused computation
        return any(o in ("copy", "transpose") and n == n_cache for o, n, _ in comps.get(comp, {}).get("insts", []))

    out = {"cache_sized_copies": 0, "dots": 0, "dynamic_update_slices": 0, "scatters": 0, "fusions": 0}
    for name, comp in comps.items():
        if name in called_by_fusion:
            continue
        for op, size, callee in comp["insts"]:
            eff = op
            if op == "fusion":
                out["fusions"] += 1
                eff = comps.get(callee, {}).get("root") or op
            if size == n_cache and (eff in ("copy", "transpose") or (op == "fusion" and moves(callee))):
                out["cache_sized_copies"] += 1
            out["dots"] += eff in ("dot", "convolution")
            out["dynamic_update_slices"] += eff == "dynamic-update-slice"
            out["scatters"] += eff == "scatter"
    return out


# ----------------------------------------------------------------------------------------------
# Checks


VARIANTS = {"xla", "kernels"}


def register_kernels(lib_path, plugin):
    """Registers our runtime's kernels (phi3_neuron.*_matvec) with the plugin jaxlib loaded, through
    tools/bench-jax/kernels (libphi3_kernels_ffi.so): the sets built with --matvec kernel call them."""
    import ctypes
    lib = ctypes.CDLL(os.path.abspath(lib_path))
    lib.phi3_register_kernels.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.phi3_register_kernels.restype = ctypes.c_int
    err = ctypes.create_string_buffer(1024)
    if lib.phi3_register_kernels(os.path.abspath(plugin).encode(), err, len(err)) != 0:
        raise SystemExit(f"bench-jax: registering the runtime's kernels: {err.value.decode()}")


def check_aliasing(tag, ours_call, jax_call):
    """Each side's cache outputs must come back in the device memory of the donated inputs."""
    res = {}
    for side, call in (("ours", ours_call), ("jax", jax_call)):
        ins, outs, deleted = call()
        same = sum(p == q for p, q in zip(ins, outs))
        res[side] = {"caches": len(ins), "in_place": same, "inputs_deleted": deleted}
        if same != len(ins) or not deleted:
            raise SystemExit(f"bench-jax: {tag}: {side}: {same}/{len(ins)} cache outputs in the donated "
                             f"buffers, inputs deleted: {deleted} -- the caches are copied")
    return res


# ----------------------------------------------------------------------------------------------
# Timing


def time_calls(step, state, calls):
    """Runs `calls` calls; returns (per-call ms list, state)."""
    import jax
    ts = []
    for _ in range(calls):
        t0 = time.perf_counter()
        state = step(state)
        jax.block_until_ready(state)
        ts.append((time.perf_counter() - t0) * 1e3)
    return ts, state


def alternate(ours_step, ours_state, jax_step, jax_state, warmup, rounds, calls):
    _, ours_state = time_calls(ours_step, ours_state, warmup)
    _, jax_state = time_calls(jax_step, jax_state, warmup)
    o_all, j_all, ratios, o_med, j_med = [], [], [], [], []
    for _ in range(rounds):
        o, ours_state = time_calls(ours_step, ours_state, calls)
        j, jax_state = time_calls(jax_step, jax_state, calls)
        o_all += o
        j_all += j
        o_med.append(statistics.median(o))
        j_med.append(statistics.median(j))
        ratios.append(o_med[-1] / j_med[-1])
    return {
        "ours_ms": statistics.median(o_all), "jax_ms": statistics.median(j_all),
        "ratio": statistics.median(o_all) / statistics.median(j_all),
        "ratio_min": min(ratios), "ratio_max": max(ratios),
        "ours_round_medians_ms": o_med, "jax_round_medians_ms": j_med,
        "ours_min_ms": min(o_all), "jax_min_ms": min(j_all),
        "rounds": rounds, "calls_per_round": calls, "warmup_calls": warmup,
    }


# ----------------------------------------------------------------------------------------------
# The run


def run(args):
    import jax
    import jax.numpy as jnp
    from jax._src import xla_bridge
    import phi3_jax

    xla_bridge.register_plugin("xcpu", library_path=args.plugin)
    if args.kernels_lib:
        register_kernels(args.kernels_lib, args.plugin)
    info = machine_info(args.plugin)
    dev = jax.devices("xcpu")[0]
    client = dev.client
    jax.config.update("jax_default_device", dev)
    print(f"bench-jax: {info['cpu']}, {info['cores']} cores, jax {info['jax']} / jaxlib {info['jaxlib']}, "
          f"plugin {args.plugin} ({info['plugin_platform_version']})", file=sys.stderr)

    with open(os.path.join(args.model, "config.json")) as f:
        cfg = json.load(f)
    hf = read_safetensors(os.path.join(args.model, "model.safetensors"))
    V = cfg["vocab_size"]
    S, T = args.prefill, args.cache_len
    rng = np.random.default_rng(1)

    # --set DTYPE:B[:VARIANT]=GRAPHS:WEIGHTS
    sets = []
    for s in args.set:
        head, graphs, weights = s.split("=", 1)[0], *s.split("=", 1)[1].split(":")
        dtype, b, variant = (head.split(":") + ["xla"])[:3]
        if variant not in VARIANTS:
            raise SystemExit(f"bench-jax: --set {s}: the variant must be one of {sorted(VARIANTS)}")
        if variant == "kernels" and not args.kernels_lib:
            raise SystemExit(f"bench-jax: --set {s}: a kernels set needs --kernels-lib")
        sets.append((dtype, int(b), variant, graphs, weights))
    prefill_b = [int(x) for x in args.prefill_batches.split(",")]
    decode_b = [int(x) for x in args.decode_batches.split(",")]

    results = {"machine": info, "model": cfg, "prefill_len": S, "cache_len": T,
               "jax_xla_options": args.jax_xla_options,
               "decode_position": T - 1, "checks": [], "aliasing": {}, "cases": [], "matmul": []}
    t_start = time.perf_counter()
    weight_cache = {}
    for dtype in args.dtypes.split(","):
        jdt = {"f32": jnp.float32, "bf16": jnp.bfloat16}[dtype]
        params = phi3_jax.load_params(hf, cfg, jdt)
        jax_prefill = phi3_jax.make_step(cfg, decode=False)
        jax_decode = phi3_jax.make_step(cfg, decode=True, cache_write=args.jax_cache_write)
        for (sdt, B, variant, graphs_dir, weights_file) in sets:
            if sdt != dtype:
                continue
            names = ([f"cte_b{B}_s{S}"] if B in prefill_b else []) + ([f"tkg_b{B}_s{T}"] if B in decode_b else [])
            if not names:
                continue
            ours = OurSet(client, dev, graphs_dir, weights_file, names, weight_cache)
            if args.jax_xla_options == "same":
                # JAX compiled with the XLA options of our graph of the same kind too: the same
                # XLA, the same options.
                for g in ours.graphs.values():
                    if g.spec["kind"] == "token_generation":
                        jax_decode = phi3_jax.make_step(cfg, decode=True, cache_write=args.jax_cache_write,
                                                        compiler_options=g.xla_options)
                    else:
                        jax_prefill = phi3_jax.make_step(cfg, decode=False, compiler_options=g.xla_options)
            full = [B, cfg["num_key_value_heads"], T, cfg["hidden_size"] // cfg["num_attention_heads"]]
            # A one-sequence state may come without its row dim (`--single-row-state squeezed`,
            # the cpu preset's): the same values, which JAX's caches hold as [1, kv, T, hd].
            assert ours.kv["shape"] in (full, full[1:] if B == 1 else full), ours.kv["shape"]
            tol = F32_TOL if dtype == "f32" else BF16_TOL
            seq = jax.device_put(np.arange(B, dtype=np.int32), dev)

            for name, g in ours.graphs.items():
                decode = g.spec["kind"] == "token_generation"
                s = 1 if decode else S
                ids_np = rng.integers(0, V, size=(B, s), dtype=np.int32)
                # ---- correctness: prefill from zero caches; decode from identical random caches at
                # per-row positions (mask and per-row writes), then at the timed position T-1.
                checks = []
                if decode:
                    pos_sets = [np.array([[min(S + 7 * r, T - 1)] for r in range(B)], np.int32),
                                np.full((B, 1), T - 1, np.int32)]
                else:
                    pos_sets = [np.tile(np.arange(S, dtype=np.int32), (B, 1))]
                for pos_np in pos_sets:
                    if decode:
                        host = [(rng.standard_normal(ours.kv["shape"], np.float32)).astype(jdt)
                                for _ in range(2 * cfg["num_hidden_layers"])]
                        # The same values on both sides; our state may be wider than the model's
                        # dtype (the cpu preset keeps bf16 graphs' KV state in f32).
                        kdt = {"f32": np.float32, "bf16": jdt}[ours.kv["dtype"]]
                        oc = [jax.device_put(np.asarray(a).astype(kdt), dev) for a in host]
                        jc = pairs([jax.device_put(a.reshape(full), dev) for a in host])
                    else:
                        oc = ours.zero_caches()
                        jc = phi3_jax.init_caches(cfg, B, T, jdt, dev)
                    ids, pos = jax.device_put(ids_np, dev), jax.device_put(pos_np, dev)
                    lo, oc = g([ids, pos, seq], g.weight_args, oc)
                    step = jax_decode if decode else jax_prefill
                    lj, jc = step(params, jc, ids, pos)
                    lo, lj = np.asarray(lo), np.asarray(lj)
                    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(lj))):
                        raise SystemExit(f"bench-jax: {dtype} {name}: non-finite logits")
                    d, mx = rel_diff(lo, lj)
                    # the caches written must agree too
                    dc = max(rel_diff(np.ravel(a), np.ravel(b))[0] for a, b in zip(oc, flat(jc)))
                    argmax = float(np.mean(np.argmax(lo, -1) == np.argmax(lj, -1)))
                    c = {"dtype": dtype, "variant": variant, "graph": name, "positions": f"{int(pos_np.min())}..{int(pos_np.max())}",
                         "max_abs_diff_rel": d, "max_abs_logit": mx, "cache_max_abs_diff_rel": dc,
                         "argmax_agree": argmax, "tolerance": tol}
                    checks.append(c)
                    print(f"bench-jax: check {dtype} {variant} {name} pos {c['positions']}: max|ours-JAX|/max|logit| = "
                          f"{d:.2e} (max|logit| {mx:.3f}), caches {dc:.2e}, argmax agree {argmax:.2f}",
                          file=sys.stderr)
                    if not (d <= tol and dc <= tol * 10):
                        raise SystemExit(f"bench-jax: {dtype} {variant} {name}: ours and JAX disagree "
                                         f"({d:.3e} > {tol:.0e} or caches {dc:.3e}); no timing")
                    del oc, jc
                results["checks"] += checks

                # ---- aliasing: one call each, pointers before/after
                pos = jax.device_put(pos_sets[-1], dev)
                ids = jax.device_put(ids_np, dev)

                def ours_alias():
                    c = ours.zero_caches()
                    p = pointers(c)
                    _, c2 = g([ids, pos, seq], g.weight_args, c)
                    jax.block_until_ready(c2)
                    return p, pointers(c2), all(a.is_deleted() for a in c)

                def jax_alias():
                    c = phi3_jax.init_caches(cfg, B, T, jdt, dev)
                    p = pointers(flat(c))
                    _, c2 = (jax_decode if decode else jax_prefill)(params, c, ids, pos)
                    jax.block_until_ready(c2)
                    return p, pointers(flat(c2)), all(a.is_deleted() for a in flat(c))

                tag = f"{dtype} {name}" + ("" if variant == "xla" else f" {variant}")
                al = check_aliasing(tag, ours_alias, jax_alias)
                al["ours"]["compiled_input_output_aliases"] = g.compiled_aliases
                if g.compiled_aliases != len(g.cache_in):
                    raise SystemExit(f"bench-jax: {tag}: {g.compiled_aliases} aliases in the compiled module, "
                                     f"{len(g.cache_in)} caches")
                results["aliasing"][tag] = al

                # ---- what XLA made of each side (optimised HLO; JAX's through lower().compile())
                jfn = jax_decode if decode else jax_prefill
                jtext = jfn.lower(params, phi3_jax.init_caches(cfg, B, T, jdt, dev), ids, pos).compile().as_text()
                otext = g.exe.hlo_modules()[0].to_string()
                results.setdefault("hlo", {})[tag] = {
                    "ours": hlo_summary(otext, ours.kv["shape"]), "jax": hlo_summary(jtext, ours.kv["shape"])}
                if args.hlo_dir:
                    os.makedirs(args.hlo_dir, exist_ok=True)
                    for side, t in (("ours", otext), ("jax", jtext)):
                        with open(os.path.join(args.hlo_dir, f"{tag.replace(' ', '-')}-{side}.txt"), "w") as f:
                            f.write(t)
                print(f"bench-jax: optimised HLO {tag}: {json.dumps(results['hlo'][tag])}",
                      file=sys.stderr)
                print(f"bench-jax: aliasing {tag}: {json.dumps(al)}", file=sys.stderr)

                # ---- timing: alternating rounds, caches fed back each call
                def ours_step(c):
                    _, c = g([ids, pos, seq], g.weight_args, c)
                    return c

                jstep = jax_decode if decode else jax_prefill

                def jax_step(c):
                    _, c = jstep(params, c, ids, pos)
                    return c

                calls = args.decode_calls if decode else args.prefill_calls
                r = alternate(ours_step, ours.zero_caches(), jax_step, phi3_jax.init_caches(cfg, B, T, jdt, dev),
                              args.warmup, args.rounds, calls)
                r.update({"dtype": dtype, "variant": variant, "phase": "decode" if decode else "prefill", "batch": B,
                          "tokens_per_row": s, "graph": name, "ours_compile_s": g.compile_s,
                          "ours_xla_options": g.xla_options,
                          "jax_xla_options": g.xla_options if args.jax_xla_options == "same" else {}})
                results["cases"].append(r)
                print(f"bench-jax: {dtype} {variant} {r['phase']} B={B}: ours {r['ours_ms']:.2f} ms, JAX {r['jax_ms']:.2f} ms, "
                      f"ours/JAX {r['ratio']:.2f} ({r['ratio_min']:.2f}-{r['ratio_max']:.2f})", file=sys.stderr)
            del ours
        del params
        weight_cache.clear()

    results["matmul"] = matmul_bench(dev, args.matmul_batches, args.matmul_calls)
    results["machine"]["loadavg_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    results["wall_s"] = round(time.perf_counter() - t_start, 1)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(report(results))


def matmul_bench(dev, batches, calls):
    """x [B, 1024] times a 1024 -> 2816 weight, stored [in, out] (x @ W) vs [out, in] (x @ Wt.T)."""
    import jax
    import jax.numpy as jnp
    rng = np.random.default_rng(2)
    out = []
    w = rng.standard_normal((1024, 2816), np.float32) * np.float32(0.02)
    for dtype in ("f32", "bf16"):
        jdt = {"f32": jnp.float32, "bf16": jnp.bfloat16}[dtype]
        w_io = jax.device_put(jnp.asarray(w, jdt), dev)                           # [in, out]
        w_oi = jax.device_put(jnp.asarray(np.ascontiguousarray(w.T), jdt), dev)   # [out, in]
        forms = {
            "x@W [in,out]": (jax.jit(lambda x, w: x @ w), w_io),
            "x@Wt.T [out,in]": (jax.jit(lambda x, w: x @ w.T), w_oi),
            # our cpu preset's LinearForm::WeightFirst: dot(W[out,in], x) -> [out, B] -> transpose
            "(Wt@x.T).T [out,in]": (jax.jit(lambda x, w: (w @ x.T).T), w_oi),
        }
        for b in [int(x) for x in batches.split(",")]:
            x = jax.device_put(jnp.asarray(rng.standard_normal((b, 1024), np.float32), jdt), dev)
            row = {"dtype": dtype, "batch": b}
            ref = None
            for k, (fn, wt) in forms.items():
                y = np.asarray(fn(x, wt).block_until_ready(), np.float32)
                ref = y if ref is None else ref
                assert np.allclose(y, ref, rtol=2e-2, atol=2e-2), k
                for _ in range(3):
                    fn(x, wt).block_until_ready()
            # `calls` calls per form, in 3 alternating blocks (form A x n, form B x n, ..., again)
            ts = {k: [] for k in forms}
            blocks = 3
            for blk in range(blocks):
                for k, (fn, wt) in forms.items():
                    for _ in range(calls // blocks + (blk < calls % blocks)):
                        t0 = time.perf_counter()
                        fn(x, wt).block_until_ready()
                        ts[k].append((time.perf_counter() - t0) * 1e3)
            for k in forms:
                row[k] = statistics.median(ts[k])
            out.append(row)
            print(f"bench-jax: matmul {dtype} B={b}: " + ", ".join(f"{k} {v:.3f} ms" for k, v in row.items()
                                                                if k not in ("dtype", "batch")), file=sys.stderr)
    return out


def report(r):
    m = r["machine"]
    lines = [f"## ours ÷ JAX on the same XLA ({m['date_utc']})", "",
             f"{m['cpu']} (family/model/stepping {m['cpu_family_model_stepping']}, {', '.join(m['cpu_flags'])}), "
             f"{m['cores']} cores, {m['memory_gib']} GiB; jax {m['jax']} / jaxlib {m['jaxlib']}; plugin `{m['plugin']}`; "
             f"model hidden {r['model']['hidden_size']}, {r['model']['num_hidden_layers']} layers, vocab "
             f"{r['model']['vocab_size']}; prefill {r['prefill_len']} tokens, decode at position "
             f"{r['decode_position']} of a {r['cache_len']} cache. Median ms per call; ratio = ours ÷ JAX "
             f"(min–max of the per-round ratios).", "",
             "Ours: `xla` is the cpu preset (XLA's own ops only, runs in any XLA runtime); `kernels` is the "
             "set `phi3 generate` builds (`--matvec kernel`: the runtime's f32/bf16 kernels for "
             "products of up to 8 rows, registered with the plugin through its FFI extension). Each "
             "graph is compiled with the XLA options its manifest entry lists (`xla_options`: the f32 cpu "
             "preset's XNNPACK dots in token generation), as the phi3 runtime compiles it. JAX: "
             + ("compiled with our graph's `xla_options` too (`--jax-xla-options same`)."
                if r.get("jax_xla_options") == "same" else
                "jax.jit's defaults, what a JAX user gets (`--jax-xla-options same` gives it the sets' options)."),
             "",
             "| case | dtype | ours | ours ms | JAX ms | ours ÷ JAX | min–max |", "|---|---|---|---:|---:|---:|---|"]
    for c in r["cases"]:
        case = f"{c['phase']} B={c['batch']}" + (f" S={r['prefill_len']}" if c["phase"] == "prefill" else "")
        lines.append(f"| {case} | {c['dtype']} | {c.get('variant', 'xla')} | {c['ours_ms']:.2f} | {c['jax_ms']:.2f} | "
                     f"{c['ratio']:.2f} | {c['ratio_min']:.2f}–{c['ratio_max']:.2f} |")
    lines += ["", "Agreement before timing (max |ours − JAX| / max |logit|):", "",
              "| dtype | ours | graph | positions | logits | caches | argmax agree |", "|---|---|---|---|---:|---:|---:|"]
    for c in r["checks"]:
        lines.append(f"| {c['dtype']} | {c.get('variant', 'xla')} | {c['graph']} | {c['positions']} | {c['max_abs_diff_rel']:.1e} | "
                     f"{c['cache_max_abs_diff_rel']:.1e} | {c['argmax_agree']:.2f} |")
    if r.get("hlo"):
        lines += ["", "Optimised HLO (top-level instructions; fusions counted by their root op), ours / JAX:", "",
                  "| graph | whole-cache copies | dynamic-update-slices | scatters | dots | fusions |",
                  "|---|---:|---:|---:|---:|---:|"]
        for k, v in r["hlo"].items():
            o, j = v["ours"], v["jax"]
            lines.append(f"| {k} | " + " | ".join(f"{o[f]} / {j[f]}" for f in
                         ("cache_sized_copies", "dynamic_update_slices", "scatters", "dots", "fusions")) + " |")
        al = r.get("aliasing", {})
        if al:
            ok = all(v["ours"]["in_place"] == v["ours"]["caches"] == v["ours"]["compiled_input_output_aliases"]
                     and v["jax"]["in_place"] == v["jax"]["caches"] for v in al.values())
            lines += ["", f"Donation: {'every' if ok else 'NOT every'} cache output of both sides came back in its "
                      f"donated input's buffer (unsafe_buffer_pointer equal, inputs deleted) in all {len(al)} graphs."]
    if r["matmul"]:
        forms = [k for k in r["matmul"][0] if k not in ("dtype", "batch")]
        lines += ["", "## Single matmul, x [B,1024] · W 1024→2816, jitted JAX (median of calls, ms)", "",
                  "| dtype | B | " + " | ".join(forms) + " |", "|---|---:|" + "---:|" * len(forms)]
        for row in r["matmul"]:
            lines.append(f"| {row['dtype']} | {row['batch']} | " + " | ".join(f"{row[k]:.3f}" for k in forms) + " |")
    lines += ["", f"Whole run {r['wall_s']} s; load average before / after: {m['loadavg_before']} / "
              f"{m.get('loadavg_after', '')}."]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    mm = sub.add_parser("make-model")
    mm.add_argument("--out", required=True)
    mm.add_argument("--seed", type=int, default=0)
    rp = sub.add_parser("run")
    rp.add_argument("--model", required=True)
    rp.add_argument("--set", action="append", required=True,
                    help="DTYPE:B[:VARIANT]=GRAPHS_DIR:WEIGHTS_FILE, VARIANT xla (default) or kernels")
    rp.add_argument("--kernels-lib", help="libphi3_kernels_ffi.so: registers the runtime's kernels with the "
                    "plugin, for the kernels sets")
    rp.add_argument("--plugin", required=True)
    rp.add_argument("--out", required=True)
    rp.add_argument("--dtypes", default="f32,bf16")
    rp.add_argument("--prefill-batches", default="1,4")
    rp.add_argument("--decode-batches", default="1,4,8")
    rp.add_argument("--prefill", type=int, default=128)
    rp.add_argument("--cache-len", type=int, default=512)
    rp.add_argument("--warmup", type=int, default=3)
    rp.add_argument("--rounds", type=int, default=5)
    rp.add_argument("--prefill-calls", type=int, default=5)
    rp.add_argument("--decode-calls", type=int, default=10)
    rp.add_argument("--jax-cache-write", choices=["dus", "scatter"], default="dus")
    rp.add_argument("--jax-xla-options", choices=["default", "same"], default="default",
                    help="compile JAX with its defaults (what a JAX user gets), or with each set's "
                         "xla_options too (the same XLA and options on both sides)")
    rp.add_argument("--hlo-dir", help="write both sides' optimised HLO text here")
    rp.add_argument("--matmul-batches", default="1,4,128")
    rp.add_argument("--matmul-calls", type=int, default=30)
    rep = sub.add_parser("report", help="print the tables of an existing JSON")
    rep.add_argument("json")
    a = ap.parse_args()
    if a.cmd == "make-model":
        make_model(a.out, a.seed)
    elif a.cmd == "report":
        with open(a.json) as f:
            print(report(json.load(f)))
    else:
        run(a)


if __name__ == "__main__":
    main()
