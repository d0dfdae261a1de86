//! Shared by the root package's PJRT test binaries (`conformance`, `printer_vs_xla`): finding
//! the plugin, one shared CPU client per device count, uploading inputs, a deterministic LCG,
//! a tiny row-major n-d array for reference implementations, tolerance checks, and the
//! conformance graphs themselves (in [`graphs`]), so the printer check runs on exactly the
//! modules the conformance suite executes.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use half::bf16;
use phi3_neuron::dsl::Graph;
use phi3_neuron::hlo::{lower, LowerOptions};
use pjrt_runtime::{
    Arg, Buffer, Client, ClientOptions, CompileOptions, LoadedExecutable, NativeType, Plugin,
};
use std::sync::OnceLock;
use xla_proto::HloModuleProto;

/// The plugin from `$PJRT_PLUGIN` (or the default install path). A missing plugin FAILS the test
/// with the install hint: a conformance suite that skips would pass vacuously.
pub fn plugin() -> Plugin {
    match Plugin::from_env() {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// One CPU client per device count (1, 2 or 4), created on first use and shared by all tests
/// of the binary (`Client` is `Send + Sync`).
pub fn client(devices: usize) -> &'static Client {
    static CLIENTS: [OnceLock<Client>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let slot = match devices {
        1 => 0,
        2 => 1,
        4 => 2,
        n => panic!("no shared client for {n} devices (use 1, 2 or 4)"),
    };
    CLIENTS[slot].get_or_init(|| {
        Client::new(
            &plugin(),
            &ClientOptions {
                cpu_device_count: Some(devices as i64),
            },
        )
        .unwrap_or_else(|e| panic!("creating a CPU client with {devices} devices: {e}"))
    })
}

/// Lowers with the default options (metadata and Neuron I/O names on), as production does.
pub fn lower_default(g: &Graph) -> HloModuleProto {
    lower(g, &LowerOptions::default()).unwrap_or_else(|e| panic!("lowering {}: {e}", g.name))
}

/// Uploads a host array to a device of a client.
type Upload = Box<dyn Fn(&Client, usize) -> Buffer>;

/// A host array to upload, of any element type the runtime supports.
pub struct Input {
    upload: Upload,
}

pub fn input<T: NativeType>(data: Vec<T>, dims: &[i64]) -> Input {
    let dims = dims.to_vec();
    Input {
        upload: Box::new(move |c, d| {
            c.buffer_from_slice(&data, &dims, d)
                .unwrap_or_else(|e| panic!("uploading {dims:?} to device {d}: {e}"))
        }),
    }
}

impl Input {
    pub fn upload(&self, client: &Client, device: usize) -> Buffer {
        (self.upload)(client, device)
    }
}

/// Compiles `g` for one device.
pub fn compile(g: &Graph) -> LoadedExecutable {
    let exe = client(1)
        .compile(&lower_default(g), &CompileOptions::default())
        .unwrap_or_else(|e| panic!("compiling {}: {e}", g.name));
    assert_eq!(
        exe.num_outputs(),
        g.outputs.len(),
        "{}: root tuple untupled",
        g.name
    );
    exe
}

/// Runs a one-device executable with borrowed inputs; returns one buffer per output.
pub fn execute(exe: &LoadedExecutable, inputs: &[Input]) -> Vec<Buffer> {
    let bufs: Vec<Buffer> = inputs.iter().map(|i| i.upload(client(1), 0)).collect();
    exe.execute_one(bufs.iter().map(Arg::Borrow).collect())
        .unwrap_or_else(|e| panic!("executing {}: {e}", exe.name()))
}

/// Compiles and runs `g` on one device with borrowed inputs; returns one buffer per output.
pub fn run(g: &Graph, inputs: &[Input]) -> Vec<Buffer> {
    execute(&compile(g), inputs)
}

/// Compiles `g` with `num_replicas = per_device.len()` on a client with that many devices and
/// runs it with `per_device[d]` as device `d`'s arguments; returns `[device][output]`.
pub fn run_replicated(g: &Graph, per_device: &[Vec<Input>]) -> Vec<Vec<Buffer>> {
    let n = per_device.len();
    let client = client(n);
    let exe = client
        .compile(&lower_default(g), &CompileOptions::replicas(n as i64))
        .unwrap_or_else(|e| panic!("compiling {} for {n} replicas: {e}", g.name));
    let ids: Vec<i32> = exe.devices().iter().map(|d| d.id()).collect();
    assert_eq!(
        ids,
        (0..n as i32).collect::<Vec<_>>(),
        "replica r on device r"
    );
    let bufs: Vec<Vec<Buffer>> = per_device
        .iter()
        .enumerate()
        .map(|(d, inputs)| inputs.iter().map(|i| i.upload(client, d)).collect())
        .collect();
    let args = bufs
        .iter()
        .map(|dev| dev.iter().map(Arg::Borrow).collect())
        .collect();
    let out = exe
        .execute(args)
        .unwrap_or_else(|e| panic!("executing {} on {n} replicas: {e}", g.name));
    assert_eq!(out.len(), n);
    for dev in &out {
        assert_eq!(dev.len(), g.outputs.len());
    }
    out
}

/// Reads an output after checking its element type and dims.
pub fn read<T: NativeType>(b: &Buffer, dims: &[i64]) -> Vec<T> {
    assert_eq!(b.element_type(), T::ELEMENT_TYPE, "output element type");
    assert_eq!(b.dims(), dims, "output dims");
    b.to_vec::<T>().unwrap()
}

pub fn read_f64<T: NativeType + Into<f64>>(b: &Buffer, dims: &[i64]) -> Vec<f64> {
    read::<T>(b, dims).into_iter().map(Into::into).collect()
}

// ---- Deterministic inputs ----

/// Knuth's MMIX LCG; the high bits are used.
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Lcg {
        Lcg(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x2545_F491_4F6C_DD1D)
    }

    pub fn next_u32(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 32) as u32
    }

    /// Uniform in `[0, 1)` with 24 random bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u32() >> 8) as f64 / (1u32 << 24) as f64
    }

    /// Uniform in `[lo, hi)`, rounded to f32.
    pub fn f32s(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f32> {
        (0..n)
            .map(|_| (lo + (hi - lo) * self.unit()) as f32)
            .collect()
    }

    /// Integers in `[lo, hi]`.
    pub fn ints(&mut self, n: usize, lo: i32, hi: i32) -> Vec<i32> {
        let span = (hi - lo + 1) as u32;
        (0..n)
            .map(|_| lo + (self.next_u32() % span) as i32)
            .collect()
    }

    /// Multiples of 1/8 in `[-4, 4]`. Exact in f32 and bf16, and sums and products of a few
    /// hundred of them stay exact in f32, so reductions, dots and collectives can be compared
    /// exactly whatever order XLA adds in.
    pub fn dyadic(&mut self, n: usize) -> Vec<f32> {
        self.ints(n, -32, 32)
            .into_iter()
            .map(|k| k as f32 / 8.0)
            .collect()
    }

    pub fn dyadic_bf16(&mut self, n: usize) -> Vec<bf16> {
        self.dyadic(n).into_iter().map(bf16::from_f32).collect()
    }
}

pub fn to_bf16(v: &[f32]) -> Vec<bf16> {
    v.iter().map(|&x| bf16::from_f32(x)).collect()
}

pub fn f64s<T: Copy + Into<f64>>(v: &[T]) -> Vec<f64> {
    v.iter().map(|&x| x.into()).collect()
}

// ---- A tiny row-major n-d array for reference implementations ----

#[derive(Clone, Debug, PartialEq)]
pub struct Nd {
    pub dims: Vec<usize>,
    pub data: Vec<f64>,
}

impl Nd {
    pub fn new(dims: &[usize], data: Vec<f64>) -> Nd {
        assert_eq!(dims.iter().product::<usize>(), data.len(), "Nd {dims:?}");
        Nd {
            dims: dims.to_vec(),
            data,
        }
    }

    pub fn of<T: Copy + Into<f64>>(dims: &[usize], data: &[T]) -> Nd {
        Nd::new(dims, f64s(data))
    }

    pub fn filled(dims: &[usize], value: f64) -> Nd {
        Nd::new(dims, vec![value; dims.iter().product()])
    }

    pub fn offset(&self, idx: &[usize]) -> usize {
        assert_eq!(idx.len(), self.dims.len());
        idx.iter().zip(&self.dims).fold(0, |acc, (&i, &d)| {
            assert!(i < d, "index {idx:?} out of {:?}", self.dims);
            acc * d + i
        })
    }

    pub fn at(&self, idx: &[usize]) -> f64 {
        self.data[self.offset(idx)]
    }

    pub fn set(&mut self, idx: &[usize], v: f64) {
        let o = self.offset(idx);
        self.data[o] = v;
    }

    /// Builds an array by evaluating `f` at every multi-index, in row-major order.
    pub fn from_fn(dims: &[usize], mut f: impl FnMut(&[usize]) -> f64) -> Nd {
        let data = indices(dims).iter().map(|i| f(i)).collect();
        Nd::new(dims, data)
    }
}

/// Every multi-index of `dims`, row-major (a scalar has one, the empty index).
pub fn indices(dims: &[usize]) -> Vec<Vec<usize>> {
    let mut out = vec![vec![]];
    for &d in dims {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                (0..d).map(move |i| {
                    let mut p = prefix.clone();
                    p.push(i);
                    p
                })
            })
            .collect();
    }
    out
}

// ---- Comparisons ----

/// Asserts `|got[i] - want[i]| <= tol[i]` everywhere (a NaN matches only a NaN), listing the
/// first offenders.
pub fn assert_within(what: &str, got: &[f64], want: &[f64], tol: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: element count");
    let ok = |i: usize| (got[i].is_nan() && want[i].is_nan()) || (got[i] - want[i]).abs() <= tol[i];
    let bad: Vec<String> = (0..got.len())
        .filter(|&i| !ok(i))
        .take(8)
        .map(|i| {
            format!(
                "  [{i}] got {:e}, want {:e} (diff {:e}, tol {:e})",
                got[i],
                want[i],
                (got[i] - want[i]).abs(),
                tol[i]
            )
        })
        .collect();
    assert!(bad.is_empty(), "{what}: mismatches:\n{}", bad.join("\n"));
}

/// `|got - want| <= atol + rtol * |want|`.
pub fn assert_close(what: &str, got: &[f64], want: &[f64], atol: f64, rtol: f64) {
    let tol: Vec<f64> = want.iter().map(|w| atol + rtol * w.abs()).collect();
    assert_within(what, got, want, &tol);
}

pub fn assert_exact(what: &str, got: &[f64], want: &[f64]) {
    assert_close(what, got, want, 0.0, 0.0);
}

/// One bf16 unit in the last place, relative: bf16 keeps 8 significant bits, so rounding an
/// exact result to bf16 moves it by at most half of 2^-7 relative; a result computed in f32 and
/// then rounded (double rounding) stays within one.
pub const BF16_ULP: f64 = 1.0 / 128.0;

pub mod graphs;
