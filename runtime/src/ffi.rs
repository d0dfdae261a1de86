//! Kernels of our own inside XLA programs: typed-FFI custom calls.
//!
//! An HLO `custom-call` with `api_version = API_VERSION_TYPED_FFI` names a target; XLA looks the
//! target up in its handler registry when it compiles the program, and calls the handler with a
//! call frame of operand and result buffers when it runs it. A PJRT plugin exposes that registry
//! through its FFI extension (`PJRT_Extension_Type_FFI`, `pjrt_c_api_ffi_extension.h`, version
//! 2, with `register_handler`): [`Plugin::register_ffi_handler`] registers a handler there, and
//! [`handle`] turns a raw call frame into the operand and result [`FfiBuffer`]s a Rust kernel
//! works on, with XLA's thread pool ([`FfiThreadPool`]).
//!
//! The structs below are the subset of XLA's FFI C API (`xla/ffi/api/c_api.h`, API 0.x as
//! shipped in jaxlib 0.10.2's `include/`) that such a handler reads. They are written by hand
//! rather than generated: the header is not part of the plugin wheel, and the subset is small.
//! Every struct in that API starts with its `struct_size`; the entry points read here sit at the
//! same place in API 0.1 through 0.3 (the plugin speaks 0.2), and the layout tests in
//! `tests/ffi.rs` pin the offsets.

use std::ffi::{c_char, c_void, CString};
use std::ptr;

use crate::error::{Error, Result};
use crate::plugin::Plugin;
use crate::sys;
use crate::ElementType;

/// `XLA_FFI_Extension_Base`.
#[repr(C)]
pub struct XlaFfiExtensionBase {
    pub struct_size: usize,
    pub type_: u32,
    pub next: *mut XlaFfiExtensionBase,
}

/// `XLA_FFI_Extension_Metadata`: the call frame of a metadata query, made once per handler
/// before it is first used.
pub const XLA_FFI_EXTENSION_METADATA: u32 = 1;

/// `XLA_FFI_Api_Version`.
#[repr(C)]
pub struct XlaFfiApiVersion {
    pub struct_size: usize,
    pub extension_start: *mut XlaFfiExtensionBase,
    pub major_version: i32,
    pub minor_version: i32,
}

/// `XLA_FFI_Metadata`.
#[repr(C)]
pub struct XlaFfiMetadata {
    pub struct_size: usize,
    pub api_version: XlaFfiApiVersion,
    pub traits: u32,
}

/// `XLA_FFI_Metadata_Extension`.
#[repr(C)]
pub struct XlaFfiMetadataExtension {
    pub extension_base: XlaFfiExtensionBase,
    pub metadata: *mut XlaFfiMetadata,
}

/// `XLA_FFI_Error_Create_Args`.
#[repr(C)]
pub struct XlaFfiErrorCreateArgs {
    pub struct_size: usize,
    pub extension_start: *mut XlaFfiExtensionBase,
    pub message: *const c_char,
    pub errc: u32,
}

/// `XLA_FFI_Error` (opaque).
#[repr(C)]
pub struct XlaFfiError {
    _private: [u8; 0],
}

type XlaFfiErrorCreate = unsafe extern "C" fn(*mut XlaFfiErrorCreateArgs) -> *mut XlaFfiError;

/// The head of `XLA_FFI_Api`, through `XLA_FFI_ThreadPool_Schedule` (its twelfth entry point):
/// the entry points a handler here calls, and placeholders for the eight between them. Only
/// the first `struct_size` bytes exist: check before reading past `error_destroy`.
#[repr(C)]
pub struct XlaFfiApi {
    pub struct_size: usize,
    pub extension_start: *mut XlaFfiExtensionBase,
    pub api_version: XlaFfiApiVersion,
    pub internal_api: *const c_void,
    pub error_create: Option<XlaFfiErrorCreate>,
    error_get_message: *const c_void,
    error_destroy: Option<XlaFfiErrorDestroy>,
    /// `Handler_Register` … `DeviceMemory_Free`.
    unused: [*const c_void; 8],
    thread_pool_schedule: Option<ThreadPoolSchedule>,
}

/// `XLA_FFI_ThreadPool_Schedule_Args`.
#[repr(C)]
struct ThreadPoolScheduleArgs {
    struct_size: usize,
    extension_start: *mut XlaFfiExtensionBase,
    ctx: *mut c_void,
    task: unsafe extern "C" fn(*mut c_void),
    data: *mut c_void,
}

type ThreadPoolSchedule = unsafe extern "C" fn(*mut ThreadPoolScheduleArgs) -> *mut XlaFfiError;

// `XLA_FFI_ThreadPool_Schedule` is entry point 11 (from 0) after the 48-byte head.
const _: () = assert!(std::mem::offset_of!(XlaFfiApi, thread_pool_schedule) == 48 + 11 * 8);

/// XLA's intra-op thread pool, as a handler's call frame offers it (XLA:CPU: the Eigen pool
/// that runs the program's own parallel work).
pub struct FfiThreadPool {
    api: *const XlaFfiApi,
    ctx: *mut c_void,
}

impl FfiThreadPool {
    /// Runs `task(data)` on one of XLA's threads, or (XLA may choose) on this one, now.
    /// Returns false, without running it, when the frame's API has no thread pool or XLA
    /// refuses (the caller then does the work itself).
    ///
    /// # Safety
    /// `data` must stay valid until `task` has run, and `task` must be safe to call with it
    /// from another thread.
    pub unsafe fn schedule(
        &self,
        task: unsafe extern "C" fn(*mut c_void),
        data: *mut c_void,
    ) -> bool {
        // SAFETY: the frame's API table is live and `struct_size` bytes long.
        let api = unsafe { &*self.api };
        if api.struct_size < size_of::<XlaFfiApi>() {
            return false;
        }
        let Some(schedule) = api.thread_pool_schedule else {
            return false;
        };
        let mut args = ThreadPoolScheduleArgs {
            struct_size: size_of::<ThreadPoolScheduleArgs>(),
            extension_start: ptr::null_mut(),
            ctx: self.ctx,
            task,
            data,
        };
        // SAFETY: valid args; an error is XLA's to hand over, and is destroyed here.
        let err = unsafe { schedule(&mut args) };
        if err.is_null() {
            return true;
        }
        if let Some(destroy) = api.error_destroy {
            let mut args = ErrorDestroyArgs {
                struct_size: size_of::<ErrorDestroyArgs>(),
                extension_start: ptr::null_mut(),
                error: err,
            };
            // SAFETY: `err` is XLA's error, ours to destroy, once.
            unsafe { destroy(&mut args) };
        }
        false
    }
}

/// `XLA_FFI_Error_Destroy_Args`.
#[repr(C)]
struct ErrorDestroyArgs {
    struct_size: usize,
    extension_start: *mut XlaFfiExtensionBase,
    error: *mut XlaFfiError,
}

type XlaFfiErrorDestroy = unsafe extern "C" fn(*mut ErrorDestroyArgs);

/// `XLA_FFI_Buffer`.
#[repr(C)]
pub struct XlaFfiBuffer {
    pub struct_size: usize,
    pub extension_start: *mut XlaFfiExtensionBase,
    pub dtype: u32,
    pub data: *mut c_void,
    pub rank: i64,
    pub dims: *mut i64,
}

/// `XLA_FFI_Args` and `XLA_FFI_Rets` (the same layout).
#[repr(C)]
pub struct XlaFfiBuffers {
    pub struct_size: usize,
    pub extension_start: *mut XlaFfiExtensionBase,
    pub size: i64,
    pub types: *mut u32,
    pub buffers: *mut *mut c_void,
}

/// `XLA_FFI_Attrs`.
#[repr(C)]
pub struct XlaFfiAttrs {
    pub struct_size: usize,
    pub extension_start: *mut XlaFfiExtensionBase,
    pub size: i64,
    pub types: *mut u32,
    pub names: *mut *mut c_void,
    pub attrs: *mut *mut c_void,
}

/// `XLA_FFI_CallFrame`.
#[repr(C)]
pub struct XlaFfiCallFrame {
    pub struct_size: usize,
    pub extension_start: *mut XlaFfiExtensionBase,
    pub api: *const XlaFfiApi,
    pub ctx: *mut c_void,
    pub stage: u32,
    pub args: XlaFfiBuffers,
    pub rets: XlaFfiBuffers,
    pub attrs: XlaFfiAttrs,
}

/// `XLA_FFI_ExecutionStage_EXECUTE`.
pub const XLA_FFI_EXECUTION_STAGE_EXECUTE: u32 = 3;
/// `XLA_FFI_ArgType_BUFFER` / `XLA_FFI_RetType_BUFFER`.
pub const XLA_FFI_BUFFER: u32 = 1;
/// `XLA_FFI_Error_Code_INVALID_ARGUMENT`.
const XLA_FFI_ERROR_INVALID_ARGUMENT: u32 = 3;

/// A typed-FFI handler: `XLA_FFI_Handler`.
pub type FfiHandler = unsafe extern "C" fn(*mut XlaFfiCallFrame) -> *mut XlaFfiError;

/// `PJRT_FFI_Register_Handler_Args` as the pinned plugin (xla-cpu-pjrt 0.0.1) reads it: the
/// handler right after the target name, no `api_version` field (the handler is always a typed
/// one), the traits last; `PJRT_FFI_Register_Handler_Args_STRUCT_SIZE` is 52. XLA's header has
/// changed this struct other than by appending (an `api_version` before `handler` in some
/// revisions), so the size passed is the pinned one: a plugin that wants a larger struct
/// rejects it with an error instead of misreading it.
#[repr(C)]
struct RegisterHandlerArgs {
    struct_size: usize,
    target_name: *const c_char,
    target_name_size: usize,
    handler: *mut c_void,
    platform_name: *const c_char,
    platform_name_size: usize,
    traits: u32,
}

/// `offsetof(traits) + sizeof(traits)`.
const REGISTER_HANDLER_ARGS_STRUCT_SIZE: usize = 52;

type RegisterHandler = unsafe extern "C" fn(*mut RegisterHandlerArgs) -> *mut sys::PJRT_Error;

/// `PJRT_FFI_Extension`: the base, then `type_id_register`, `user_data_add` and (from version
/// 2) `register_handler`.
#[repr(C)]
struct FfiExtension {
    base: sys::PJRT_Extension_Base,
    type_id_register: *mut c_void,
    user_data_add: *mut c_void,
    register_handler: Option<RegisterHandler>,
}

/// One operand or result of a call, as the kernel sees it: element type, dims, and the bytes.
pub struct FfiBuffer {
    pub ty: Option<ElementType>,
    pub dims: Vec<i64>,
    pub data: *mut u8,
}

impl FfiBuffer {
    pub fn element_count(&self) -> usize {
        self.dims.iter().product::<i64>() as usize
    }

    /// The buffer's elements, if they are of type `ty`.
    ///
    /// # Safety
    /// The buffer must come from a live call frame, and nothing may write it meanwhile.
    pub unsafe fn slice<T>(&self, ty: ElementType) -> Option<&[T]> {
        (self.ty == Some(ty) && size_of::<T>() == ty.byte_size())
            .then(|| unsafe { std::slice::from_raw_parts(self.data.cast(), self.element_count()) })
    }

    /// [`FfiBuffer::slice`], writable.
    ///
    /// # Safety
    /// As for [`FfiBuffer::slice`], and nothing else may read or write it meanwhile.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice_mut<T>(&self, ty: ElementType) -> Option<&mut [T]> {
        (self.ty == Some(ty) && size_of::<T>() == ty.byte_size()).then(|| unsafe {
            std::slice::from_raw_parts_mut(self.data.cast(), self.element_count())
        })
    }
}

/// Maps an `XLA_FFI_DataType` (which uses `xla::PrimitiveType`'s numbering).
fn element_type(dtype: u32) -> Option<ElementType> {
    let t = xla_proto::PrimitiveType::try_from(dtype as i32).ok()?;
    ElementType::from_primitive_type(t)
}

/// # Safety
/// `list` must be a call frame's argument or result list.
unsafe fn buffers(list: &XlaFfiBuffers, what: &str) -> std::result::Result<Vec<FfiBuffer>, String> {
    (0..list.size as usize)
        .map(|i| {
            // SAFETY: XLA gives `size` types and buffers.
            let (ty, raw) = unsafe { (*list.types.add(i), *list.buffers.add(i)) };
            if ty != XLA_FFI_BUFFER {
                return Err(format!("{what} {i} is not a buffer (type {ty})"));
            }
            // SAFETY: a buffer entry points to an `XLA_FFI_Buffer`.
            let b = unsafe { &*(raw as *const XlaFfiBuffer) };
            let dims = if b.rank == 0 {
                Vec::new()
            } else {
                // SAFETY: `dims` has `rank` entries.
                unsafe { std::slice::from_raw_parts(b.dims, b.rank as usize) }.to_vec()
            };
            Ok(FfiBuffer {
                ty: element_type(b.dtype),
                dims,
                data: b.data.cast(),
            })
        })
        .collect()
}

/// The body of a typed-FFI handler: answers XLA's metadata query (the API version the frame
/// was built with, no traits), and at execution hands the kernel its operand and result
/// buffers and XLA's thread pool. A kernel's `Err` becomes an `INVALID_ARGUMENT` FFI error
/// with its message, which XLA returns from the execution, naming `target`.
///
/// # Safety
/// `frame` must be the call frame XLA passed to the handler.
pub unsafe fn handle(
    frame: *mut XlaFfiCallFrame,
    target: &str,
    kernel: impl FnOnce(&[FfiBuffer], &[FfiBuffer], &FfiThreadPool) -> std::result::Result<(), String>,
) -> *mut XlaFfiError {
    // SAFETY: XLA passes a live frame.
    let frame = unsafe { &*frame };
    let ext = frame.extension_start;
    // SAFETY: a non-null extension list starts with an extension base.
    if !ext.is_null() && unsafe { (*ext).type_ } == XLA_FFI_EXTENSION_METADATA {
        // SAFETY: a metadata extension carries a pointer to the metadata to fill in; the
        // frame's API (the framework's) says which version it speaks.
        unsafe {
            let meta = &mut *(*(ext as *mut XlaFfiMetadataExtension)).metadata;
            let api = &*frame.api;
            meta.api_version.major_version = api.api_version.major_version;
            meta.api_version.minor_version = api.api_version.minor_version;
            meta.traits = 0;
        }
        return ptr::null_mut();
    }
    if frame.stage != XLA_FFI_EXECUTION_STAGE_EXECUTE {
        return ptr::null_mut();
    }
    // SAFETY: the frame's lists are XLA's.
    let result = unsafe { buffers(&frame.args, "operand") }
        .and_then(|args| Ok((args, unsafe { buffers(&frame.rets, "result") }?)))
        .and_then(|(args, rets)| {
            let pool = FfiThreadPool {
                api: frame.api,
                ctx: frame.ctx,
            };
            kernel(&args, &rets, &pool)
        });
    match result {
        Ok(()) => ptr::null_mut(),
        Err(message) => {
            let message = CString::new(format!("{target}: {message}").replace('\0', " "))
                .expect("NULs replaced");
            // SAFETY: the frame's API table starts with `XLA_FFI_Error_Create`, which copies
            // the message.
            unsafe {
                let api = &*frame.api;
                let Some(create) = api.error_create else {
                    return ptr::null_mut();
                };
                let mut args = XlaFfiErrorCreateArgs {
                    struct_size: size_of::<XlaFfiErrorCreateArgs>(),
                    extension_start: ptr::null_mut(),
                    message: message.as_ptr(),
                    errc: XLA_FFI_ERROR_INVALID_ARGUMENT,
                };
                create(&mut args)
            }
        }
    }
}

impl Plugin {
    /// Registers `handler` as typed-FFI custom-call target `target` for `platform` (XLA's
    /// platform name: `Host` for the CPU plugin), so that programs compiled from now on may
    /// call it. XLA's registry is process-wide: register each name once per process.
    pub fn register_ffi_handler(
        &self,
        target: &str,
        platform: &str,
        handler: FfiHandler,
    ) -> Result<()> {
        let ext = self.ffi_extension()?;
        // SAFETY: `ffi_extension` checked the struct covers `register_handler`.
        let Some(register) = (unsafe { (*ext).register_handler }) else {
            return Err(self.missing_extension("PJRT_FFI_Extension.register_handler (NULL)"));
        };
        let mut args = RegisterHandlerArgs {
            struct_size: REGISTER_HANDLER_ARGS_STRUCT_SIZE,
            target_name: target.as_ptr().cast(),
            target_name_size: target.len(),
            handler: handler as *mut c_void,
            platform_name: platform.as_ptr().cast(),
            platform_name_size: platform.len(),
            traits: 0,
        };
        // SAFETY: valid args; the names are copied by the plugin.
        unsafe { self.inner.check(register(&mut args)) }
    }

    fn ffi_extension(&self) -> Result<*const FfiExtension> {
        let needed = std::mem::offset_of!(FfiExtension, register_handler) + size_of::<usize>();
        // SAFETY: the table's head (`struct_size`, `extension_start`) is always present.
        let mut ext = unsafe { (*self.raw_api()).extension_start };
        while !ext.is_null() {
            // SAFETY: each list entry starts with a `PJRT_Extension_Base`.
            let base = unsafe { &*ext };
            if base.type_ == sys::PJRT_Extension_Type::PJRT_Extension_Type_FFI {
                if base.struct_size < needed {
                    return Err(self.missing_extension(
                        "PJRT_FFI_Extension.register_handler (extension version < 2)",
                    ));
                }
                return Ok(ext as *const FfiExtension);
            }
            ext = base.next;
        }
        Err(self.missing_extension("the FFI extension (PJRT_Extension_Type_FFI)"))
    }

    fn missing_extension(&self, what: &'static str) -> Error {
        Error::MissingExtension {
            path: self.path().to_path_buf(),
            what,
        }
    }
}
