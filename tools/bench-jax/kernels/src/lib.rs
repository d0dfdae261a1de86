//! `phi3_register_kernels`: registers the phi3 runtime's kernels (`phi3_neuron::run::kernels`)
//! with a PJRT plugin that the calling process has already loaded, so that the executables it
//! compiles can call them. `tools/bench-jax/bench.py` loads this library with ctypes to run
//! the sets built with `--matvec kernel` in jaxlib, on the same plugin as the JAX model.
//!
//! Loading the plugin's path again returns the library the process already has (`dlopen`
//! hands back the same handle), so the handlers land in the registry that plugin's compiler
//! reads. Its `PJRT_Plugin_Initialize` is called a second time, which the CPU plugin's no-op
//! initializer allows.

use std::ffi::{c_char, CStr};

use phi3_neuron::run::kernels::{register, F32_MATVEC_KERNEL_TARGET, MATVEC_KERNEL_TARGET};

/// Registers every kernel of the runtime with the plugin at `plugin_path` (a NUL-terminated
/// path). Returns 0, or -1 with a NUL-terminated message written into `err` (at most
/// `err_len` bytes, `err_len` > 0).
///
/// # Safety
/// `plugin_path` must be a NUL-terminated string and `err` must point to `err_len` writable
/// bytes.
#[no_mangle]
pub unsafe extern "C" fn phi3_register_kernels(
    plugin_path: *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> i32 {
    // SAFETY: the caller's NUL-terminated path.
    let path = unsafe { CStr::from_ptr(plugin_path) };
    let result = path
        .to_str()
        .map_err(|e| format!("the plugin path is not UTF-8: {e}"))
        .and_then(|p| pjrt_runtime::Plugin::load(p).map_err(|e| e.to_string()))
        .and_then(|plugin| {
            register(
                &plugin,
                &[
                    MATVEC_KERNEL_TARGET.to_string(),
                    F32_MATVEC_KERNEL_TARGET.to_string(),
                ],
            )
        });
    match result {
        Ok(()) => 0,
        Err(message) => {
            let bytes = message.as_bytes();
            let n = bytes.len().min(err_len.saturating_sub(1));
            if err_len > 0 {
                // SAFETY: `n + 1 <= err_len` bytes of the caller's buffer.
                unsafe {
                    std::ptr::copy_nonoverlapping(bytes.as_ptr(), err.cast::<u8>(), n);
                    *err.add(n) = 0;
                }
            }
            -1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;

    fn call(path: &str) -> (i32, String) {
        let path = CString::new(path).unwrap();
        let mut err = vec![0 as c_char; 256];
        // SAFETY: a NUL-terminated path and a 256-byte buffer.
        let rc = unsafe { phi3_register_kernels(path.as_ptr(), err.as_mut_ptr(), err.len()) };
        // SAFETY: the function NUL-terminates what it writes; the buffer starts zeroed.
        let msg = unsafe { CStr::from_ptr(err.as_ptr()) };
        (rc, msg.to_string_lossy().into_owned())
    }

    /// A plugin that is not there is one message naming the path; the real plugin (the one
    /// the tests run on) takes both kernels, twice without complaint.
    #[test]
    fn registers_with_the_plugin_or_names_what_failed() {
        let (rc, msg) = call("/nonexistent/xla_cpu_pjrt.so");
        assert_eq!(rc, -1);
        assert!(msg.contains("/nonexistent/xla_cpu_pjrt.so"), "{msg}");
        let plugin = pjrt_runtime::Plugin::from_env().unwrap_or_else(|e| panic!("{e}"));
        let path = plugin.path().to_str().unwrap().to_string();
        for _ in 0..2 {
            assert_eq!(call(&path), (0, String::new()));
        }
    }
}
