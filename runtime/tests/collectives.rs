//! Collectives across the CPU plugin's in-process devices: a client with `cpu_device_count = N`,
//! a module compiled with `num_replicas = N`, and one argument list per device (pjrt.md §3).

mod common;

use common::{cpu_client, f32s, module, replica_groups, scalar_add, Comp};
use pjrt_runtime::{Arg, Buffer, Client, CompileOptions, ElementType};
use xla_proto::HloModuleProto;

/// `f32[dims] -> all-reduce(sum)` over `groups` (empty: all replicas).
fn all_reduce_module(dims: &[i64], groups: &[&[i64]]) -> HloModuleProto {
    let add = scalar_add("add", 0, ElementType::F32);
    let mut c = Comp::new("main", 1);
    let p = c.param(f32s(dims));
    let ar = c.inst("all-reduce", f32s(dims), &[p], |i| {
        i.called_computation_ids = vec![add.id];
        i.replica_groups = replica_groups(groups);
    });
    module("all_reduce", vec![add, c.finish(ar)])
}

/// Uploads `per_device[d]` to device `d` and runs `module` on `n` replicas.
fn run_replicated(
    client: &Client,
    module: &HloModuleProto,
    dims: &[i64],
    per_device: &[Vec<f32>],
) -> Vec<Vec<f32>> {
    let n = per_device.len();
    let exe = client
        .compile(module, &CompileOptions::replicas(n as i64))
        .unwrap();
    let ids: Vec<i32> = exe.devices().iter().map(|d| d.id()).collect();
    assert_eq!(
        ids,
        (0..n as i32).collect::<Vec<_>>(),
        "replica r runs on device r"
    );
    let inputs: Vec<Buffer> = per_device
        .iter()
        .enumerate()
        .map(|(d, data)| client.buffer_from_slice(data, dims, d).unwrap())
        .collect();
    let args: Vec<Vec<Arg>> = inputs.iter().map(|b| vec![Arg::Borrow(b)]).collect();
    let out = exe.execute(args).unwrap();
    assert_eq!(out.len(), n);
    out.iter()
        .enumerate()
        .map(|(d, outs)| {
            assert_eq!(outs.len(), 1);
            assert_eq!(outs[0].device().index(), d, "output d lives on device d");
            outs[0].to_vec::<f32>().unwrap()
        })
        .collect()
}

#[test]
fn all_reduce_on_two_devices() {
    let client = cpu_client(2);
    let out = run_replicated(
        &client,
        &all_reduce_module(&[2, 2], &[]),
        &[2, 2],
        &[vec![1.0, 11.0, 21.0, 31.0], vec![2.0, 12.0, 22.0, 32.0]],
    );
    assert_eq!(out, [[3.0, 23.0, 43.0, 63.0], [3.0, 23.0, 43.0, 63.0]]);
}

#[test]
fn all_reduce_on_four_devices() {
    let client = cpu_client(4);
    let inputs: Vec<Vec<f32>> = (0..4)
        .map(|d| vec![10f32.powi(d), 2.0 * 10f32.powi(d)])
        .collect();
    let out = run_replicated(
        &client,
        &all_reduce_module(&[2], &[&[0, 1, 2, 3]]),
        &[2],
        &inputs,
    );
    for o in out {
        assert_eq!(o, [1111.0, 2222.0]);
    }
}

#[test]
fn all_reduce_in_two_groups_on_four_devices() {
    let client = cpu_client(4);
    let inputs: Vec<Vec<f32>> = (0..4).map(|d| vec![10f32.powi(d)]).collect();
    let out = run_replicated(
        &client,
        &all_reduce_module(&[1], &[&[0, 1], &[2, 3]]),
        &[1],
        &inputs,
    );
    assert_eq!(out, [[11.0], [11.0], [1100.0], [1100.0]]);
}

#[test]
fn all_gather_on_two_devices() {
    let client = cpu_client(2);
    let mut c = Comp::new("main", 0);
    let p = c.param(f32s(&[1, 2]));
    let ag = c.inst("all-gather", f32s(&[2, 2]), &[p], |i| {
        i.dimensions = vec![0];
        i.replica_groups = replica_groups(&[&[0, 1]]);
    });
    let out = run_replicated(
        &client,
        &module("all_gather", vec![c.finish(ag)]),
        &[1, 2],
        &[vec![1.0, 2.0], vec![3.0, 4.0]],
    );
    assert_eq!(out, [[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]]);
}

#[test]
fn reduce_scatter_on_two_devices() {
    let client = cpu_client(2);
    let add = scalar_add("add", 0, ElementType::F32);
    let mut c = Comp::new("main", 1);
    let p = c.param(f32s(&[2, 2]));
    let rs = c.inst("reduce-scatter", f32s(&[1, 2]), &[p], |i| {
        i.dimensions = vec![0];
        i.called_computation_ids = vec![add.id];
        i.replica_groups = replica_groups(&[&[0, 1]]);
    });
    let out = run_replicated(
        &client,
        &module("reduce_scatter", vec![add, c.finish(rs)]),
        &[2, 2],
        &[vec![1.0, 11.0, 21.0, 31.0], vec![2.0, 12.0, 22.0, 32.0]],
    );
    // Replica r gets block r of the sum.
    assert_eq!(out, [[3.0, 23.0], [43.0, 63.0]]);
}

#[test]
fn fewer_replicas_than_devices_use_the_first_devices() {
    let client = cpu_client(4);
    let exe = client
        .compile(&all_reduce_module(&[1], &[]), &CompileOptions::replicas(2))
        .unwrap();
    let ids: Vec<i32> = exe.devices().iter().map(|d| d.id()).collect();
    assert_eq!(ids, [0, 1]);
    // Arguments for device slot 1 must be on device 1, not anywhere else.
    let a = client.buffer_from_slice(&[1.0f32], &[1], 0).unwrap();
    let b = client.buffer_from_slice(&[2.0f32], &[1], 3).unwrap();
    let err = exe
        .execute(vec![vec![Arg::Borrow(&a)], vec![Arg::Borrow(&b)]])
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("buffer is on device id 3 but this slot runs on device id 1"),
        "{err}"
    );
}

/// Two clients in one process run the same collective module at the same time, 400 launches
/// each (every launch gets its own `launch_id`, XLA's rendezvous run id). Each sum must be its
/// own client's.
#[test]
fn concurrent_clients_keep_their_collectives_apart() {
    let module = all_reduce_module(&[64], &[]);
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let module = module.clone();
            std::thread::spawn(move || {
                let client = cpu_client(2);
                let exe = client
                    .compile(&module, &CompileOptions::replicas(2))
                    .unwrap();
                for k in 0..400 {
                    let base = (t * 100_000 + k * 10) as f32;
                    let inputs: Vec<Buffer> = (0..2)
                        .map(|d| {
                            client
                                .buffer_from_slice(&[base + d as f32; 64], &[64], d)
                                .unwrap()
                        })
                        .collect();
                    let args: Vec<Vec<Arg>> = inputs.iter().map(|b| vec![Arg::Borrow(b)]).collect();
                    let out = exe.execute(args).unwrap();
                    for outs in &out {
                        let got = outs[0].to_vec::<f32>().unwrap();
                        assert!(
                            got.iter().all(|&x| x == 2.0 * base + 1.0),
                            "client {t} launch {k}: {:?}, want {}",
                            &got[..4],
                            2.0 * base + 1.0
                        );
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}
