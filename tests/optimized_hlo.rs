//! What XLA:CPU makes of the cpu preset's decode graphs, read back from the compiled
//! executable (`PJRT_Executable_OptimizedProgram`): a batch-1 decode step must update each
//! cache in place and read it as it is. With the state's size-1 row dim
//! (`SingleRowState::Rows`) XLA copies every value cache twice per step, and with the query
//! first in the score dot (`DecodeScores::QueryFirst`) it transposes every key cache; both
//! cost a whole cache read and write per layer, so they grow with the cache length
//! (docs/decode-performance.md). These are structural checks of the pinned plugin's output,
//! not timings.

mod common;

use common::{client, plugin};
use phi3_neuron::build::build_graph;
use phi3_neuron::dsl::DType;
use phi3_neuron::models::decoder::{
    CpuDots, DecodeScores, GraphKind, GraphOptions, GraphSpec, SingleRowState,
};
use phi3_neuron::models::from_file;
use pjrt_runtime::CompileOptions;
use prost::Message;
use std::path::Path;
use xla_proto::{HloInstructionProto, HloModuleProto};

/// `HloModuleProtoWithConfig`, the CPU plugin's optimized-program format: the module is field 1
/// (the config, field 2, is skipped).
#[derive(Clone, PartialEq, Message)]
struct WithConfig {
    #[prost(message, optional, tag = "1")]
    module: Option<HloModuleProto>,
}

const CACHE: i64 = 256;

/// What the plugin compiled `proto` to, with `options`.
fn optimized(proto: &HloModuleProto, options: &CompileOptions) -> HloModuleProto {
    let exe = client(1).compile(proto, options).unwrap();
    let (format, bytes) = exe.optimized_program().unwrap();
    assert_eq!(
        format, "hlo_with_config",
        "the plugin's optimized-program format"
    );
    WithConfig::decode(bytes.as_slice())
        .unwrap()
        .module
        .expect("a module")
}

/// The entry instructions of XLA's optimised batch-1 decode graph (fixture `gqa`, tp 1, f32, a
/// cache of `CACHE` positions, attending to the first `bucket`) that produce a whole cache's
/// worth of elements, bitcasts aside: each layer's two in-place writes, and any copy or
/// transpose of a cache. Returns them with the layer count.
fn whole_cache_instructions(options: &GraphOptions, bucket: i64) -> (Vec<String>, usize) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/gqa");
    let cfg = from_file(&dir.join("config.json")).unwrap();
    let plan = cfg.plan(1).unwrap();
    let spec = GraphSpec::token_generation(1, CACHE, DType::F32)
        .with_bucket(bucket)
        .with_options(options.clone());
    let built = build_graph(cfg.as_ref(), &plan, &spec).unwrap();
    let module = optimized(&built.proto, &CompileOptions::default());
    let entry = module
        .computations
        .iter()
        .find(|c| c.id == module.entry_computation_id)
        .expect("the entry computation");
    let cache_elements = plan.kv_heads_per_rank * CACHE * plan.head_dim;
    let elements = |i: &HloInstructionProto| -> i64 {
        i.shape
            .as_ref()
            .map_or(0, |s| s.dimensions.iter().product())
    };
    let moves = entry
        .instructions
        .iter()
        .filter(|i| !matches!(i.opcode.as_str(), "parameter" | "bitcast" | "tuple"))
        .filter(|i| elements(i) == cache_elements)
        .map(|i| format!("{} {}", i.opcode, i.name))
        .collect();
    (moves, cfg.num_layers())
}

#[test]
fn batch_one_decode_updates_each_cache_in_place() {
    let _ = plugin();
    let cpu = GraphOptions::cpu();
    assert_eq!(cpu.single_row_state, SingleRowState::Squeezed);
    assert_eq!(cpu.decode_scores, DecodeScores::KeysFirst);
    // Attending to the whole cache, and to a bucket of it (the prefix is cut from the updated
    // cache, which XLA may not fuse into the cut a second time).
    for bucket in [CACHE, CACHE / 4] {
        let (moves, layers) = whole_cache_instructions(&cpu, bucket);
        assert_eq!(
            moves.len(),
            2 * layers,
            "bucket {bucket}: the cpu preset's batch-1 decode should only write its {} caches in \
             place: {moves:?}",
            2 * layers
        );
        assert!(
            moves.iter().all(|m| m.starts_with("fusion ")),
            "bucket {bucket}: in-place writes are fusions: {moves:?}"
        );
    }

    // Each form on its own is needed: without either, XLA moves whole caches.
    let layers = whole_cache_instructions(&cpu, CACHE).1;
    for (what, options) in [
        (
            "the row dim",
            GraphOptions {
                single_row_state: SingleRowState::Rows,
                ..cpu.clone()
            },
        ),
        (
            "the query first",
            GraphOptions {
                decode_scores: DecodeScores::QueryFirst,
                ..cpu.clone()
            },
        ),
    ] {
        let (more, _) = whole_cache_instructions(&options, CACHE);
        assert!(
            more.len() > 2 * layers,
            "with {what}, XLA was expected to copy or transpose caches: {more:?}"
        );
    }
}

/// `CpuDots::XnnpackDecode` (the f32 cpu preset's at one rank) is a compile option that each
/// token-generation graph's manifest entry lists and the runtime passes on; the HLO is the
/// same. The plugin runs the dots themselves through XNNPACK without marking them in the
/// optimised module (BENCHMARKS.md times them), but the same options also make XNNPACK fusions
/// of the element-wise ops around them, which it does mark: with the options there are some,
/// without them none.
#[test]
fn xnnpack_dots_are_a_compile_option_that_reaches_the_compiler() {
    let _ = plugin();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/gqa");
    let cfg = from_file(&dir.join("config.json")).unwrap();
    let plan = cfg.plan(1).unwrap();
    let cpu = GraphOptions::cpu();
    assert_eq!(cpu.cpu_dots, CpuDots::XnnpackDecode);
    assert_eq!(cpu.clone().at_tp(2).cpu_dots, CpuDots::Xla, "one rank only");
    assert_eq!(GraphOptions::cpu_for(DType::BF16).cpu_dots, CpuDots::Xla);
    // The sets `phi3 generate` builds keep XLA's dots: the plugin cannot serialize XNNPACK
    // fusions, and the runtime's executable cache needs that.
    assert_eq!(
        GraphOptions::cpu_runtime_for(DType::F32).cpu_dots,
        CpuDots::Xla
    );
    let spec = GraphSpec::token_generation(4, CACHE, DType::F32).with_options(cpu.clone());
    let built = build_graph(cfg.as_ref(), &plan, &spec).unwrap();
    let xnn_fusions = |options: &CompileOptions| -> usize {
        let module = optimized(&built.proto, options);
        (module.computations.iter())
            .flat_map(|c| &c.instructions)
            .filter(|i| String::from_utf8_lossy(&i.backend_config).contains("\"__xnn_fusion\""))
            .count()
    };
    let xla_options = cpu.cpu_dots.xla_options(GraphKind::TokenGeneration);
    let with = xnn_fusions(&CompileOptions::default().with_xla_options(&xla_options));
    assert!(with > 0, "no XNNPACK fusion with {xla_options:?}");
    assert_eq!(xnn_fusions(&CompileOptions::default()), 0, "by default");
    // Context encoding keeps XLA's own choice; asking for XNNPACK everywhere gives it too.
    assert!(cpu
        .cpu_dots
        .xla_options(GraphKind::ContextEncoding)
        .is_empty());
    assert_eq!(
        CpuDots::Xnnpack.xla_options(GraphKind::ContextEncoding),
        xla_options
    );

    // An option value the plugin does not know fails the compile, naming the option.
    let bad = CompileOptions::default().with_xla_options(
        &[(
            "xla_cpu_experimental_xnn_fusion_type".to_string(),
            "NO_SUCH_FUSION".to_string(),
        )]
        .into(),
    );
    let err = client(1)
        .compile(&built.proto, &bad)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("xla_cpu_experimental_xnn_fusion_type"),
        "{err}"
    );
}
