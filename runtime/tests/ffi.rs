//! Typed-FFI custom calls through the plugin's FFI extension: a handler registered from Rust
//! runs inside a compiled program, sees its operand and result buffers, and its error comes
//! back from the execution.

mod common;

use std::sync::OnceLock;

use common::{cpu_client, f32s, module, plugin, Comp};
use std::mem::{offset_of, size_of};

use pjrt_runtime::ffi::{
    handle, FfiBuffer, FfiThreadPool, XlaFfiApi, XlaFfiBuffer, XlaFfiBuffers, XlaFfiCallFrame,
    XlaFfiError, XlaFfiMetadata, XlaFfiMetadataExtension,
};
use pjrt_runtime::{Arg, CompileOptions, ElementType};
use xla_proto::CustomCallApiVersion;

fn add_one(args: &[FfiBuffer], rets: &[FfiBuffer], _: &FfiThreadPool) -> Result<(), String> {
    let [x] = args else {
        return Err(format!("wants one operand, got {}", args.len()));
    };
    let [y] = rets else {
        return Err(format!("wants one result, got {}", rets.len()));
    };
    // SAFETY: buffers of a live call frame.
    let (x, y) = unsafe {
        (
            x.slice::<f32>(ElementType::F32)
                .ok_or("operand is not f32")?,
            y.slice_mut::<f32>(ElementType::F32)
                .ok_or("result is not f32")?,
        )
    };
    if x.len() != y.len() {
        return Err(format!("{} elements in, {} out", x.len(), y.len()));
    }
    for (y, x) in y.iter_mut().zip(x) {
        *y = x + 1.0;
    }
    Ok(())
}

unsafe extern "C" fn add_one_handler(frame: *mut XlaFfiCallFrame) -> *mut XlaFfiError {
    unsafe { handle(frame, "test.add_one", add_one) }
}

unsafe extern "C" fn refuse_handler(frame: *mut XlaFfiCallFrame) -> *mut XlaFfiError {
    unsafe {
        handle(frame, "test.refuse", |_, _, _| {
            Err("operand 0 is f32[3], wants bf16".into())
        })
    }
}

/// y = x + 1 computed by a task on XLA's thread pool, the handler waiting for it.
fn pooled(args: &[FfiBuffer], rets: &[FfiBuffer], pool: &FfiThreadPool) -> Result<(), String> {
    use std::sync::atomic::{AtomicBool, Ordering};
    struct Task {
        x: *const f32,
        y: *mut f32,
        n: usize,
        done: AtomicBool,
    }
    unsafe extern "C" fn run(data: *mut std::ffi::c_void) {
        let t = unsafe { &*(data as *const Task) };
        for i in 0..t.n {
            unsafe { *t.y.add(i) = *t.x.add(i) + 1.0 };
        }
        t.done.store(true, Ordering::Release);
    }
    let task = Task {
        x: args[0].data as *const f32,
        y: rets[0].data as *mut f32,
        n: args[0].element_count(),
        done: AtomicBool::new(false),
    };
    // SAFETY: the handler waits below until the task has run.
    if !unsafe { pool.schedule(run, &task as *const Task as *mut _) } {
        return Err("XLA has no thread pool for this call".into());
    }
    while !task.done.load(Ordering::Acquire) {
        std::thread::yield_now();
    }
    Ok(())
}

unsafe extern "C" fn pooled_handler(frame: *mut XlaFfiCallFrame) -> *mut XlaFfiError {
    unsafe { handle(frame, "test.pooled", pooled) }
}

fn register() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let p = plugin();
        p.register_ffi_handler("test.add_one", "Host", add_one_handler)
            .expect("registering test.add_one");
        p.register_ffi_handler("test.refuse", "Host", refuse_handler)
            .expect("registering test.refuse");
        p.register_ffi_handler("test.pooled", "Host", pooled_handler)
            .expect("registering test.pooled");
    });
}

fn call_module(target: &str) -> xla_proto::HloModuleProto {
    let mut c = Comp::new("main", 1);
    let x = c.param(f32s(&[3]));
    let y = c.inst("custom-call", f32s(&[3]), &[x], |i| {
        i.custom_call_target = target.into();
        i.custom_call_api_version = CustomCallApiVersion::ApiVersionTypedFfi as i32;
    });
    module("ffi", vec![c.finish(y)])
}

#[test]
fn a_registered_handler_runs_inside_the_program() {
    register();
    let client = cpu_client(1);
    let exe = client
        .compile(&call_module("test.add_one"), &CompileOptions::default())
        .unwrap();
    let x = client
        .buffer_from_slice(&[1.0f32, -2.0, 0.5], &[3], 0)
        .unwrap();
    let out = exe.execute(vec![vec![Arg::Borrow(&x)]]).unwrap();
    assert_eq!(out[0][0].to_vec::<f32>().unwrap(), [2.0, -1.0, 1.5]);
}

#[test]
fn a_handler_runs_work_on_xlas_thread_pool() {
    register();
    let client = cpu_client(1);
    let exe = client
        .compile(&call_module("test.pooled"), &CompileOptions::default())
        .unwrap();
    let x = client
        .buffer_from_slice(&[4.0f32, 5.0, 6.0], &[3], 0)
        .unwrap();
    let out = exe.execute(vec![vec![Arg::Borrow(&x)]]).unwrap();
    assert_eq!(out[0][0].to_vec::<f32>().unwrap(), [5.0, 6.0, 7.0]);
}

#[test]
fn a_handler_error_comes_back_from_execute_with_its_message() {
    register();
    let client = cpu_client(1);
    let exe = client
        .compile(&call_module("test.refuse"), &CompileOptions::default())
        .unwrap();
    let x = client
        .buffer_from_slice(&[1.0f32, 2.0, 3.0], &[3], 0)
        .unwrap();
    let err = exe
        .execute(vec![vec![Arg::Borrow(&x)]])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("test.refuse: operand 0 is f32[3], wants bf16"),
        "{err}"
    );
}

#[test]
fn an_unregistered_target_fails_to_compile_naming_it() {
    let client = cpu_client(1);
    let err = client
        .compile(
            &call_module("test.never_registered"),
            &CompileOptions::default(),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("test.never_registered"), "{err}");
}

/// The hand-written structs against `xla/ffi/api/c_api.h` (jaxlib 0.10.2) on x86-64.
#[test]
fn call_frame_layout_matches_the_xla_ffi_header() {
    assert_eq!(size_of::<XlaFfiBuffers>(), 40);
    assert_eq!(offset_of!(XlaFfiCallFrame, api), 16);
    assert_eq!(offset_of!(XlaFfiCallFrame, stage), 32);
    assert_eq!(offset_of!(XlaFfiCallFrame, args), 40);
    assert_eq!(offset_of!(XlaFfiCallFrame, rets), 80);
    assert_eq!(offset_of!(XlaFfiCallFrame, attrs), 120);
    assert_eq!(offset_of!(XlaFfiBuffer, dtype), 16);
    assert_eq!(offset_of!(XlaFfiBuffer, data), 24);
    assert_eq!(offset_of!(XlaFfiBuffer, dims), 40);
    assert_eq!(offset_of!(XlaFfiApi, api_version), 16);
    assert_eq!(offset_of!(XlaFfiApi, error_create), 48);
    assert_eq!(offset_of!(XlaFfiMetadata, traits), 32);
    assert_eq!(offset_of!(XlaFfiMetadataExtension, metadata), 24);
}
