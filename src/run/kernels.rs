//! The runtime's own kernels, registered with the PJRT plugin as typed-FFI custom-call targets
//! before a graph that calls them is compiled (the graph's manifest entry lists them in
//! `runtime_kernels`).
//!
//! One kernel so far: [`MATVEC_KERNEL_TARGET`], `y = x · wᵀ` for a few bf16 rows against a
//! bf16 `[n, k]` weight, with f32 sums ([`crate::ir::ops::MatvecKernel`]). The product reads
//! every weight byte once, so it is bound by memory bandwidth: the kernel splits the weight's
//! rows between the threads, and each thread streams several rows at a time and multiplies
//! them by every vector with AVX-512 BF16 dot products (`vdpbf16ps`: two bf16 products summed
//! into each f32 lane). Without AVX-512 BF16 it widens the bf16 values to f32 instead.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;

use half::bf16;
use pjrt_runtime::ffi::{handle, FfiBuffer, XlaFfiCallFrame, XlaFfiError};
use pjrt_runtime::{ElementType, Plugin};

pub use crate::ir::ops::MATVEC_KERNEL_TARGET;

/// XLA's platform name for the CPU plugin's handlers.
const PLATFORM: &str = "Host";

/// Below this many weight elements a product runs on the calling thread alone: handing it to
/// the pool costs more than it saves.
const PARALLEL_FROM: usize = 1 << 16;

/// How many parts a product's rows are cut into per pool thread. In a standalone loop over
/// Phi-3-mini's batch-1 shapes, 4 parts averaged 25-27 GB/s where 1 part averaged 22-25 (one
/// run each; 16 parts were no better than 4).
const PARTS_PER_THREAD: usize = 4;

/// Registers every kernel in `targets` with `plugin`, once per plugin per process; an unknown
/// target is an error naming it.
pub fn register(plugin: &Plugin, targets: &[String]) -> Result<(), String> {
    static DONE: Mutex<Option<HashSet<(PathBuf, String)>>> = Mutex::new(None);
    let mut done = DONE.lock().expect("no panics under the lock");
    let done = done.get_or_insert_with(HashSet::new);
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
fn matvec_call(args: &[FfiBuffer], rets: &[FfiBuffer]) -> Result<(), String> {
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
    matvec(xs, ws, ys, m as usize, k as usize, n as usize);
    Ok(())
}

/// `y[m, n] = x[m, k] · w[n, k]ᵀ` with f32 sums, on the rayon pool (the calling thread
/// waits for it).
pub fn matvec(x: &[bf16], w: &[bf16], y: &mut [f32], m: usize, k: usize, n: usize) {
    assert_eq!(x.len(), m * k, "x is [m, k]");
    assert_eq!(w.len(), n * k, "w is [n, k]");
    assert_eq!(y.len(), m * n, "y is [m, n]");
    let out = Out(y.as_mut_ptr());
    if n * k < PARALLEL_FROM {
        // SAFETY: one caller writes all of `y`.
        unsafe { rows(x, w, out, m, k, n, 0, n) };
        return;
    }
    // A few parts per thread, each whole blocks of 8 rows, so that a thread the OS delays
    // leaves its parts to the others instead of holding up the call.
    let parts = rayon::current_num_threads().max(1) * PARTS_PER_THREAD;
    let chunk = n.div_ceil(parts).div_ceil(8) * 8;
    rayon::scope(|s| {
        for n0 in (0..n).step_by(chunk) {
            let n1 = (n0 + chunk).min(n);
            // SAFETY: each task writes its own columns `n0..n1` of `y`.
            s.spawn(move |_| unsafe { rows(x, w, out, m, k, n, n0, n1) });
        }
    });
}

/// `y`'s base pointer, shared by the tasks that write disjoint columns of it.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: tasks write disjoint elements, and `rayon::scope` joins them before `y` is used again.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

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
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512bf16")
            && std::arch::is_x86_feature_detected!("avx512bw")
        {
            // SAFETY: the CPU has the features; the slices bound every access.
            unsafe { avx512::block(xb, w, yb, mb, k, n, n0, n1) };
            continue;
        }
        // SAFETY: forwarded.
        unsafe { portable_block(xb, w, yb, mb, k, n, n0, n1) };
    }
}

/// The kernel without AVX-512 BF16: bf16 widened to f32 (exactly), 16 partial sums per
/// product so that the compiler vectorises it.
#[allow(clippy::too_many_arguments)]
unsafe fn portable_block(
    x: &[bf16],
    w: &[bf16],
    y: *mut f32,
    m: usize,
    k: usize,
    n: usize,
    n0: usize,
    n1: usize,
) {
    for j in n0..n1 {
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

    /// Weight rows a block streams at once for `m` vectors: enough independent loads to keep
    /// the memory busy, few enough accumulators (`R * m`) to stay in the 32 registers.
    macro_rules! dispatch {
        ($m:expr, $($mm:literal => $r:literal),*) => {
            match $m {
                $($mm => block_of::<$r, $mm>,)*
                _ => unreachable!("blocks hold 1 to 8 rows"),
            }
        };
    }

    /// # Safety
    /// The CPU must have AVX-512 F, BW and BF16; `y` as for `super::rows`; `1 <= m <= 8`.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn block(
        x: &[bf16],
        w: &[bf16],
        y: *mut f32,
        m: usize,
        k: usize,
        n: usize,
        n0: usize,
        n1: usize,
    ) {
        let f = dispatch!(m, 1 => 8, 2 => 6, 3 => 4, 4 => 4, 5 => 3, 6 => 3, 7 => 3, 8 => 3);
        let r = match m {
            1 => 8,
            2 => 6,
            3 | 4 => 4,
            _ => 3,
        };
        let mut j = n0;
        while j + r <= n1 {
            // SAFETY: rows `j..j + r` of `w` exist (`j + r <= n1 <= n`).
            unsafe { f(x.as_ptr(), w.as_ptr(), y, k, n, j) };
            j += r;
        }
        // The last rows one at a time.
        let one = dispatch!(m, 1 => 1, 2 => 1, 3 => 1, 4 => 1, 5 => 1, 6 => 1, 7 => 1, 8 => 1);
        while j < n1 {
            // SAFETY: as above, for one row.
            unsafe { one(x.as_ptr(), w.as_ptr(), y, k, n, j) };
            j += 1;
        }
    }

    /// Weight rows `j..j + R` against the `M` vectors: `y[i, j + r] = x[i] · w[j + r]`.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn block_of<const R: usize, const M: usize>(
        x: *const bf16,
        w: *const bf16,
        y: *mut f32,
        k: usize,
        n: usize,
        j: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); M]; R];
        let mut kk = 0;
        while kk < k {
            // 32 bf16 per register; the last chunk masked (masked-off lanes read as zero).
            let left = k - kk;
            let mask: __mmask32 = if left >= 32 { !0 } else { (1u32 << left) - 1 };
            let mut wv = [_mm512_setzero_si512(); R];
            for (r, v) in wv.iter_mut().enumerate() {
                // SAFETY: the mask keeps the load inside row `j + r`.
                *v = unsafe { _mm512_maskz_loadu_epi16(mask, w.add((j + r) * k + kk).cast()) };
            }
            for i in 0..M {
                // SAFETY: as above, inside vector `i`.
                let xv = unsafe { _mm512_maskz_loadu_epi16(mask, x.add(i * k + kk).cast()) };
                let xv: __m512bh = unsafe { std::mem::transmute::<__m512i, __m512bh>(xv) };
                for r in 0..R {
                    let wr = unsafe { std::mem::transmute::<__m512i, __m512bh>(wv[r]) };
                    acc[r][i] = _mm512_dpbf16_ps(acc[r][i], wr, xv);
                }
            }
            kk += 32;
        }
        for (r, a) in acc.iter().enumerate() {
            for (i, v) in a.iter().enumerate() {
                // SAFETY: row `i`, column `j + r` of the caller's block.
                unsafe { *y.add(i * n + j + r) = _mm512_reduce_add_ps(*v) };
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
        unsafe { portable_block(&x, &w, y.as_mut_ptr(), m, k, n, 0, n) };
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
