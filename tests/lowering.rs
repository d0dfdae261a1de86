//! Lowering to `HloModuleProto` obeys XLA's module rules (hlo.md §2), the text printer prints
//! XLA's format, and the output is byte-for-byte deterministic, also across processes.

use phi3_neuron::dsl::*;
use phi3_neuron::hlo::{lower, print_module, LowerOptions, PrintOptions};
use prost::Message;
use std::collections::HashSet;
use xla_proto::HloModuleProto;

/// A graph touching most ops, including ones that generate sub-computations.
fn sample_graph() -> Graph {
    let b = GraphBuilder::new("sample");
    let _m = b.scope("model");
    let ids = b.parameter("input_ids", DType::S32, &[1, 4]).unwrap();
    let table = b.parameter("embed", DType::F32, &[16, 8]).unwrap();
    let cache = b.parameter("cache", DType::F32, &[1, 6, 8]).unwrap();
    let h = table.take(&ids).unwrap();
    let sq = h.mul(&h).unwrap();
    let ms = sq.sum(&[-1]).unwrap().reshape(&[1, 4, 1]).unwrap();
    let n = h
        .mul(&ms.add_scalar(1e-5).unwrap().rsqrt().unwrap())
        .unwrap();
    let r = n
        .all_reduce(ReduceKind::Sum, &ReplicaGroups::all(1))
        .unwrap();
    let z = b.scalar(DType::S32, 0.0).unwrap();
    let one = b.scalar(DType::S32, 1.0).unwrap();
    let new_cache = cache.dynamic_update_slice(&r, &[&z, &one, &z]).unwrap();
    let top = r.argmax(-1, DType::S32).unwrap();
    let logits = r.slice_dim(1, 3, 4).unwrap().reshape(&[1, 8]).unwrap();
    b.alias_output(2, &cache).unwrap();
    b.finish(&[&logits, &top, &new_cache]).unwrap()
}

fn module() -> HloModuleProto {
    lower(&sample_graph(), &LowerOptions::default()).unwrap()
}

#[test]
fn module_obeys_xla_rules() {
    let m = module();
    let mut names = HashSet::new();
    let mut seen_comps = HashSet::new();
    for c in &m.computations {
        let mut ids = HashSet::new();
        for i in &c.instructions {
            assert!(
                names.insert(i.name.clone()),
                "instruction name {} is not module-unique",
                i.name
            );
            for o in &i.operand_ids {
                assert!(ids.contains(o), "{} uses %{o} before it is defined", i.name);
            }
            for callee in &i.called_computation_ids {
                assert!(
                    seen_comps.contains(callee),
                    "{} calls a computation listed after it",
                    i.name
                );
            }
            assert!(ids.insert(i.id), "duplicate id {} in {}", i.id, c.name);
        }
        assert!(ids.contains(&c.root_id));
        let ps = c.program_shape.as_ref().unwrap();
        assert_eq!(ps.parameters.len(), ps.parameter_names.len());
        assert!(seen_comps.insert(c.id));
    }
    let entry = m.computations.last().unwrap();
    assert_eq!(m.entry_computation_id, entry.id);
    assert_eq!(entry.name, "main");
    let host = m.host_program_shape.as_ref().unwrap();
    assert_eq!(host.parameter_names, vec!["input_ids", "embed", "cache"]);
    assert_eq!(host.parameters.len(), 3);
    assert_eq!(host.result.as_ref().unwrap().tuple_shapes.len(), 3);
    let alias = &m.input_output_alias.as_ref().unwrap().entries[0];
    assert_eq!(
        (alias.output_shape_index.clone(), alias.parameter_number),
        (vec![2], 2)
    );
    // Reducers are generated once per (kind, dtype) and shared; a collective's reducer is
    // never shared with a reduce's.
    let comp_names: Vec<&str> = m.computations.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        comp_names,
        vec!["add_f32", "collective_add_f32", "argmax_f32_s32", "main"]
    );
}

#[test]
fn metadata_and_neuron_io_names() {
    let m = module();
    let entry = m.computations.last().unwrap();
    let param = entry
        .instructions
        .iter()
        .find(|i| i.opcode == "parameter" && i.parameter_number == 1)
        .unwrap();
    assert_eq!(param.name, "main.embed");
    assert_eq!(
        param.frontend_attributes.as_ref().unwrap().map["neff_input_names"],
        "input1"
    );
    let root = entry
        .instructions
        .iter()
        .find(|i| i.id == entry.root_id)
        .unwrap();
    assert_eq!(root.opcode, "tuple");
    assert_eq!(
        root.frontend_attributes.as_ref().unwrap().map["neff_output_names"],
        "output0,output1,output2"
    );
    let gather = entry
        .instructions
        .iter()
        .find(|i| i.opcode == "gather")
        .unwrap();
    let md = gather.metadata.as_ref().unwrap();
    assert_eq!(md.op_name, "model/gather");
    assert_eq!(md.source_file, "tests/lowering.rs");
    assert!(md.source_line > 0);
    let plain = lower(
        &sample_graph(),
        &LowerOptions {
            neff_io_names: false,
            metadata: false,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(plain
        .computations
        .iter()
        .flat_map(|c| &c.instructions)
        .all(|i| i.metadata.is_none() && i.frontend_attributes.is_none()));
}

#[test]
fn text_matches_xla_format() {
    let b = GraphBuilder::new("text");
    let x = b.parameter("x", DType::F32, &[2, 3]).unwrap();
    let y = b.parameter("y", DType::F32, &[3]).unwrap();
    let s = x.add(&y).unwrap();
    let r = s.sum(&[1]).unwrap();
    let t = x.transpose(&[1, 0]).unwrap();
    let c = b.constant_f64(DType::F32, &[2], &[0.5, 1e-5]).unwrap();
    let g = b.finish(&[&r, &t, &c]).unwrap();
    let m = lower(
        &g,
        &LowerOptions {
            neff_io_names: false,
            metadata: false,
            ..Default::default()
        },
    )
    .unwrap();
    let text = print_module(&m, &PrintOptions::default());
    let expected = "\
HloModule text, entry_computation_layout={(f32[2,3]{1,0}, f32[3]{0})->(f32[2]{0}, f32[3,2]{1,0}, f32[2]{0})}

%add_f32 (add_f32.lhs: f32[], add_f32.rhs: f32[]) -> f32[] {
  %add_f32.lhs = f32[] parameter(0)
  %add_f32.rhs = f32[] parameter(1)
  ROOT %add.8 = f32[] add(%add_f32.lhs, %add_f32.rhs)
}

ENTRY %main (main.x: f32[2,3], main.y: f32[3]) -> (f32[2], f32[3,2], f32[2]) {
  %main.x = f32[2,3]{1,0} parameter(0)
  %main.y = f32[3]{0} parameter(1)
  %broadcast.3 = f32[2,3]{1,0} broadcast(%main.y), dimensions={1}
  %add.4 = f32[2,3]{1,0} add(%main.x, %broadcast.3)
  %constant.9 = f32[] constant(0)
  %reduce.10 = f32[2]{0} reduce(%add.4, %constant.9), dimensions={1}, to_apply=%add_f32
  %transpose.11 = f32[3,2]{1,0} transpose(%main.x), dimensions={1,0}
  %constant.12 = f32[2]{0} constant({0.5, 1e-05})
  ROOT %tuple.13 = (f32[2]{0}, f32[3,2]{1,0}, f32[2]{0}) tuple(%reduce.10, %transpose.11, %constant.12)
}

";
    assert_eq!(text, expected, "\n--- got ---\n{text}");
}

#[test]
fn lowering_is_deterministic_in_process() {
    let a = module().encode_to_vec();
    let b = module().encode_to_vec();
    assert_eq!(a, b);
    let ta = print_module(&module(), &PrintOptions::default());
    assert_eq!(ta, print_module(&module(), &PrintOptions::default()));
}

/// Runs this test binary again as a child process that writes its bytes to a file, so hash
/// seeds, allocation addresses and thread ids all differ between the two builds.
#[test]
fn lowering_is_deterministic_across_processes() {
    if let Ok(path) = std::env::var("PHI3_DETERMINISM_OUT") {
        let m = module();
        let mut out = m.encode_to_vec();
        out.extend(print_module(&m, &PrintOptions::default()).into_bytes());
        std::fs::write(path, out).unwrap();
        return;
    }
    let dir = std::env::temp_dir().join(format!("phi3-determinism-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut outputs = Vec::new();
    for run in 0..2 {
        let path = dir.join(format!("run{run}.bin"));
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "lowering_is_deterministic_across_processes",
                "--test-threads=1",
            ])
            .env("PHI3_DETERMINISM_OUT", &path)
            // The child's own test summary would be counted as a second run of this test.
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        outputs.push(std::fs::read(&path).unwrap());
    }
    std::fs::remove_dir_all(&dir).ok();
    assert!(!outputs[0].is_empty());
    assert_eq!(
        outputs[0], outputs[1],
        "two processes produced different bytes"
    );
    let m = module();
    let mut here = m.encode_to_vec();
    here.extend(print_module(&m, &PrintOptions::default()).into_bytes());
    assert_eq!(
        outputs[0], here,
        "the child's bytes differ from this process's"
    );
}

#[test]
fn module_checker_reports_every_broken_rule() {
    use phi3_neuron::hlo::check::check_module;
    let good = module();
    assert_eq!(check_module(&good), Ok(()));
    let mut bad = good.clone();
    // 1: a duplicate instruction name; 2: the caller before its callee; 3: no parameter names.
    let entry = bad.computations.len() - 1;
    let dup = bad.computations[entry].instructions[1].name.clone();
    bad.computations[entry].instructions[2].name = dup;
    let callee = bad.computations.remove(0);
    bad.computations.push(callee);
    bad.host_program_shape
        .as_mut()
        .unwrap()
        .parameter_names
        .clear();
    let errors = check_module(&bad).unwrap_err();
    let text = errors.messages().join("\n");
    assert!(text.contains("is not module-unique"), "{text}");
    assert!(text.contains("which is not listed before it"), "{text}");
    assert!(
        text.contains("host_program_shape has 3 parameters but 0 names"),
        "{text}"
    );
}
