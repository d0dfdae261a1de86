//! The runtime's own kernels, registered with the PJRT plugin as typed-FFI custom-call targets
//! before a graph that calls them is compiled (the graph's manifest entry lists them in
//! `runtime_kernels`). Both multiply a few rows by a projection weight, with f32 sums
//! ([`crate::ir::ops::MatvecKernel`]); each reads every weight byte once, so it is bound by
//! memory bandwidth, and splits the weight between the calling thread and helpers on XLA's
//! thread pool.
//!
//! - [`MATVEC_KERNEL_TARGET`]: `y = x · wᵀ` for bf16 rows against a bf16 `[n, k]` weight. Each
//!   thread reads several weight rows far apart side by side, each front to back, and
//!   multiplies them by every vector with AVX-512 BF16 dot products (`vdpbf16ps`: two bf16
//!   products summed into each f32 lane). Without AVX-512 BF16 it widens the bf16 values to
//!   f32 (exactly) and multiplies them with AVX2 FMA, in the same streams; without AVX2 it
//!   runs plain loops.
//! - [`F32_MATVEC_KERNEL_TARGET`]: `y = x · w` for f32 rows against an f32 `[k, n]` weight
//!   (the `[in, out]` layout). The weight's rows are cut into contiguous parts, each read
//!   front to back eight rows at a time into a partial result of its own (AVX2 and FMA, or
//!   plain loops without them); the partials are then summed in part order, so a result does
//!   not depend on which thread took which part.

use std::collections::BTreeSet;
use std::ffi::c_void;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use half::bf16;
use pjrt_runtime::ffi::{handle, FfiBuffer, FfiThreadPool, XlaFfiCallFrame, XlaFfiError};
use pjrt_runtime::{ElementType, Plugin};

pub use crate::ir::ops::{F32_MATVEC_KERNEL_TARGET, MATVEC_KERNEL_TARGET};

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
            F32_MATVEC_KERNEL_TARGET => f32_matvec_handler,
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

/// Checks the bf16 kernel's buffers against its signature and runs it.
fn matvec_call(args: &[FfiBuffer], rets: &[FfiBuffer], pool: &FfiThreadPool) -> Result<(), String> {
    product_call::<bf16>(
        args,
        rets,
        ElementType::BF16,
        false,
        |x, w, y, (m, k, n)| matvec_with(x, w, y, m, k, n, threads(), pool_spawn(pool)),
    )
}

unsafe extern "C" fn f32_matvec_handler(frame: *mut XlaFfiCallFrame) -> *mut XlaFfiError {
    // SAFETY: XLA passes the handler its own call frame.
    unsafe { handle(frame, F32_MATVEC_KERNEL_TARGET, f32_matvec_call) }
}

/// Checks the f32 kernel's buffers against its signature and runs it.
fn f32_matvec_call(
    args: &[FfiBuffer],
    rets: &[FfiBuffer],
    pool: &FfiThreadPool,
) -> Result<(), String> {
    product_call::<f32>(args, rets, ElementType::F32, true, |x, w, y, (m, k, n)| {
        f32_matvec_with(x, w, y, m, k, n, threads(), pool_spawn(pool))
    })
}

/// A product kernel's call: `ty[m, k]` times a `ty` weight (`[n, k]`, or `[k, n]` when
/// `k_major`) → `f32[m, n]`. Checks the buffers against that signature (an error names what
/// it got) and hands their slices and `(m, k, n)` to `run`.
fn product_call<T>(
    args: &[FfiBuffer],
    rets: &[FfiBuffer],
    ty: ElementType,
    k_major: bool,
    run: impl FnOnce(&[T], &[T], &mut [f32], (usize, usize, usize)),
) -> Result<(), String> {
    let ([x, w], [y]) = (args, rets) else {
        return Err(format!(
            "wants 2 operands and 1 result, got {} and {}",
            args.len(),
            rets.len()
        ));
    };
    let signature = || {
        let (t, weight) = (ty.name(), if k_major { "[k, n]" } else { "[n, k]" });
        format!(
            "wants {t}[m, k], {t}{weight} -> f32[m, n], got {}, {} -> {}",
            describe(x),
            describe(w),
            describe(y)
        )
    };
    let (&[m, k], &[w0, w1], &[ym, yn]) = (&x.dims[..], &w.dims[..], &y.dims[..]) else {
        return Err(signature());
    };
    let (k2, n) = if k_major { (w0, w1) } else { (w1, w0) };
    if k != k2 || ym != m || yn != n {
        return Err(signature());
    }
    // SAFETY: the call frame's buffers are live for the call; XLA gives the result its own
    // buffer, so it does not overlap the operands.
    let (xs, ws, ys) = unsafe {
        (
            x.slice::<T>(ty),
            w.slice::<T>(ty),
            y.slice_mut::<f32>(ElementType::F32),
        )
    };
    let (Some(xs), Some(ws), Some(ys)) = (xs, ws, ys) else {
        return Err(signature());
    };
    run(xs, ws, ys, (m as usize, k as usize, n as usize));
    Ok(())
}

/// Hands a helper of a [`Job`] to XLA's intra-op pool; a helper XLA does not take is dropped
/// (the calling thread does its parts).
fn pool_spawn(pool: &FfiThreadPool) -> impl Fn(Arc<Job>) + '_ {
    move |job| {
        let data = Arc::into_raw(job) as *mut c_void;
        // SAFETY: the task takes back the `Arc` it is given, which keeps the job alive.
        if !unsafe { pool.schedule(run_job, data) } {
            // SAFETY: not scheduled: the `Arc` is still ours.
            drop(unsafe { Arc::from_raw(data as *const Job) });
        }
    }
}

/// `y[m, n] = x[m, k] · w[n, k]ᵀ` with f32 sums, outside a graph: each helper is a thread of
/// its own (the kernel inside a graph takes them from XLA's pool: see [`matvec_with`]).
pub fn matvec(x: &[bf16], w: &[bf16], y: &mut [f32], m: usize, k: usize, n: usize) {
    matvec_with(x, w, y, m, k, n, threads(), |job| {
        std::thread::spawn(move || job.work());
    });
}

/// `y[m, n] = x[m, k] · w[k, n]` with f32 sums, outside a graph (as [`matvec`]).
pub fn f32_matvec(x: &[f32], w: &[f32], y: &mut [f32], m: usize, k: usize, n: usize) {
    f32_matvec_with(x, w, y, m, k, n, threads(), |job| {
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

/// [`matvec`] over `threads` threads: the weight's rows cut into a few parts per thread
/// ([`for_each_part`]), each part writing its own columns of `y`.
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
    let out = Out(y.as_mut_ptr());
    if n * k < PARALLEL_FROM || threads <= 1 {
        // SAFETY: one caller writes all of `y`.
        unsafe { rows(x, w, out, m, k, n, 0, n) };
        return;
    }
    // A few parts per thread, so that a thread the OS delays leaves its parts to the others
    // instead of holding up the call.
    let chunk = n.div_ceil(threads * PARTS_PER_THREAD);
    for_each_part(n.div_ceil(chunk), threads, spawn, &|part| {
        let (n0, n1) = (part * chunk, ((part + 1) * chunk).min(n));
        // SAFETY: `y` is live until `for_each_part` returns, and the part's columns are its
        // own.
        unsafe { rows(x, w, out, m, k, n, n0, n1) };
    });
}

/// [`f32_matvec`] over `threads` threads: the weight's rows cut into contiguous parts, each
/// read front to back into a partial `[m, n]` of its own, then the partials summed in part
/// order. The parts depend on `threads` only, so a result does not depend on which thread
/// took which part.
#[allow(clippy::too_many_arguments)]
fn f32_matvec_with(
    x: &[f32],
    w: &[f32],
    y: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    threads: usize,
    spawn: impl Fn(Arc<Job>),
) {
    assert_eq!(x.len(), m * k, "x is [m, k]");
    assert_eq!(w.len(), k * n, "w is [k, n]");
    assert_eq!(y.len(), m * n, "y is [m, n]");
    y.fill(0.0);
    if n * k < PARALLEL_FROM || threads <= 1 {
        // SAFETY: `y` is `[m, n]`, this call's alone.
        unsafe { f32_rows(x, w, y.as_mut_ptr(), m, k, n, 0..k) };
        return;
    }
    // Parts of whole groups of rows, two per thread.
    let groups = k.div_ceil(F32_ROWS);
    let span = groups.div_ceil((threads * 2).min(groups)) * F32_ROWS;
    let parts = k.div_ceil(span);
    SCRATCH.with(|scratch| {
        let mut partials = scratch.take();
        let size = m * n;
        if partials.len() < (parts - 1) * size {
            partials.resize((parts - 1) * size, 0.0);
        }
        partials[..(parts - 1) * size].fill(0.0);
        // Part 0 sums into `y` itself, part p into partial p - 1.
        let (ys, ps) = (Out(y.as_mut_ptr()), Out(partials.as_mut_ptr()));
        for_each_part(parts, threads, spawn, &|part| {
            let rows = part * span..((part + 1) * span).min(k);
            // SAFETY: `y` and the partials are live until `for_each_part` returns, and each
            // part writes its own `[m, n]`.
            let out = match part {
                0 => ys.at(0),
                p => ps.at((p - 1) * size),
            };
            unsafe { f32_rows(x, w, out, m, k, n, rows) };
        });
        for partial in partials[..(parts - 1) * size].chunks_exact(size) {
            for (a, b) in y.iter_mut().zip(partial) {
                *a += b;
            }
        }
        scratch.set(partials);
    });
}

/// Weight rows read side by side by [`f32_rows`].
const F32_ROWS: usize = 8;

/// Columns of the weight per step of [`f32_rows`]: [`F32_ROWS`] rows of this many f32s (16 KiB)
/// stay in the L1 cache while each block of 4 vectors goes over them.
const F32_COLUMNS: usize = 512;

thread_local! {
    /// The partial results of [`f32_matvec_with`], kept between calls so that each call does
    /// not fault in fresh pages.
    static SCRATCH: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Runs `work(part)` for every part in `0..parts`: the calling thread hands `threads - 1`
/// helpers to `spawn`, claims parts itself until none are left, then waits for the parts the
/// helpers claimed. A helper that starts late finds the parts taken and leaves, so a call
/// never waits for a pool to wake up. Inside a graph the helpers go to XLA's intra-op pool,
/// whose idle threads are spinning for work while the custom call runs: with helpers from a
/// pool of its own (rayon, tried first), the bf16 kernel shared the two cores with them, and
/// the bench model's batch-1 decode took 25-26 ms, against 21-25 ms this way.
fn for_each_part(
    parts: usize,
    threads: usize,
    spawn: impl Fn(Arc<Job>),
    work: &(dyn Fn(usize) + Sync),
) {
    // SAFETY: only the lifetime is erased. `work` is called for claimed parts only, and this
    // function returns only after every part is finished, so no call outlives the borrow.
    let work = unsafe {
        std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), *const (dyn Fn(usize) + Sync)>(
            work,
        )
    };
    let job = Arc::new(Job {
        work,
        parts,
        next: AtomicUsize::new(0),
        finished: AtomicUsize::new(0),
    });
    for _ in 1..threads.min(parts) {
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

/// One call's parts, shared by the caller and its helpers.
struct Job {
    /// What to do with a claimed part (see [`for_each_part`] for its lifetime).
    work: *const (dyn Fn(usize) + Sync),
    parts: usize,
    /// The next unclaimed part.
    next: AtomicUsize,
    /// Parts done.
    finished: AtomicUsize,
}

// SAFETY: `work` is `Sync` and is called only for a claimed part, while `for_each_part` is
// still waiting, so it is live then.
unsafe impl Send for Job {}
unsafe impl Sync for Job {}

impl Job {
    fn work(&self) {
        loop {
            let part = self.next.fetch_add(1, Ordering::Relaxed);
            if part >= self.parts {
                return;
            }
            // SAFETY: a claimed part: `for_each_part` is still waiting (see above).
            unsafe { (*self.work)(part) };
            self.finished.fetch_add(1, Ordering::Release);
        }
    }
}

/// A result's base pointer, shared by the threads that write disjoint parts of it.
#[derive(Clone, Copy)]
struct Out(*mut f32);

// SAFETY: each thread writes only its own part of the result (see the users).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// The pointer `offset` f32s on (as a method, so that a closure captures the whole `Out`).
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

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
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // The vectors widened to f32 once (exactly), for every weight row to reuse.
            let xf: Vec<f32> = xb.iter().map(|v| v.to_f32()).collect();
            // SAFETY: the CPU has the features; `xf` is `x`'s block, the slices bound the rest.
            unsafe { avx2::bf16_block(&xf, &block, n0..n1) };
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

/// The kernel without AVX-512 BF16 or AVX2: bf16 widened to f32 (exactly), 16 partial sums
/// per product so that the compiler vectorises it.
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

/// A bf16 kernel's rows `j, j + h, .., j + (R - 1) h` of the weight against its vectors
/// (`*const X`: bf16 as given, or widened to f32), into `y`, with `k` and `n` (see
/// `avx512::rows_of` and `avx2::bf16_rows`).
#[cfg(target_arch = "x86_64")]
type StreamRows<X> = unsafe fn(*const X, *const bf16, *mut f32, usize, usize, usize, usize);

/// Columns `cols` of a bf16 block: `f` reads `streams` weight rows `h` apart side by side, for
/// each of the first `h` rows of the range, and `single` takes the rows left over.
///
/// # Safety
/// As for the kernels `f` and `single` are (the CPU has their features), with `x`, `w` and `y`
/// the block's and `cols` inside `0..n`.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn over_streams<X>(
    x: *const X,
    w: *const bf16,
    y: *mut f32,
    k: usize,
    n: usize,
    cols: std::ops::Range<usize>,
    streams: usize,
    f: StreamRows<X>,
    single: StreamRows<X>,
) {
    let h = cols.len() / streams;
    for j in cols.start..cols.start + h {
        // SAFETY: rows `j + r * h < cols.end <= n` of `w` exist; the caller's block of `y`.
        unsafe { f(x, w, y, k, n, j, h) };
    }
    for j in cols.start + streams * h..cols.end {
        // SAFETY: as above, one row.
        unsafe { single(x, w, y, k, n, j, 0) };
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
        type Rows = super::StreamRows<bf16>;
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
        // SAFETY: the caller's block; `f` and `single` are this CPU's.
        unsafe { super::over_streams(x.as_ptr(), w.as_ptr(), y, k, n, cols, streams, f, single) };
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

/// `y[m, n] += x[:, rows] · w[rows, :]`, where `x` is `[m, k]` and `w` is `[k, n]`: the rows
/// of `w` in groups of [`F32_ROWS`], each group read in steps of [`F32_COLUMNS`] columns, and
/// each step multiplied by 4 vectors at a time (AVX2 and FMA when the CPU has them).
///
/// # Safety
/// `y` must point to `m * n` f32s that nothing else touches during the call.
#[allow(clippy::too_many_arguments)]
unsafe fn f32_rows(
    x: &[f32],
    w: &[f32],
    y: *mut f32,
    m: usize,
    k: usize,
    n: usize,
    rows: std::ops::Range<usize>,
) {
    assert!(x.len() == m * k && w.len() == k * n && rows.end <= k);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features; the caller's `y`; the assert bounds `x` and `w`.
        unsafe { avx2::rows(x.as_ptr(), w.as_ptr(), y, m, k, n, rows) };
        return;
    }
    // SAFETY: the caller's `y`, `m * n` f32s.
    portable_f32_rows(
        x,
        w,
        unsafe { std::slice::from_raw_parts_mut(y, m * n) },
        k,
        n,
        rows,
    );
}

/// [`f32_rows`] without AVX2 and FMA: plain loops that the compiler vectorises.
fn portable_f32_rows(
    x: &[f32],
    w: &[f32],
    y: &mut [f32],
    k: usize,
    n: usize,
    rows: std::ops::Range<usize>,
) {
    for r in rows {
        let wr = &w[r * n..(r + 1) * n];
        for (i, yr) in y.chunks_exact_mut(n).enumerate() {
            let xv = x[i * k + r];
            for (a, b) in yr.iter_mut().zip(wr) {
                *a += xv * b;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{F32_COLUMNS, F32_ROWS};
    use std::arch::x86_64::*;

    /// [`super::f32_rows`] with AVX2 and FMA.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; `x` is `[m, k]`, `w` is `[k, n]` with `rows.end <= k`,
    /// and `y` is `[m, n]`, the caller's alone.
    pub(super) unsafe fn rows(
        x: *const f32,
        w: *const f32,
        y: *mut f32,
        m: usize,
        k: usize,
        n: usize,
        rows: std::ops::Range<usize>,
    ) {
        type Group =
            unsafe fn(*const f32, *const f32, *mut f32, usize, usize, usize, usize, usize, usize);
        let mut r0 = rows.start;
        while r0 < rows.end {
            let whole = rows.end - r0 >= F32_ROWS;
            let (step, r1) = if whole {
                (F32_ROWS, r0 + F32_ROWS)
            } else {
                (1, rows.end)
            };
            for c0 in (0..n).step_by(F32_COLUMNS) {
                let c1 = (c0 + F32_COLUMNS).min(n);
                for m0 in (0..m).step_by(4) {
                    let f: Group = match ((m - m0).min(4), whole) {
                        (1, true) => group::<1, F32_ROWS>,
                        (2, true) => group::<2, F32_ROWS>,
                        (3, true) => group::<3, F32_ROWS>,
                        (4, true) => group::<4, F32_ROWS>,
                        (1, false) => group::<1, 1>,
                        (2, false) => group::<2, 1>,
                        (3, false) => group::<3, 1>,
                        _ => group::<4, 1>,
                    };
                    for r in (r0..r1).step_by(step) {
                        // SAFETY: rows `r..r + step <= rows.end` of `w`, vectors `m0..m0 + 4`
                        // (at most `m`) of `x` and `y`, columns `c0..c1 <= n`.
                        unsafe { f(x, w, y, k, n, m0, r, c0, c1) };
                    }
                }
            }
            r0 = r1;
        }
    }

    /// The bf16 kernel's block ([`super::Block`]) on CPUs without AVX-512 BF16: `xf` is the
    /// block's vectors widened to f32. As the AVX-512 path, `R` weight rows far apart are read
    /// side by side (streams), each widened to f32 8 values at a time and multiplied into
    /// `M * R` f32 accumulators with FMA.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; `b` as for `super::portable_block`; `xf` holds
    /// `b.m * b.k` values; `1 <= b.m <= 8`.
    pub(super) unsafe fn bf16_block(
        xf: &[f32],
        b: &super::Block<'_>,
        cols: std::ops::Range<usize>,
    ) {
        let super::Block { w, y, m, k, n, .. } = *b;
        assert_eq!(xf.len(), m * k);
        type Rows = super::StreamRows<f32>;
        let (streams, f, single): (usize, Rows, Rows) = match m {
            1 => (8, bf16_rows::<1, 8>, bf16_rows::<1, 1>),
            2 => (4, bf16_rows::<2, 4>, bf16_rows::<2, 1>),
            3 => (4, bf16_rows::<3, 4>, bf16_rows::<3, 1>),
            4 => (2, bf16_rows::<4, 2>, bf16_rows::<4, 1>),
            5 => (2, bf16_rows::<5, 2>, bf16_rows::<5, 1>),
            6 => (2, bf16_rows::<6, 2>, bf16_rows::<6, 1>),
            7 => (1, bf16_rows::<7, 1>, bf16_rows::<7, 1>),
            8 => (1, bf16_rows::<8, 1>, bf16_rows::<8, 1>),
            _ => unreachable!("blocks hold 1 to 8 rows"),
        };
        // SAFETY: the caller's block; `f` and `single` are this CPU's.
        unsafe { super::over_streams(xf.as_ptr(), w.as_ptr(), y, k, n, cols, streams, f, single) };
    }

    /// Weight rows `j, j + h, .., j + (R - 1) h` (bf16, `[n, k]`) against the `M` f32 vectors:
    /// `y[i, j + r h] = x[i] · w[j + r h]`, with f32 sums.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn bf16_rows<const M: usize, const R: usize>(
        x: *const f32,
        w: *const half::bf16,
        y: *mut f32,
        k: usize,
        n: usize,
        j: usize,
        h: usize,
    ) {
        // SAFETY (every access below): inside rows `j + r h` of `w`, each `k` long, and the `M`
        // vectors of `x`; `y` as the caller's.
        let mut row = [w; R];
        for r in 0..R {
            row[r] = unsafe { w.add((j + r * h) * k) };
        }
        let mut acc = [[_mm256_setzero_ps(); R]; M];
        let mut kk = 0;
        while kk + 8 <= k {
            let mut wv = [_mm256_setzero_ps(); R];
            for r in 0..R {
                // bf16 → f32: the 16 bits become the top half of each 32-bit lane.
                let raw = unsafe { _mm_loadu_si128(row[r].add(kk).cast()) };
                wv[r] = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
            }
            for i in 0..M {
                let xv = unsafe { _mm256_loadu_ps(x.add(i * k + kk)) };
                for r in 0..R {
                    acc[i][r] = _mm256_fmadd_ps(xv, wv[r], acc[i][r]);
                }
            }
            kk += 8;
        }
        for i in 0..M {
            for r in 0..R {
                // The 8 lanes, then the tail, summed in f32.
                let hi = _mm256_extractf128_ps(acc[i][r], 1);
                let q = _mm_add_ps(_mm256_castps256_ps128(acc[i][r]), hi);
                let d = _mm_add_ps(q, _mm_movehl_ps(q, q));
                let mut t = _mm_cvtss_f32(_mm_add_ss(d, _mm_shuffle_ps(d, d, 1)));
                for l in kk..k {
                    t += unsafe { *x.add(i * k + l) * (*row[r].add(l)).to_f32() };
                }
                unsafe { *y.add(i * n + j + r * h) = t };
            }
        }
    }

    /// `y[m0 + i, c0..c1] += Σ_r x[m0 + i, r0 + r] · w[r0 + r, c0..c1]` for `i < M`, `r < R`:
    /// the `R` weight rows are read side by side, 8 columns at a time, and each vector's
    /// 8 sums are loaded, updated in row order and stored once per step.
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn group<const M: usize, const R: usize>(
        x: *const f32,
        w: *const f32,
        y: *mut f32,
        k: usize,
        n: usize,
        m0: usize,
        r0: usize,
        c0: usize,
        c1: usize,
    ) {
        // SAFETY (every access below): inside rows `r0..r0 + R` and columns `c0..c1` of `w`,
        // vectors `m0..m0 + M` of `x` and `y` (the caller's bounds).
        let mut xs = [[_mm256_setzero_ps(); R]; M];
        let mut xv = [[0f32; R]; M];
        for i in 0..M {
            for r in 0..R {
                xv[i][r] = unsafe { *x.add((m0 + i) * k + r0 + r) };
                xs[i][r] = _mm256_set1_ps(xv[i][r]);
            }
        }
        let mut wr = [w; R];
        for r in 0..R {
            wr[r] = unsafe { w.add((r0 + r) * n) };
        }
        let mut c = c0;
        while c + 8 <= c1 {
            let mut wv = [_mm256_setzero_ps(); R];
            for r in 0..R {
                wv[r] = unsafe { _mm256_loadu_ps(wr[r].add(c)) };
            }
            for i in 0..M {
                let yp = unsafe { y.add((m0 + i) * n + c) };
                let mut a = unsafe { _mm256_loadu_ps(yp) };
                for r in 0..R {
                    a = _mm256_fmadd_ps(xs[i][r], wv[r], a);
                }
                unsafe { _mm256_storeu_ps(yp, a) };
            }
            c += 8;
        }
        for c in c..c1 {
            for i in 0..M {
                let yp = unsafe { y.add((m0 + i) * n + c) };
                let mut a = unsafe { *yp };
                for r in 0..R {
                    a = xv[i][r].mul_add(unsafe { *wr[r].add(c) }, a);
                }
                unsafe { *yp = a };
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

    /// The f32 kernel at every vector count a group handles (1-4, and 5-11 in groups of 4),
    /// row counts that are and are not whole groups of 8 and columns that are and are not
    /// whole 8-lane chunks and 512-column steps, and products big enough to be cut into
    /// parts; the same result again (parts summed in a fixed order).
    #[test]
    fn f32_kernel_matches_the_reference_at_every_shape_class() {
        let values = |len: usize, seed: usize| -> Vec<f32> {
            (0..len)
                .map(|i| (((i * 7 + seed * 13) % 17) as f32 - 8.0) * 0.25)
                .collect()
        };
        for (m, k, n) in [
            (1, 8, 8),
            (1, 7, 3),
            (2, 17, 13),
            (3, 64, 9),
            (4, 95, 17),
            (5, 31, 520),
            (6, 128, 31),
            (7, 100, 7),
            (8, 96, 1030),
            (11, 40, 6),
            (1, 1024, 300),
            (4, 3001, 77),
            (8, 257, 1031),
        ] {
            let (x, w) = (values(m * k, 1), values(k * n, 2));
            let mut want = vec![0f32; m * n];
            for i in 0..m {
                for j in 0..n {
                    let s: f64 = (0..k)
                        .map(|l| f64::from(x[i * k + l]) * f64::from(w[l * n + j]))
                        .sum();
                    want[i * n + j] = s as f32;
                }
            }
            let mut y = vec![f32::NAN; m * n];
            f32_matvec(&x, &w, &mut y, m, k, n);
            assert_eq!(y, want, "m {m} k {k} n {n}");
            let mut again = vec![f32::NAN; m * n];
            f32_matvec(&x, &w, &mut again, m, k, n);
            assert_eq!(again, y, "m {m} k {k} n {n}: run twice");
        }
    }

    #[test]
    fn the_portable_f32_path_matches_the_reference() {
        let (m, k, n) = (3, 21, 10);
        let x: Vec<f32> = (0..m * k).map(|i| (i % 5) as f32 - 2.0).collect();
        let w: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 * 0.5).collect();
        let mut y = vec![0f32; m * n];
        portable_f32_rows(&x, &w, &mut y, k, n, 0..k);
        for i in 0..m {
            for j in 0..n {
                let s: f32 = (0..k).map(|l| x[i * k + l] * w[l * n + j]).sum();
                assert_eq!(y[i * n + j], s, "({i}, {j})");
            }
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
