//! The Llama model, class by class as in transformers' `modeling_llama.py`, on the shared
//! decoder layers. Each module declares its weights once (Hugging Face key, checkpoint shape,
//! shard rule) and computes in `forward`; scopes follow the Hugging Face module paths.
//!
//! Checkpoint layout (Hugging Face): separate `q_proj`, `k_proj`, `v_proj` and `gate_proj`,
//! `up_proj`, with biases when `attention_bias` / `mlp_bias` say so; a tied model stores no
//! `lm_head`. The `qkv` / `gate_up` knobs stack the separate tensors into one graph weight
//! (`qkv_proj`, `gate_up_proj`), each rank's rows `[Q_r; K_r; V_r]` / `[gate_r; up_r]`.

use super::config::{LlamaConfig, LlamaRope};
use crate::dsl::nn::silu;
use crate::dsl::{OpError, Tensor};
use crate::models::decoder::attention::cached_attention;
use crate::models::decoder::layers::{
    ColumnLinear, Embedding, GateUpProjection, LmHead, Logits, QkvProjection, RmsNorm, RowLinear,
};
use crate::models::decoder::rope::{
    inverse_frequencies, llama3_inverse_frequencies, Frequencies, RotaryEmbedding,
};
use crate::models::decoder::{
    part, run_layers, BuildError, CausalLm, DecoderLayer, Inputs, KvCache, LayerInputs, Recorder,
};
use crate::weights::{ShardRule, WeightPart};

/// `LlamaRotaryEmbedding`: plain RoPE or Llama 3's frequency scaling, over the whole head.
pub struct LlamaRotaryEmbedding(RotaryEmbedding);

impl LlamaRotaryEmbedding {
    pub fn new(cfg: &LlamaConfig) -> Self {
        let (theta, rot) = (cfg.rope_theta, cfg.head_dim);
        let inv = match &cfg.rope {
            LlamaRope::Default => inverse_frequencies(theta, rot, None),
            LlamaRope::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => llama3_inverse_frequencies(
                theta,
                rot,
                *factor,
                *low_freq_factor,
                *high_freq_factor,
                *original_max_position_embeddings,
            ),
        };
        LlamaRotaryEmbedding(RotaryEmbedding {
            rotary_dim: rot,
            frequencies: Frequencies::Static {
                inv,
                attention_factor: 1.0,
            },
        })
    }

    pub fn forward(&self, cx: &Recorder<'_>, pos: &Tensor) -> Result<(Tensor, Tensor), OpError> {
        let _s = cx.b.scope("rotary_emb");
        self.0.tables(cx, pos)
    }
}

/// The parts of one column-parallel projection (weight, and bias when the config has one),
/// each `(key suffix, checkpoint shape, rule)`.
type Parts<'a> = Vec<(&'a str, Vec<usize>, ShardRule)>;

/// Declares a column-parallel projection named `name` stacked from `parts` of module `p`.
fn column(
    cx: &mut Recorder<'_>,
    p: &str,
    name: &str,
    parts: &Parts<'_>,
    bias: bool,
) -> Result<ColumnLinear, BuildError> {
    let declare = |cx: &mut Recorder<'_>, what: &str, with_bias: bool| {
        let parts: Vec<WeightPart> = parts
            .iter()
            .map(|(key, hf, rule)| {
                let hf = if with_bias { &hf[..1] } else { &hf[..] };
                part(format!("{p}.{key}.{what}"), hf, rule.clone())
            })
            .collect();
        if with_bias {
            cx.weight(&format!("{p}.{name}.{what}"), parts)
        } else {
            cx.linear_weight(&format!("{p}.{name}.{what}"), parts)
        }
    };
    let weight = declare(cx, "weight", false)?;
    let bias = if bias {
        Some(declare(cx, "bias", true)?)
    } else {
        None
    };
    Ok(ColumnLinear { weight, bias })
}

/// `LlamaAttention`: q/k/v projections (stacked into one by the `qkv` knob), RoPE, the cache
/// and `o_proj`.
pub struct LlamaAttention {
    qkv: QkvProjection,
    o_proj: RowLinear,
    scale: f64,
}

impl LlamaAttention {
    pub fn new(cx: &mut Recorder<'_>, cfg: &LlamaConfig, p: &str) -> Result<Self, BuildError> {
        let plan = cx.plan;
        let (h, hd, bias) = (cfg.hidden_size, cfg.head_dim, cfg.attention_bias);
        let (nh, nkv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        let q = ("q_proj", vec![nh * hd, h], plan.query_heads(0, 0));
        let k = ("k_proj", vec![nkv * hd, h], plan.kv_heads(0));
        let v = ("v_proj", vec![nkv * hd, h], plan.kv_heads(0));
        let qkv = if cx.spec.options.qkv.is_fused(false) {
            QkvProjection::Fused(column(cx, p, "qkv_proj", &vec![q, k, v], bias)?)
        } else {
            let mut one = |x: (&str, Vec<usize>, ShardRule)| {
                let name = x.0;
                column(cx, p, name, &vec![x], bias)
            };
            QkvProjection::Split {
                q: one(q)?,
                k: one(k)?,
                v: one(v)?,
            }
        };
        let o_key = format!("{p}.o_proj.weight");
        let weight = cx.linear_weight(
            &o_key,
            vec![part(&o_key, &[h, nh * hd], plan.query_heads(1, 0))],
        )?;
        let bias = if bias {
            Some(cx.replicated(&format!("{p}.o_proj.bias"), h)?)
        } else {
            None
        };
        Ok(LlamaAttention {
            qkv,
            o_proj: RowLinear { weight, bias },
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

/// `LlamaMLP`: `down_proj(silu(gate_proj(x)) · up_proj(x))`.
pub struct LlamaMLP {
    gate_up: GateUpProjection,
    down_proj: RowLinear,
}

impl LlamaMLP {
    pub fn new(cx: &mut Recorder<'_>, cfg: &LlamaConfig, p: &str) -> Result<Self, BuildError> {
        let plan = cx.plan;
        let (h, i, bias) = (cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias);
        let gate = ("gate_proj", vec![i, h], plan.intermediate(0, 0));
        let up = ("up_proj", vec![i, h], plan.intermediate(0, 0));
        let gate_up = if cx.spec.options.gate_up.is_fused(false) {
            GateUpProjection::Fused(column(cx, p, "gate_up_proj", &vec![gate, up], bias)?)
        } else {
            GateUpProjection::Split {
                gate: column(cx, p, "gate_proj", &vec![gate], bias)?,
                up: column(cx, p, "up_proj", &vec![up], bias)?,
            }
        };
        let key = format!("{p}.down_proj.weight");
        let weight = cx.linear_weight(&key, vec![part(&key, &[h, i], plan.intermediate(1, 0))])?;
        let bias = if bias {
            Some(cx.replicated(&format!("{p}.down_proj.bias"), h)?)
        } else {
            None
        };
        Ok(LlamaMLP {
            gate_up,
            down_proj: RowLinear { weight, bias },
        })
    }

    pub fn forward(&self, cx: &Recorder<'_>, x: &Tensor) -> Result<Tensor, OpError> {
        let (gate, up) = self
            .gate_up
            .forward(cx, x, ["gate_up_proj", "gate_proj", "up_proj"])?;
        let act = silu(&gate)?.mul(&up)?;
        let _p = cx.b.scope("down_proj");
        self.down_proj.forward(cx, &act)
    }
}

/// `LlamaDecoderLayer`: pre-norm attention and MLP, each with a residual connection.
pub struct LlamaDecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: LlamaAttention,
    post_attention_layernorm: RmsNorm,
    mlp: LlamaMLP,
}

impl LlamaDecoderLayer {
    pub fn new(cx: &mut Recorder<'_>, cfg: &LlamaConfig, layer: usize) -> Result<Self, BuildError> {
        let p = format!("model.layers.{layer}");
        let (h, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        let norm = |weight| RmsNorm { weight, eps };
        Ok(LlamaDecoderLayer {
            input_layernorm: norm(cx.replicated(&format!("{p}.input_layernorm.weight"), h)?),
            self_attn: LlamaAttention::new(cx, cfg, &format!("{p}.self_attn"))?,
            post_attention_layernorm: norm(
                cx.replicated(&format!("{p}.post_attention_layernorm.weight"), h)?,
            ),
            mlp: LlamaMLP::new(cx, cfg, &format!("{p}.mlp"))?,
        })
    }
}

impl DecoderLayer for LlamaDecoderLayer {
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

/// `LlamaModel`: embedding, rotary embedding, the decoder layers and the final norm, returning
/// the normed hidden state of each sequence's last position (HF with `logits_to_keep=1`).
pub struct LlamaModel {
    embed_tokens: Embedding,
    layers: Vec<LlamaDecoderLayer>,
    norm: RmsNorm,
    rotary_emb: LlamaRotaryEmbedding,
}

impl LlamaModel {
    pub fn new(cx: &mut Recorder<'_>, cfg: &LlamaConfig) -> Result<Self, BuildError> {
        let (h, v) = (cfg.hidden_size, cfg.vocab_size);
        let key = "model.embed_tokens.weight";
        let rule = cx.plan.hidden(1);
        let embed_tokens = Embedding {
            table: cx.weight(key, vec![part(key, &[v, h], rule)])?,
        };
        let layers = (0..cfg.num_hidden_layers)
            .map(|l| LlamaDecoderLayer::new(cx, cfg, l))
            .collect::<Result<_, _>>()?;
        let norm = RmsNorm {
            weight: cx.replicated("model.norm.weight", h)?,
            eps: cfg.rms_norm_eps,
        };
        Ok(LlamaModel {
            embed_tokens,
            layers,
            norm,
            rotary_emb: LlamaRotaryEmbedding::new(cfg),
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
        let (last, new_caches) = run_layers(cx, &self.layers, hidden, caches, inputs, rope, None)?;
        let _n = b.scope("norm");
        Ok((self.norm.forward(cx, &last)?, new_caches))
    }
}

/// `LlamaForCausalLM`: the model and its LM head (cut from `model.embed_tokens.weight` when
/// tied).
pub struct LlamaForCausalLM {
    model: LlamaModel,
    lm_head: LmHead,
}

impl LlamaForCausalLM {
    pub fn new(cx: &mut Recorder<'_>, cfg: &LlamaConfig) -> Result<Self, BuildError> {
        let model = LlamaModel::new(cx, cfg)?;
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
        Ok(LlamaForCausalLM { model, lm_head })
    }
}

impl CausalLm for LlamaForCausalLM {
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
