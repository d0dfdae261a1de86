//! End-to-end checks against the CPU plugin: transfers, compile and execute, error surfacing,
//! option and argument validation, donation, and concurrent use.
//!
//! Kept apart from other tests in its own binary because a plugin CHECK failure aborts the
//! process (which is why the runtime validates options in Rust).

mod common;

use common::{aliases, cpu_client, f32s, module, shape, Comp};
use half::{bf16, f16};
use pjrt_runtime::{
    Arg, Buffer, Client, CompileOptions, ElementType, Error, ErrorCode, HostBuffer,
};
use prost::Message;
use xla_proto::{HloModuleProto, PrimitiveType};

/// Distinct, type-appropriate bytes for `n` elements (PRED must be 0 or 1).
fn sample_bytes(ty: ElementType, n: usize) -> Vec<u8> {
    let size = ty.byte_size();
    (0..n * size)
        .map(|i| match ty {
            ElementType::Pred => ((i * 7 + 1) % 3 == 0) as u8,
            // Keep float exponents away from NaN patterns so bytes compare exactly.
            ElementType::F16 | ElementType::BF16 | ElementType::F32 | ElementType::F64
                if i % size == size - 1 =>
            {
                0x3f
            }
            _ => (i * 37 + 11) as u8,
        })
        .collect()
}

#[test]
fn host_device_host_round_trip_for_every_element_type() {
    let client = cpu_client(2);
    for ty in ElementType::ALL {
        for dims in [&[2i64, 3][..], &[][..], &[0, 4][..], &[5][..]] {
            let n: i64 = dims.iter().product();
            let bytes = sample_bytes(ty, n as usize);
            let buf = client.buffer_from_host(&bytes, ty, dims, 1).unwrap();
            assert_eq!(buf.element_type(), ty);
            assert_eq!(buf.dims(), dims);
            assert_eq!(buf.device().index(), 1);
            let host = buf.to_host().unwrap();
            assert_eq!(
                host,
                HostBuffer {
                    ty,
                    dims: dims.to_vec(),
                    bytes
                },
                "{ty}{dims:?}"
            );
        }
    }
}

#[test]
fn typed_round_trips() {
    let client = cpu_client(1);
    let f = [1.5f32, -2.0, 3.25, 0.0, 1e-3, 7.0];
    let b = client.buffer_from_slice(&f, &[2, 3], 0).unwrap();
    assert_eq!(b.to_vec::<f32>().unwrap(), f);

    let i = [i32::MIN, -1, 0, 1, i32::MAX];
    assert_eq!(
        client
            .buffer_from_slice(&i, &[5], 0)
            .unwrap()
            .to_vec::<i32>()
            .unwrap(),
        i
    );

    let h: Vec<bf16> = [1.0f32, -0.5, 3.0]
        .iter()
        .map(|&x| bf16::from_f32(x))
        .collect();
    let b = client.buffer_from_slice(&h, &[3], 0).unwrap();
    assert_eq!(b.element_type(), ElementType::BF16);
    assert_eq!(b.to_vec::<bf16>().unwrap(), h);

    let h: Vec<f16> = [1.0f32, -0.5, 65504.0]
        .iter()
        .map(|&x| f16::from_f32(x))
        .collect();
    assert_eq!(
        client
            .buffer_from_slice(&h, &[3], 0)
            .unwrap()
            .to_vec::<f16>()
            .unwrap(),
        h
    );

    let p = [true, false, true];
    assert_eq!(
        client
            .buffer_from_slice(&p, &[3], 0)
            .unwrap()
            .to_vec::<bool>()
            .unwrap(),
        p
    );
    assert_eq!(
        client
            .buffer_from_scalar(42u64, 0)
            .unwrap()
            .to_vec::<u64>()
            .unwrap(),
        [42]
    );

    // Reading with the wrong type is an error, not a reinterpretation.
    let err = b.to_vec::<u16>().unwrap_err();
    assert!(
        err.to_string().contains("cannot read a bf16 buffer as u16"),
        "{err}"
    );
}

#[test]
fn transfer_arguments_are_validated_before_the_plugin_sees_them() {
    let client = cpu_client(2);
    let err = client
        .buffer_from_host(&[0; 20], ElementType::F32, &[2, 3], 0)
        .unwrap_err();
    assert!(err.to_string().contains("needs 24 bytes, got 20"), "{err}");
    let err = client.buffer_from_slice(&[1.0f32], &[1], 2).unwrap_err();
    assert!(
        err.to_string().contains("device index 2 out of range"),
        "{err}"
    );
    let err = client.buffer_from_slice(&[1.0f32], &[-1], 0).unwrap_err();
    assert!(err.to_string().contains("negative dimension"), "{err}");
}

#[test]
fn compile_and_execute_add() {
    let client = cpu_client(1);
    let exe = client
        .compile(&common::add_module(), &CompileOptions::default())
        .unwrap();
    assert_eq!(exe.num_outputs(), 1);
    assert_eq!(exe.num_parameters(), Some(2));
    assert_eq!(exe.devices().len(), 1);
    assert!(exe.aliased_parameters().is_empty());

    let a = client
        .buffer_from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3], 0)
        .unwrap();
    let b = client
        .buffer_from_slice(&[10.0f32, 20.0, 30.0, 40.0, 50.0, 60.0], &[2, 3], 0)
        .unwrap();
    let out = exe
        .execute(vec![vec![Arg::Borrow(&a), Arg::Borrow(&b)]])
        .unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].len(), 1);
    assert_eq!(out[0][0].dims(), [2, 3]);
    assert_eq!(out[0][0].element_type(), ElementType::F32);
    assert_eq!(
        out[0][0].to_vec::<f32>().unwrap(),
        [11.0, 22.0, 33.0, 44.0, 55.0, 66.0]
    );
    // Inputs that were only borrowed are untouched.
    assert_eq!(a.to_vec::<f32>().unwrap(), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);

    // The same module as bytes, with the single-device shorthand.
    let exe = client
        .compile_bytes(
            &common::add_module().encode_to_vec(),
            &CompileOptions::default(),
        )
        .unwrap();
    let out = exe.execute_one(vec![(&a).into(), (&a).into()]).unwrap();
    assert_eq!(
        out[0].to_vec::<f32>().unwrap(),
        [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]
    );
}

#[test]
fn tuple_root_is_untupled() {
    let client = cpu_client(1);
    let mut c = Comp::new("main", 0);
    let a = c.param(f32s(&[3]));
    let b = c.param(f32s(&[3]));
    let sum = c.inst("add", f32s(&[3]), &[a, b], |_| {});
    let prod = c.inst("multiply", f32s(&[3]), &[a, b], |_| {});
    let t = c.inst(
        "tuple",
        common::tuple_shape(vec![f32s(&[3]), f32s(&[3])]),
        &[sum, prod],
        |_| {},
    );
    let exe = client
        .compile(
            &module("tuple_root", vec![c.finish(t)]),
            &CompileOptions::default(),
        )
        .unwrap();
    assert_eq!(exe.num_outputs(), 2);
    let x = client
        .buffer_from_slice(&[1.0f32, 2.0, 3.0], &[3], 0)
        .unwrap();
    let y = client
        .buffer_from_slice(&[4.0f32, 5.0, 6.0], &[3], 0)
        .unwrap();
    let out = exe.execute_one(vec![(&x).into(), (&y).into()]).unwrap();
    assert_eq!(out[0].to_vec::<f32>().unwrap(), [5.0, 7.0, 9.0]);
    assert_eq!(out[1].to_vec::<f32>().unwrap(), [4.0, 10.0, 18.0]);
}

fn pjrt_error(err: Error) -> (ErrorCode, String) {
    match err {
        Error::Pjrt { code, message } => (code, message),
        other => panic!("expected a PJRT error, got {other:?}"),
    }
}

#[test]
fn xla_shape_error_surfaces_intact() {
    let client = cpu_client(1);
    let mut c = Comp::new("main", 0);
    let a = c.param(f32s(&[2, 3]));
    let b = c.param(f32s(&[2, 3]));
    // Declared f32[2,4]; XLA infers f32[2,3].
    let sum = c.inst("add", f32s(&[2, 4]), &[a, b], |_| {});
    let err = client
        .compile(
            &module("bad_shape", vec![c.finish(sum)]),
            &CompileOptions::default(),
        )
        .unwrap_err();
    let text = err.to_string();
    let (code, message) = pjrt_error(err);
    assert!(
        message.contains(
            "Expected instruction to have shape equal to f32[2,3], actual shape is f32[2,4]"
        ),
        "{message}"
    );
    // The whole message, including the offending instruction's name, is kept.
    assert!(message.contains("main.add.3"), "{message}");
    // Verifier failures come back as INTERNAL, not INVALID_ARGUMENT.
    assert_eq!(code, ErrorCode::Internal, "{message}");
    assert!(text.starts_with("PJRT error INTERNAL: "), "{text}");
}

#[test]
fn missing_host_program_shape_is_a_ret_check_error() {
    let client = cpu_client(1);
    let mut m = common::add_module();
    m.host_program_shape = None;
    let (code, message) = pjrt_error(client.compile(&m, &CompileOptions::default()).unwrap_err());
    assert!(
        message.contains("proto_.has_host_program_shape()"),
        "{message}"
    );
    assert!(message.contains("RET_CHECK failure"), "{message}");
    assert_eq!(code, ErrorCode::Internal, "{message}");
}

#[test]
fn compile_options_are_validated_in_rust() {
    let client = cpu_client(2);
    let m = common::add_module();
    let check = |options: CompileOptions, needle: &str| {
        for err in [
            client.compile(&m, &options).unwrap_err(),
            // Validation comes before decoding: even garbage bytes get the options error.
            client.compile_bytes(b"\xff\xff", &options).unwrap_err(),
        ] {
            assert!(matches!(err, Error::InvalidCompileOptions(_)), "{err:?}");
            assert!(err.to_string().contains(needle), "{err}");
        }
    };
    check(
        CompileOptions::replicas(0),
        "num_replicas must be at least 1, got 0",
    );
    check(
        CompileOptions::replicas(-3),
        "num_replicas must be at least 1, got -3",
    );
    check(
        CompileOptions::replicas(3),
        "num_replicas = 3 but the client has only 2 addressable devices",
    );
    check(
        CompileOptions {
            num_partitions: 2,
            ..CompileOptions::default()
        },
        "num_partitions must be 1",
    );
    check(
        CompileOptions {
            num_partitions: 0,
            ..CompileOptions::default()
        },
        "num_partitions must be 1",
    );
    let err = client
        .compile_bytes(b"\xff\xff", &CompileOptions::default())
        .unwrap_err();
    assert!(matches!(err, Error::Decode(_)), "{err:?}");
}

#[test]
fn execute_arguments_are_validated_in_rust() {
    let client = cpu_client(2);
    let exe = client
        .compile(&common::add_module(), &CompileOptions::default())
        .unwrap();
    let ok = client.buffer_from_slice(&[0.0f32; 6], &[2, 3], 0).unwrap();
    let on_dev1 = client.buffer_from_slice(&[0.0f32; 6], &[2, 3], 1).unwrap();
    let wrong_dims = client.buffer_from_slice(&[0.0f32; 6], &[3, 2], 0).unwrap();
    let wrong_type = client.buffer_from_slice(&[0i32; 6], &[2, 3], 0).unwrap();
    let other = cpu_client(1);
    let foreign = other.buffer_from_slice(&[0.0f32; 6], &[2, 3], 0).unwrap();

    let cases: Vec<(Vec<Vec<Arg>>, &str)> = vec![
        (
            vec![],
            "expected one argument list per device (1 devices), got 0",
        ),
        (
            vec![vec![(&ok).into()]],
            "device 0: expected 2 arguments, got 1",
        ),
        (
            vec![vec![(&ok).into(), (&on_dev1).into()]],
            "argument 1: buffer is on device id 1 but this slot runs on device id 0",
        ),
        (
            vec![vec![(&ok).into(), (&wrong_dims).into()]],
            "argument 1: parameter is f32[2, 3] but the buffer is f32[3, 2]",
        ),
        (
            vec![vec![(&wrong_type).into(), (&ok).into()]],
            "argument 0: parameter is f32[2, 3] but the buffer is s32[2, 3]",
        ),
        (
            vec![vec![(&ok).into(), (&foreign).into()]],
            "buffer belongs to another client",
        ),
    ];
    for (args, needle) in cases {
        let err = exe.execute(args).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        assert!(err.to_string().contains(needle), "{err}");
    }
}

/// `cache f32[4,3]`, `update f32[1,3]`, `row s32[]` -> `dynamic-update-slice(cache, update, row, 0)`,
/// with the result (or, if `tuple`, element {0} of `(result, -update)`) aliased to parameter 0.
fn kv_update_module(tuple: bool) -> HloModuleProto {
    let mut c = Comp::new("main", 0);
    let cache = c.param(f32s(&[4, 3]));
    let update = c.param(f32s(&[1, 3]));
    let row = c.param(shape(ElementType::S32, &[]));
    let zero = c.s32_constant(0);
    let dus = c.inst(
        "dynamic-update-slice",
        f32s(&[4, 3]),
        &[cache, update, row, zero],
        |_| {},
    );
    let (root, alias_index): (i64, &[i64]) = if tuple {
        let neg = c.inst("negate", f32s(&[1, 3]), &[update], |_| {});
        let t = c.inst(
            "tuple",
            common::tuple_shape(vec![f32s(&[4, 3]), f32s(&[1, 3])]),
            &[dus, neg],
            |_| {},
        );
        (t, &[0])
    } else {
        (dus, &[])
    };
    let mut m = module("kv_update", vec![c.finish(root)]);
    m.input_output_alias = Some(aliases(&[(alias_index, 0)]));
    m
}

/// The device address behind a buffer, to observe whether PJRT reused a donated buffer's
/// memory.
fn device_address(_client: &Client, buffer: &Buffer) -> usize {
    buffer.device_pointer().expect("PJRT_Buffer_UnsafePointer")
}

fn expected_after_update(row: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..12).map(|x| x as f32).collect();
    v[row * 3..row * 3 + 3].copy_from_slice(&[100.0, 101.0, 102.0]);
    v
}

#[test]
fn donation_reuses_the_aliased_input() {
    let client = cpu_client(1);
    for tuple in [false, true] {
        let exe = client
            .compile(&kv_update_module(tuple), &CompileOptions::default())
            .unwrap();
        assert_eq!(exe.aliased_parameters(), [0]);
        assert_eq!(exe.num_outputs(), if tuple { 2 } else { 1 });
        let initial: Vec<f32> = (0..12).map(|x| x as f32).collect();
        let cache = client.buffer_from_slice(&initial, &[4, 3], 0).unwrap();
        let update = client
            .buffer_from_slice(&[100.0f32, 101.0, 102.0], &[1, 3], 0)
            .unwrap();
        let row = client.buffer_from_scalar(2i32, 0).unwrap();
        let cache_address = device_address(&client, &cache);

        let out = exe
            .execute_one(vec![Arg::Donate(cache), (&update).into(), (&row).into()])
            .unwrap();
        // `cache` is moved: the compiler rejects any later use of it.
        assert_eq!(out[0].to_vec::<f32>().unwrap(), expected_after_update(2));
        assert_eq!(
            device_address(&client, &out[0]),
            cache_address,
            "the output should live in the donated buffer's memory (tuple={tuple})"
        );
        if tuple {
            assert_eq!(out[1].to_vec::<f32>().unwrap(), [-100.0, -101.0, -102.0]);
        }

        // The KV-cache pattern: feed the output back in as the next donated input.
        let mut state = out.into_iter().next().unwrap();
        for step in 0..3i32 {
            let row = client.buffer_from_scalar(step, 0).unwrap();
            let before = device_address(&client, &state);
            state = exe
                .execute_one(vec![Arg::Donate(state), (&update).into(), (&row).into()])
                .unwrap()
                .into_iter()
                .next()
                .unwrap();
            assert_eq!(device_address(&client, &state), before);
        }
        let v = state.to_vec::<f32>().unwrap();
        assert_eq!(&v[..9], [100.0, 101.0, 102.0].repeat(3));
    }
}

#[test]
fn borrowing_an_aliased_input_copies_and_keeps_it() {
    let client = cpu_client(1);
    for tuple in [false, true] {
        let exe = client
            .compile(&kv_update_module(tuple), &CompileOptions::default())
            .unwrap();
        let initial: Vec<f32> = (0..12).map(|x| x as f32).collect();
        let cache = client.buffer_from_slice(&initial, &[4, 3], 0).unwrap();
        let update = client
            .buffer_from_slice(&[100.0f32, 101.0, 102.0], &[1, 3], 0)
            .unwrap();
        let row = client.buffer_from_scalar(1i32, 0).unwrap();

        let out = exe
            .execute_one(vec![Arg::Borrow(&cache), (&update).into(), (&row).into()])
            .unwrap();
        assert_eq!(out[0].to_vec::<f32>().unwrap(), expected_after_update(1));
        assert_ne!(
            device_address(&client, &out[0]),
            device_address(&client, &cache)
        );
        // The borrowed input is still readable and unchanged; it can be used again.
        assert_eq!(cache.to_vec::<f32>().unwrap(), initial);
        let again = exe
            .execute_one(vec![Arg::Borrow(&cache), (&update).into(), (&row).into()])
            .unwrap();
        assert_eq!(again[0].to_vec::<f32>().unwrap(), expected_after_update(1));
        assert_eq!(cache.to_vec::<f32>().unwrap(), initial);
    }
}

#[test]
fn handles_work_across_threads() {
    let client = cpu_client(1);
    let exe = client
        .compile(&common::add_module(), &CompileOptions::default())
        .unwrap();
    let shared = client.buffer_from_slice(&[1.0f32; 6], &[2, 3], 0).unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (client, exe, shared) = (&client, &exe, &shared);
            s.spawn(move || {
                for i in 0..8 {
                    let x = (t * 100 + i) as f32;
                    let mine = client.buffer_from_slice(&[x; 6], &[2, 3], 0).unwrap();
                    let out = exe
                        .execute_one(vec![(&mine).into(), shared.into()])
                        .unwrap();
                    assert_eq!(out[0].to_vec::<f32>().unwrap(), [x + 1.0; 6]);
                }
            });
        }
    });
    // A buffer can also move to another thread and be dropped there.
    let moved = client.buffer_from_slice(&[3.0f32], &[1], 0).unwrap();
    std::thread::spawn(move || assert_eq!(moved.to_vec::<f32>().unwrap(), [3.0]))
        .join()
        .unwrap();
}

#[test]
fn buffers_and_executables_outlive_their_client_handle() {
    let client = cpu_client(1);
    let exe = client
        .compile(&common::add_module(), &CompileOptions::default())
        .unwrap();
    let a = client.buffer_from_slice(&[2.0f32; 6], &[2, 3], 0).unwrap();
    drop(client);
    let out = exe.execute_one(vec![(&a).into(), (&a).into()]).unwrap();
    drop(exe);
    drop(a);
    assert_eq!(out[0].to_vec::<f32>().unwrap(), [4.0; 6]);
}

#[test]
fn pred_type_maps_through_compile() {
    // A compare produces PRED: checks the PJRT -> ElementType mapping on an output buffer.
    let client = cpu_client(1);
    let mut c = Comp::new("main", 0);
    let a = c.param(f32s(&[4]));
    let b = c.param(f32s(&[4]));
    let gt = c.inst("compare", shape(ElementType::Pred, &[4]), &[a, b], |i| {
        i.comparison_direction = "GT".into()
    });
    let exe = client
        .compile(
            &module("cmp", vec![c.finish(gt)]),
            &CompileOptions::default(),
        )
        .unwrap();
    let x = client
        .buffer_from_slice(&[1.0f32, 5.0, 3.0, 0.0], &[4], 0)
        .unwrap();
    let y = client
        .buffer_from_slice(&[2.0f32, 4.0, 3.0, -1.0], &[4], 0)
        .unwrap();
    let out = exe.execute_one(vec![(&x).into(), (&y).into()]).unwrap();
    assert_eq!(out[0].element_type(), ElementType::Pred);
    assert_eq!(out[0].to_vec::<bool>().unwrap(), [false, true, false, true]);
    let _ = PrimitiveType::Pred;
}

#[test]
fn owned_host_bytes_become_the_buffer_without_a_copy() {
    let client = cpu_client(1);
    let mut bytes = pjrt_runtime::HostBytes::zeroed(6 * 4);
    for (i, c) in bytes.as_mut_slice().chunks_exact_mut(4).enumerate() {
        c.copy_from_slice(&(i as f32 * 1.5).to_le_bytes());
    }
    let address = bytes.address();
    let b = client
        .buffer_from_host_bytes(bytes, ElementType::F32, &[2, 3], 0)
        .unwrap();
    // XLA:CPU keeps aligned dense host memory as the buffer's storage.
    assert_eq!(b.device_pointer().unwrap(), address);
    assert_eq!(b.to_vec::<f32>().unwrap(), [0.0, 1.5, 3.0, 4.5, 6.0, 7.5]);
    // It serves as an execution input like any other buffer.
    let exe = client
        .compile(&common::add_module(), &CompileOptions::default())
        .unwrap();
    let out = exe.execute_one(vec![(&b).into(), (&b).into()]).unwrap();
    assert_eq!(
        out[0].to_vec::<f32>().unwrap(),
        [0.0, 3.0, 6.0, 9.0, 12.0, 15.0]
    );
    drop(b);
    // Sizes are checked before the plugin sees the memory.
    let err = client
        .buffer_from_host_bytes(
            pjrt_runtime::HostBytes::zeroed(8),
            ElementType::F32,
            &[3],
            0,
        )
        .unwrap_err();
    assert!(err.to_string().contains("needs 12 bytes"), "{err}");
}

#[test]
fn serialized_executables_load_without_compiling() {
    let client = cpu_client(1);
    let module = common::add_module();
    let exe = client.compile(&module, &CompileOptions::default()).unwrap();
    let bytes = exe.serialize().unwrap();
    assert!(!bytes.is_empty());
    let loaded = client
        .load_serialized(&bytes, &module.encode_to_vec())
        .unwrap();
    assert_eq!(loaded.num_outputs(), 1);
    assert_eq!(loaded.num_parameters(), Some(2));
    let a = client
        .buffer_from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3], 0)
        .unwrap();
    let out = loaded.execute_one(vec![(&a).into(), (&a).into()]).unwrap();
    assert_eq!(
        out[0].to_vec::<f32>().unwrap(),
        [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]
    );
    // Garbage is an error from the plugin, not a crash.
    assert!(client
        .load_serialized(b"not an executable", &module.encode_to_vec())
        .is_err());
}
