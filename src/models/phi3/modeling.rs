//! The Phi-3 model, class by class as in transformers' `modeling_phi3.py`. Each module
//! declares its weights once (Hugging Face key, checkpoint shape, shard rule) in `new`, and
//! computes in `forward`; scopes follow the Hugging Face module paths
//! (`model/layers.3/self_attn/qkv_proj`), so they name the module in errors and in the HLO
//! `OpMetadata`.
//!
//! Checkpoint layout (Hugging Face): Q|K|V fused in `self_attn.qkv_proj` (`[(nH + 2·nKV)·hd,
//! H]`), gate|up fused in `mlp.gate_up_proj` (`[2·I, H]`); a tied model stores no `lm_head`.
//! The `qkv` / `gate_up` knobs cut the fused tensors into separate graph weights
//! (`q_proj`, `k_proj`, `v_proj`, `gate_proj`, `up_proj`, NxD's unfused layout).

use super::config::{Phi3Config, RopeScaling};
use crate::dsl::nn::silu;
use crate::dsl::{OpError, Tensor};
use crate::models::decoder::attention::cached_attention;
use crate::models::decoder::layers::{
    ColumnLinear, Embedding, GateUpProjection, LmHead, Logits, QkvProjection, RmsNorm, RowLinear,
};
use crate::models::decoder::rope::{inverse_frequencies, Frequencies, RotaryEmbedding};
use crate::models::decoder::{
    part, run_layers, BuildError, CausalLm, DecoderLayer, Inputs, KvCache, LayerInputs, Recorder,
};

/// `Phi3RotaryEmbedding`: plain or LongRoPE, over `rotary_dim` channels (partial rotary).
pub struct Phi3RotaryEmbedding(RotaryEmbedding);

impl Phi3RotaryEmbedding {
    pub fn new(cfg: &Phi3Config) -> Self {
        let (theta, rot) = (cfg.rope_theta, cfg.rotary_dim());
        let frequencies = match &cfg.rope {
            RopeScaling::Default => Frequencies::Static {
                inv: inverse_frequencies(theta, rot, None),
                attention_factor: 1.0,
            },
            RopeScaling::LongRope {
                short_factor,
                long_factor,
                attention_factor,
            } => Frequencies::LongRope {
                short_inv: inverse_frequencies(theta, rot, Some(short_factor)),
                long_inv: inverse_frequencies(theta, rot, Some(long_factor)),
                original_max: cfg.original_max_position_embeddings,
                attention_factor: *attention_factor,
            },
        };
        Phi3RotaryEmbedding(RotaryEmbedding {
            rotary_dim: rot,
            frequencies,
        })
    }

    pub fn forward(&self, cx: &Recorder<'_>, pos: &Tensor) -> Result<(Tensor, Tensor), OpError> {
        let _s = cx.b.scope("rotary_emb");
        self.0.tables(cx, pos)
    }
}

/// `Phi3Attention`: the fused (or split) Q|K|V projection, RoPE, the cache and `o_proj`.
pub struct Phi3Attention {
    qkv: QkvProjection,
    o_proj: RowLinear,
    scale: f64,
}

impl Phi3Attention {
    pub fn new(cx: &mut Recorder<'_>, cfg: &Phi3Config, p: &str) -> Result<Self, BuildError> {
        let plan = cx.plan;
        let (h, hd) = (cfg.hidden_size, cfg.head_dim);
        let (nh, nkv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        let key = format!("{p}.qkv_proj.weight");
        let hf = [(nh + 2 * nkv) * hd, h];
        let (k_base, v_base) = (nh * hd, (nh + nkv) * hd);
        let column = |weight| ColumnLinear { weight, bias: None };
        let qkv = if cx.spec.options.qkv.is_fused(true) {
            let rule = plan.fused_qkv(k_base, v_base);
            QkvProjection::Fused(column(cx.linear_weight(&key, vec![part(&key, &hf, rule)])?))
        } else {
            let mut split = |name: &str, rule| {
                cx.linear_weight(&format!("{p}.{name}.weight"), vec![part(&key, &hf, rule)])
                    .map(column)
            };
            QkvProjection::Split {
                q: split("q_proj", plan.query_heads(0, 0))?,
                k: split("k_proj", plan.kv_heads(k_base))?,
                v: split("v_proj", plan.kv_heads(v_base))?,
            }
        };
        let o_key = format!("{p}.o_proj.weight");
        let o_rule = plan.query_heads(1, 0);
        let o_proj = RowLinear {
            weight: cx.linear_weight(&o_key, vec![part(&o_key, &[h, nh * hd], o_rule)])?,
            bias: None,
        };
        Ok(Phi3Attention {
            qkv,
            o_proj,
            scale: (hd as f64).powf(-0.5),
        })
    }

    pub fn forward(
        &self,
        cx: &Recorder<'_>,
        x: &Tensor,
        cache: &KvCache,
        li: &LayerInputs<'_>,
    ) -> Result<(Tensor, KvCache), OpError> {
        let names = ["qkv_proj", "q_proj", "k_proj", "v_proj"];
        let (q, k, v) = self.qkv.forward(cx, x, names)?;
        let (ctx, cache) = cached_attention(cx, (&q, &k, &v), cache, li, self.scale)?;
        let _p = cx.b.scope("o_proj");
        Ok((self.o_proj.forward(cx, &ctx)?, cache))
    }
}

/// `Phi3MLP`: `down_proj(up · silu(gate))` with gate|up fused (or split).
pub struct Phi3MLP {
    gate_up: GateUpProjection,
    down_proj: RowLinear,
}

impl Phi3MLP {
    pub fn new(cx: &mut Recorder<'_>, cfg: &Phi3Config, p: &str) -> Result<Self, BuildError> {
        let plan = cx.plan;
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let key = format!("{p}.gate_up_proj.weight");
        let hf = [2 * i, h];
        let column = |weight| ColumnLinear { weight, bias: None };
        let gate_up = if cx.spec.options.gate_up.is_fused(true) {
            let rule = plan.fused_gate_up();
            GateUpProjection::Fused(column(cx.linear_weight(&key, vec![part(&key, &hf, rule)])?))
        } else {
            let mut split = |name: &str, rule| {
                cx.linear_weight(&format!("{p}.{name}.weight"), vec![part(&key, &hf, rule)])
                    .map(column)
            };
            GateUpProjection::Split {
                gate: split("gate_proj", plan.intermediate(0, 0))?,
                up: split("up_proj", plan.intermediate(0, i))?,
            }
        };
        let down_key = format!("{p}.down_proj.weight");
        let down_rule = plan.intermediate(1, 0);
        let down_proj = RowLinear {
            weight: cx.linear_weight(&down_key, vec![part(&down_key, &[h, i], down_rule)])?,
            bias: None,
        };
        Ok(Phi3MLP { gate_up, down_proj })
    }

    pub fn forward(&self, cx: &Recorder<'_>, x: &Tensor) -> Result<Tensor, OpError> {
        let (gate, up) = self
            .gate_up
            .forward(cx, x, ["gate_up_proj", "gate_proj", "up_proj"])?;
        let act = up.mul(&silu(&gate)?)?;
        let _p = cx.b.scope("down_proj");
        self.down_proj.forward(cx, &act)
    }
}

/// `Phi3DecoderLayer`: pre-norm attention and MLP, each with a residual connection.
pub struct Phi3DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Phi3Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Phi3MLP,
}

impl Phi3DecoderLayer {
    pub fn new(cx: &mut Recorder<'_>, cfg: &Phi3Config, layer: usize) -> Result<Self, BuildError> {
        let p = format!("model.layers.{layer}");
        let (h, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        let norm = |weight| RmsNorm { weight, eps };
        Ok(Phi3DecoderLayer {
            input_layernorm: norm(cx.replicated(&format!("{p}.input_layernorm.weight"), h)?),
            self_attn: Phi3Attention::new(cx, cfg, &format!("{p}.self_attn"))?,
            post_attention_layernorm: norm(
                cx.replicated(&format!("{p}.post_attention_layernorm.weight"), h)?,
            ),
            mlp: Phi3MLP::new(cx, cfg, &format!("{p}.mlp"))?,
        })
    }
}

impl DecoderLayer for Phi3DecoderLayer {
    fn forward(
        &self,
        cx: &Recorder<'_>,
        hidden: &Tensor,
        cache: &KvCache,
        li: &LayerInputs<'_>,
    ) -> Result<(Tensor, KvCache), OpError> {
        let b = &cx.b;
        let x = {
            let _n = b.scope("input_layernorm");
            self.input_layernorm.forward(cx, hidden)?
        };
        let (attn_out, cache) = {
            let _s = b.scope("self_attn");
            self.self_attn.forward(cx, &x, cache, li)?
        };
        let hidden = li.kept(hidden)?.add(&attn_out)?;
        let x = {
            let _n = b.scope("post_attention_layernorm");
            self.post_attention_layernorm.forward(cx, &hidden)?
        };
        let mlp_out = {
            let _s = b.scope("mlp");
            self.mlp.forward(cx, &x)?
        };
        Ok((hidden.add(&mlp_out)?, cache))
    }
}

/// `Phi3Model`: embedding, rotary embedding, the decoder layers and the final norm. Like HF
/// with `logits_to_keep=1`, it returns the normed hidden state of each sequence's last
/// position only.
pub struct Phi3Model {
    embed_tokens: Embedding,
    layers: Vec<Phi3DecoderLayer>,
    norm: RmsNorm,
    rotary_emb: Phi3RotaryEmbedding,
    sliding_window: Option<usize>,
}

impl Phi3Model {
    pub fn new(cx: &mut Recorder<'_>, cfg: &Phi3Config) -> Result<Self, BuildError> {
        let (h, v) = (cfg.hidden_size, cfg.vocab_size);
        let key = "model.embed_tokens.weight";
        let rule = cx.plan.hidden(1);
        let embed_tokens = Embedding {
            table: cx.weight(key, vec![part(key, &[v, h], rule)])?,
        };
        let layers = (0..cfg.num_hidden_layers)
            .map(|l| Phi3DecoderLayer::new(cx, cfg, l))
            .collect::<Result<_, _>>()?;
        let norm = RmsNorm {
            weight: cx.replicated("model.norm.weight", h)?,
            eps: cfg.rms_norm_eps,
        };
        Ok(Phi3Model {
            embed_tokens,
            layers,
            norm,
            rotary_emb: Phi3RotaryEmbedding::new(cfg),
            sliding_window: cfg.sliding_window.map(|w| w as usize),
        })
    }

    pub fn forward(
        &self,
        cx: &Recorder<'_>,
        inputs: &Inputs,
        caches: &[KvCache],
    ) -> Result<(Tensor, Vec<KvCache>), OpError> {
        let b = &cx.b;
        let pos = &inputs.position_ids;
        let _m = b.scope("model");
        let hidden = {
            let _s = b.scope("embed_tokens");
            self.embed_tokens.forward(cx, &inputs.input_ids)?
        };
        let (cos, sin) = self.rotary_emb.forward(cx, pos)?;
        let rope = (&cos, &sin);
        let (last, new_caches) = run_layers(
            cx,
            &self.layers,
            hidden,
            caches,
            inputs,
            rope,
            self.sliding_window,
        )?;
        let _n = b.scope("norm");
        Ok((self.norm.forward(cx, &last)?, new_caches))
    }
}

/// `Phi3ForCausalLM`: the model and its LM head (tied to the embedding when the config says
/// so: then the head is cut from `model.embed_tokens.weight`).
pub struct Phi3ForCausalLM {
    model: Phi3Model,
    lm_head: LmHead,
}

impl Phi3ForCausalLM {
    pub fn new(cx: &mut Recorder<'_>, cfg: &Phi3Config) -> Result<Self, BuildError> {
        let model = Phi3Model::new(cx, cfg)?;
        let key = if cfg.tie_word_embeddings {
            "model.embed_tokens.weight"
        } else {
            "lm_head.weight"
        };
        let hf = [cfg.vocab_size, cfg.hidden_size];
        let rule = cx.plan.vocab_rows();
        let lm_head = LmHead {
            weight: cx.linear_weight("lm_head.weight", vec![part(key, &hf, rule)])?,
        };
        Ok(Phi3ForCausalLM { model, lm_head })
    }
}

impl CausalLm for Phi3ForCausalLM {
    fn forward(
        &self,
        cx: &Recorder<'_>,
        inputs: &Inputs,
        caches: &[KvCache],
    ) -> Result<(Logits, Vec<KvCache>), OpError> {
        let (hidden, caches) = self.model.forward(cx, inputs, caches)?;
        let _s = cx.b.scope("lm_head");
        Ok((self.lm_head.forward(cx, &hidden)?, caches))
    }
}
