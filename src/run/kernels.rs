//! The runtime's own kernels, registered with the PJRT plugin as typed-FFI custom-call targets
//! before a graph that calls them is compiled (the graph's manifest entry lists them in
//! `runtime_kernels`).
//!
//! One kernel so far: [`MATVEC_KERNEL_TARGET`], `y = x · wᵀ` for a few bf16 rows against a
//! bf16 `[n, k]` weight, with f32 sums ([`crate::ir::ops::MatvecKernel`]). The product reads
//! every weight byte once, so it is bound by memory bandwidth: the kernel splits the weight's
//! rows between the calling thread and helpers on XLA's thread pool. Each reads several rows
//! far apart side by side, each front to back, and multiplies them by every vector with
//! AVX-512 BF16 dot products (`vdpbf16ps`: two bf16 products summed into each f32 lane).
//! Without AVX-512 BF16 it widens the bf16 values to f32 instead.

use std::collections::BTreeSet;
use std::ffi::c_void;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use half::bf16;
use pjrt_runtime::ffi::{handle, FfiBuffer, FfiThreadPool, XlaFfiCallFrame, XlaFfiError};
use pjrt_runtime::{ElementType, Plugin};

pub use crate::ir::ops::MATVEC_KERNEL_TARGET;

/// XLA's platform name for the CPU plugin's handlers.
const PLATFORM: &str = "Host";

/// Below this many weight elements a product runs on the calling thread alone: handing it to
/// the pool costs more than it saves.
const PARALLEL_FROM: usize = 1 << 16;

/// How many parts a product's rows are cut into per thread. In a standalone loop over
/// Phi-3-mini's batch-1 shapes, 4 parts averaged 25-27 GB/s where 1 part averaged 22-25 (one
/// run each; 16 parts were no better than 4).
const PARTS_PER_THREAD: usize = 4;

/// Registers every kernel in `targets` with `plugin`, once per plugin per process; an unknown
/// target is an error naming it.
pub fn register(plugin: &Plugin, targets: &[String]) -> Result<(), String> {
    static DONE: Mutex<BTreeSet<(PathBuf, String)>> = Mutex::new(BTreeSet::new());
    let mut done = DONE.lock().expect("no panics under the lock");
    for target in targets {
        let key = (plugin.path().to_path_buf(), target.clone());
        if done.contains(&key) {
            continue;
        }
        let handler = match target.as_str() {
            MATVEC_KERNEL_TARGET => matvec_handler,
            _ => return Err(format!("this runtime has no kernel named {target}")),
        };
        plugin
            .register_ffi_handler(target, PLATFORM, handler)
            .map_err(|e| format!("registering kernel {target}: {e}"))?;
        done.insert(key);
    }
    Ok(())
}

unsafe extern "C" fn matvec_handler(frame: *mut XlaFfiCallFrame) -> *mut XlaFfiError {
    // SAFETY: XLA passes the handler its own call frame.
    unsafe { handle(frame, MATVEC_KERNEL_TARGET, matvec_call) }
}

fn describe(b: &FfiBuffer) -> String {
    let ty = b.ty.map_or("?", |t| t.name());
    format!("{ty}{:?}", b.dims)
}

/// Checks the call's buffers against the kernel's signature and runs it.
fn matvec_call(args: &[FfiBuffer], rets: &[FfiBuffer], pool: &FfiThreadPool) -> Result<(), String> {
    let ([x, w], [y]) = (args, rets) else {
        return Err(format!(
            "wants 2 operands and 1 result, got {} and {}",
            args.len(),
            rets.len()
        ));
    };
    let signature = || {
        format!(
            "wants bf16[m, k], bf16[n, k] -> f32[m, n], got {}, {} -> {}",
            describe(x),
            describe(w),
            describe(y)
        )
    };
    let (&[m, k], &[n, k2], &[ym, yn]) = (&x.dims[..], &w.dims[..], &y.dims[..]) else {
        return Err(signature());
    };
    if k != k2 || ym != m || yn != n {
        return Err(signature());
    }
    // SAFETY: the call frame's buffers are live for the call; XLA gives the result its own
    // buffer, so it does not overlap the operands.
    let (xs, ws, ys) = unsafe {
        (
            x.slice::<bf16>(ElementType::BF16),
            w.slice::<bf16>(ElementType::BF16),
            y.slice_mut::<f32>(ElementType::F32),
        )
    };
    let (Some(xs), Some(ws), Some(ys)) = (xs, ws, ys) else {
        return Err(signature());
    };
    matvec_with(
        xs,
        ws,
        ys,
        m as usize,
        k as usize,
        n as usize,
        threads(),
        |job| {
            let data = Arc::into_raw(job) as *mut c_void;
            // SAFETY: the task takes back the `Arc` it is given, which keeps the job alive.
            if !unsafe { pool.schedule(run_job, data) } {
                // SAFETY: not scheduled: the `Arc` is still ours.
                drop(unsafe { Arc::from_raw(data as *const Job) });
            }
        },
    );
    Ok(())
}

/// `y[m, n] = x[m, k] · w[n, k]ᵀ` with f32 sums, outside a graph: each helper is a thread of
/// its own (the kernel inside a graph takes them from XLA's pool: see [`matvec_with`]).
pub fn matvec(x: &[bf16], w: &[bf16], y: &mut [f32], m: usize, k: usize, n: usize) {
    matvec_with(x, w, y, m, k, n, threads(), |job| {
        std::thread::spawn(move || job.work());
    });
}

/// The cores to spread a product over.
fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The task XLA's thread pool runs: one helper of a [`Job`].
unsafe extern "C" fn run_job(data: *mut c_void) {
    // SAFETY: `data` is an `Arc<Job>` turned into a raw pointer for this task alone.
    let job = unsafe { Arc::from_raw(data as *const Job) };
    job.work();
}

/// [`matvec`] over `threads` threads: the calling thread cuts the rows into parts, hands
/// `threads - 1` helpers to `spawn`, and claims parts itself until none are left, then waits
/// for the parts the helpers claimed. A helper that starts late finds the parts taken and
/// leaves, so a call never waits for a pool to wake up. Inside a graph the helpers go to XLA's
/// intra-op pool, whose idle threads are spinning for work while the custom call runs: with
/// helpers from a pool of its own (rayon, tried first), the kernel shared the two cores with
/// them, and the bench model's batch-1 decode took 25-26 ms, against 21-25 ms this way.
#[allow(clippy::too_many_arguments)]
fn matvec_with(
    x: &[bf16],
    w: &[bf16],
    y: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    threads: usize,
    spawn: impl Fn(Arc<Job>),
) {
    assert_eq!(x.len(), m * k, "x is [m, k]");
    assert_eq!(w.len(), n * k, "w is [n, k]");
    assert_eq!(y.len(), m * n, "y is [m, n]");
    if n * k < PARALLEL_FROM || threads <= 1 {
        // SAFETY: one caller writes all of `y`.
        unsafe { rows(x, w, Out(y.as_mut_ptr()), m, k, n, 0, n) };
        return;
    }
    // A few parts per thread, so that a thread the OS delays leaves its parts to the others
    // instead of holding up the call.
    let chunk = n.div_ceil(threads * PARTS_PER_THREAD);
    let job = Arc::new(Job {
        x: (x.as_ptr(), x.len()),
        w: (w.as_ptr(), w.len()),
        y: Out(y.as_mut_ptr()),
        shape: (m, k, n),
        chunk,
        parts: n.div_ceil(chunk),
        next: AtomicUsize::new(0),
        finished: AtomicUsize::new(0),
    });
    for _ in 1..threads {
        spawn(Arc::clone(&job));
    }
    job.work();
    let mut spins = 0u32;
    while job.finished.load(Ordering::Acquire) < job.parts {
        if spins < 1 << 12 {
            std::hint::spin_loop();
            spins += 1;
        } else {
            std::thread::yield_now();
        }
    }
}

/// One call's rows, shared by the caller and its helpers.
struct Job {
    x: (*const bf16, usize),
    w: (*const bf16, usize),
    y: Out,
    shape: (usize, usize, usize),
    chunk: usize,
    parts: usize,
    /// The next unclaimed part.
    next: AtomicUsize,
    /// Parts done.
    finished: AtomicUsize,
}

// SAFETY: the pointers are read (x, w) or written in disjoint parts (y) only for a claimed
// part, and `matvec_with` returns only after every claimed part is finished, so they are live then.
unsafe impl Send for Job {}
unsafe impl Sync for Job {}

impl Job {
    fn work(&self) {
        let (m, k, n) = self.shape;
        loop {
            let part = self.next.fetch_add(1, Ordering::Relaxed);
            if part >= self.parts {
                return;
            }
            let (n0, n1) = (part * self.chunk, ((part + 1) * self.chunk).min(n));
            // SAFETY: a claimed part: `matvec_with` is still waiting, so the slices are live, and
            // the part's columns of `y` are this thread's alone.
            unsafe {
                let x = std::slice::from_raw_parts(self.x.0, self.x.1);
                let w = std::slice::from_raw_parts(self.w.0, self.w.1);
                rows(x, w, self.y, m, k, n, n0, n1);
            }
            self.finished.fetch_add(1, Ordering::Release);
        }
    }
}

/// `y`'s base pointer, shared by the threads that write disjoint columns of it.
#[derive(Clone, Copy)]
struct Out(*mut f32);

/// Columns `n0..n1` of `y`, for every row of `x` (in blocks of at most 8 rows).
///
/// # Safety
/// `out` must point to `m * n` writable f32s that no one else touches in columns `n0..n1`.
#[allow(clippy::too_many_arguments)]
unsafe fn rows(
    x: &[bf16],
    w: &[bf16],
    out: Out,
    m: usize,
    k: usize,
    n: usize,
    n0: usize,
    n1: usize,
) {
    for m0 in (0..m).step_by(8) {
        let mb = (m - m0).min(8);
        let xb = &x[m0 * k..(m0 + mb) * k];
        // SAFETY: rows `m0..m0 + mb` of `y`, columns `n0..n1`: the caller's.
        let yb = unsafe { out.0.add(m0 * n) };
        let block = Block {
            x: xb,
            w,
            y: yb,
            m: mb,
            k,
            n,
        };
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512bf16")
            && std::arch::is_x86_feature_detected!("avx512bw")
        {
            // SAFETY: the CPU has the features; the slices bound every access.
            unsafe { avx512::block(&block, n0..n1) };
            continue;
        }
        // SAFETY: forwarded.
        unsafe { portable_block(&block, n0..n1) };
    }
}

/// At most 8 vectors `x [m, k]` against the weight `w [n, k]`, into `y`, whose row stride is
/// `n` (a block of rows of the whole result).
struct Block<'a> {
    x: &'a [bf16],
    w: &'a [bf16],
    y: *mut f32,
    m: usize,
    k: usize,
    n: usize,
}

/// The kernel without AVX-512 BF16: bf16 widened to f32 (exactly), 16 partial sums per
/// product so that the compiler vectorises it.
///
/// # Safety
/// `b.y` must hold `b.m` rows of `b.n` f32s whose columns `cols` only this call writes.
unsafe fn portable_block(b: &Block<'_>, cols: std::ops::Range<usize>) {
    let Block { x, w, y, m, k, n } = *b;
    for j in cols {
        let wr = &w[j * k..(j + 1) * k];
        for i in 0..m {
            let xr = &x[i * k..(i + 1) * k];
            let mut acc = [0f32; 16];
            let (wc, xc) = (wr.chunks_exact(16), xr.chunks_exact(16));
            let tail: f32 = wc
                .remainder()
                .iter()
                .zip(xc.remainder())
                .map(|(a, b)| a.to_f32() * b.to_f32())
                .sum();
            for (a, b) in wc.zip(xc) {
                for l in 0..16 {
                    acc[l] += a[l].to_f32() * b[l].to_f32();
                }
            }
            // SAFETY: row `i`, column `j` of the caller's block.
            unsafe { *y.add(i * n + j) = acc.iter().sum::<f32>() + tail };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use half::bf16;
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must have AVX-512 F, BW and BF16; `b` as for `super::portable_block`;
    /// `1 <= b.m <= 8`.
    pub(super) unsafe fn block(b: &super::Block<'_>, cols: std::ops::Range<usize>) {
        let super::Block { x, w, y, m, k, n } = *b;
        // `R` weight rows read side by side, from `R` places `h` rows apart in the part, and
        // `U` 32-lane chunks of each in flight: `m * R * U` accumulators stay in the 32
        // registers. `single` is the same for one row at a time, for the rows left over.
        type Rows = unsafe fn(*const bf16, *const bf16, *mut f32, usize, usize, usize, usize);
        let (streams, f, single): (usize, Rows, Rows) = match m {
            1 => (8, rows_of::<1, 1, 8>, rows_of::<8, 1, 1>),
            2 => (4, rows_of::<1, 2, 4>, rows_of::<4, 2, 1>),
            3 => (4, rows_of::<1, 3, 4>, rows_of::<4, 3, 1>),
            4 => (4, rows_of::<1, 4, 4>, rows_of::<4, 4, 1>),
            5 => (2, rows_of::<1, 5, 2>, rows_of::<2, 5, 1>),
            6 => (2, rows_of::<1, 6, 2>, rows_of::<2, 6, 1>),
            7 => (2, rows_of::<1, 7, 2>, rows_of::<2, 7, 1>),
            8 => (2, rows_of::<1, 8, 2>, rows_of::<2, 8, 1>),
            _ => unreachable!("blocks hold 1 to 8 rows"),
        };
        let h = cols.len() / streams;
        for j in cols.start..cols.start + h {
            // SAFETY: rows `j + r * h < cols.end <= n` of `w` exist; the caller's block of `y`.
            unsafe { f(x.as_ptr(), w.as_ptr(), y, k, n, j, h) };
        }
        for j in cols.start + streams * h..cols.end {
            // SAFETY: as above, one row.
            unsafe { single(x.as_ptr(), w.as_ptr(), y, k, n, j, 0) };
        }
    }

    /// Weight rows `j, j + h, .., j + (R - 1) h` against the `M` vectors:
    /// `y[i, j + r h] = x[i] · w[j + r h]`. Each row is read front to back, and the `R` rows
    /// side by side are `R` sequential streams far apart, which keep more of a core's cache
    /// misses in flight than one stream does. Rows next to each other read side by side are
    /// not the same thing: short streams that the hardware prefetcher does not keep up with.
    /// The measurements behind both are in docs/decode-performance.md.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn rows_of<const U: usize, const M: usize, const R: usize>(
        x: *const bf16,
        w: *const bf16,
        y: *mut f32,
        k: usize,
        n: usize,
        j: usize,
        h: usize,
    ) {
        // SAFETY (every load below): the chunks and masks stay inside rows `j + r h` of `w`
        // and inside each vector of `x`.
        let row: [*const bf16; R] = std::array::from_fn(|r| unsafe { w.add((j + r * h) * k) });
        let as_bh = |v: __m512i| unsafe { std::mem::transmute::<__m512i, __m512bh>(v) };
        let mut acc = [[[_mm512_setzero_ps(); U]; R]; M];
        let mut kk = 0;
        while kk + 32 * U <= k {
            for u in 0..U {
                let xv: [__m512i; M] = std::array::from_fn(|i| unsafe {
                    _mm512_loadu_si512(x.add(i * k + kk + 32 * u).cast())
                });
                for r in 0..R {
                    let wv = as_bh(unsafe { _mm512_loadu_si512(row[r].add(kk + 32 * u).cast()) });
                    for i in 0..M {
                        acc[i][r][u] = _mm512_dpbf16_ps(acc[i][r][u], wv, as_bh(xv[i]));
                    }
                }
            }
            kk += 32 * U;
        }
        // The rest in single chunks, the last one masked (masked-off lanes read as zero).
        while kk < k {
            let left = k - kk;
            let mask: __mmask32 = if left >= 32 { !0 } else { (1u32 << left) - 1 };
            for r in 0..R {
                let wv = as_bh(unsafe { _mm512_maskz_loadu_epi16(mask, row[r].add(kk).cast()) });
                for i in 0..M {
                    let xv = unsafe { _mm512_maskz_loadu_epi16(mask, x.add(i * k + kk).cast()) };
                    acc[i][r][0] = _mm512_dpbf16_ps(acc[i][r][0], wv, as_bh(xv));
                }
            }
            kk += 32;
        }
        for i in 0..M {
            for r in 0..R {
                let mut t = acc[i][r][0];
                for u in 1..U {
                    t = _mm512_add_ps(t, acc[i][r][u]);
                }
                // SAFETY: row `i`, column `j + r h` of the caller's block.
                unsafe { *y.add(i * n + j + r * h) = _mm512_reduce_add_ps(t) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small integers times powers of two: exact in bf16, and every partial sum exact in f32,
    /// so any summation order gives the same f32 result as the f64 reference.
    fn values(len: usize, seed: usize) -> Vec<bf16> {
        (0..len)
            .map(|i| {
                let v = ((i * 7 + seed * 13) % 17) as f32 - 8.0;
                bf16::from_f32(v * 0.25)
            })
            .collect()
    }

    fn reference(x: &[bf16], w: &[bf16], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut y = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k)
                    .map(|l| x[i * k + l].to_f64() * w[j * k + l].to_f64())
                    .sum();
                y[i * n + j] = s as f32;
            }
        }
        y
    }

    /// Every row count a block handles (1-8, and 11 = a block of 8 and one of 3), contractions
    /// that are and are not whole 32-lane chunks, row counts that leave a remainder after the
    /// blocks and after the thread split, and a product big enough to use the pool.
    #[test]
    fn matches_the_reference_at_every_shape_class() {
        for (m, k, n) in [
            (1, 32, 8),
            (1, 7, 3),
            (2, 33, 13),
            (3, 64, 9),
            (4, 95, 17),
            (5, 31, 5),
            (6, 128, 31),
            (7, 100, 7),
            (8, 96, 25),
            (11, 40, 6),
            (1, 64, 29),
            (3, 65, 19),
            (6, 33, 21),
            (1, 1024, 300),
            (4, 3072, 77),
        ] {
            let (x, w) = (values(m * k, 1), values(n * k, 2));
            let mut y = vec![f32::NAN; m * n];
            matvec(&x, &w, &mut y, m, k, n);
            assert_eq!(y, reference(&x, &w, m, k, n), "m {m} k {k} n {n}");
        }
    }

    #[test]
    fn the_portable_path_matches_the_reference() {
        let (m, k, n) = (3, 77, 10);
        let (x, w) = (values(m * k, 3), values(n * k, 4));
        let mut y = vec![f32::NAN; m * n];
        // SAFETY: `y` holds `m * n` f32s, all written here alone.
        let block = Block {
            x: &x,
            w: &w,
            y: y.as_mut_ptr(),
            m,
            k,
            n,
        };
        unsafe { portable_block(&block, 0..n) };
        assert_eq!(y, reference(&x, &w, m, k, n));
    }

    #[test]
    fn an_unknown_kernel_is_named() {
        let plugin = match Plugin::from_env() {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        let err = register(&plugin, &["phi3_neuron.no_such_kernel".into()]).unwrap_err();
        assert!(err.contains("phi3_neuron.no_such_kernel"), "{err}");
    }
}
