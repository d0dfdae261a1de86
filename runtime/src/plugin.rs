//! Loading a PJRT plugin and calling into its `PJRT_Api` table.
//!
//! A plugin is a shared object exporting `GetPjrtApi`, which returns a table of function
//! pointers plus its size. The table may be shorter than the one in our bindings (an older
//! plugin) or longer (a newer one), so every entry point we use is bounds-checked against
//! `PJRT_Api.struct_size` once, at load time, and copied into [`Fns`]; the crate never reads the
//! raw table afterwards.

use std::collections::HashMap;
use std::mem::{offset_of, size_of};
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::{Mutex, OnceLock};

use crate::error::{Error, ErrorCode, Result};
use crate::sys;

/// Environment variable naming the plugin's shared object.
pub const PLUGIN_ENV: &str = "PJRT_PLUGIN";

/// The version of `pjrt_c_api.h` that `src/sys.rs` was generated from. A plugin must report
/// major 0 (PJRT has no stability promise across majors) and a minor at least this large
/// (argument structs only grow, and an older plugin rejects our larger structs).
pub const BINDINGS_API_MAJOR: u32 = sys::PJRT_API_MAJOR;
/// See [`BINDINGS_API_MAJOR`].
pub const BINDINGS_API_MINOR: u32 = sys::PJRT_API_MINOR;

/// Version of the wheel `tools/install-pjrt-plugin` installs; part of the default path.
const DEFAULT_PLUGIN_VERSION: &str = "0.0.1";

/// Marks a bindgen `*_Args` struct so [`new_args`] can zero it and fill in `struct_size`.
///
/// # Safety
/// The all-zero bit pattern must be a valid value of the type (true for bindgen's PJRT structs:
/// they hold integers, raw pointers, `Option<fn>` and `u32` newtypes), and `STRUCT_SIZE` must be
/// the header's `<Name>_STRUCT_SIZE`.
pub(crate) unsafe trait PjrtArgs: Sized {
    const STRUCT_SIZE: usize;
    fn set_struct_size(&mut self, size: usize);
}

macro_rules! pjrt_args {
    ($($ty:ident => $size:ident),* $(,)?) => {$(
        // SAFETY: see `PjrtArgs`; the size constant is generated from the same header.
        unsafe impl PjrtArgs for sys::$ty {
            const STRUCT_SIZE: usize = sys::$size as usize;
            fn set_struct_size(&mut self, size: usize) {
                self.struct_size = size;
            }
        }
    )*};
}

pjrt_args! {
    PJRT_Error_Destroy_Args => PJRT_Error_Destroy_Args_STRUCT_SIZE,
    PJRT_Error_Message_Args => PJRT_Error_Message_Args_STRUCT_SIZE,
    PJRT_Error_GetCode_Args => PJRT_Error_GetCode_Args_STRUCT_SIZE,
    PJRT_Plugin_Initialize_Args => PJRT_Plugin_Initialize_Args_STRUCT_SIZE,
    PJRT_Event_Destroy_Args => PJRT_Event_Destroy_Args_STRUCT_SIZE,
    PJRT_Event_Await_Args => PJRT_Event_Await_Args_STRUCT_SIZE,
    PJRT_NamedValue => PJRT_NamedValue_STRUCT_SIZE,
    PJRT_Client_Create_Args => PJRT_Client_Create_Args_STRUCT_SIZE,
    PJRT_Client_Destroy_Args => PJRT_Client_Destroy_Args_STRUCT_SIZE,
    PJRT_Client_PlatformName_Args => PJRT_Client_PlatformName_Args_STRUCT_SIZE,
    PJRT_Client_AddressableDevices_Args => PJRT_Client_AddressableDevices_Args_STRUCT_SIZE,
    PJRT_Client_Compile_Args => PJRT_Client_Compile_Args_STRUCT_SIZE,
    PJRT_Program => PJRT_Program_STRUCT_SIZE,
    PJRT_Client_BufferFromHostBuffer_Args => PJRT_Client_BufferFromHostBuffer_Args_STRUCT_SIZE,
    PJRT_Device_GetDescription_Args => PJRT_Device_GetDescription_Args_STRUCT_SIZE,
    PJRT_DeviceDescription_Id_Args => PJRT_DeviceDescription_Id_Args_STRUCT_SIZE,
    PJRT_Executable_Destroy_Args => PJRT_Executable_Destroy_Args_STRUCT_SIZE,
    PJRT_Executable_NumOutputs_Args => PJRT_Executable_NumOutputs_Args_STRUCT_SIZE,
    PJRT_LoadedExecutable_Destroy_Args => PJRT_LoadedExecutable_Destroy_Args_STRUCT_SIZE,
    PJRT_LoadedExecutable_GetExecutable_Args => PJRT_LoadedExecutable_GetExecutable_Args_STRUCT_SIZE,
    PJRT_LoadedExecutable_AddressableDevices_Args => PJRT_LoadedExecutable_AddressableDevices_Args_STRUCT_SIZE,
    PJRT_LoadedExecutable_Execute_Args => PJRT_LoadedExecutable_Execute_Args_STRUCT_SIZE,
    PJRT_ExecuteOptions => PJRT_ExecuteOptions_STRUCT_SIZE,
    PJRT_Buffer_Destroy_Args => PJRT_Buffer_Destroy_Args_STRUCT_SIZE,
    PJRT_Buffer_ElementType_Args => PJRT_Buffer_ElementType_Args_STRUCT_SIZE,
    PJRT_Buffer_Dimensions_Args => PJRT_Buffer_Dimensions_Args_STRUCT_SIZE,
    PJRT_Buffer_Device_Args => PJRT_Buffer_Device_Args_STRUCT_SIZE,
    PJRT_Buffer_ToHostBuffer_Args => PJRT_Buffer_ToHostBuffer_Args_STRUCT_SIZE,
    PJRT_Buffer_UnsafePointer_Args => PJRT_Buffer_UnsafePointer_Args_STRUCT_SIZE,
    PJRT_Event_IsReady_Args => PJRT_Event_IsReady_Args_STRUCT_SIZE,
    PJRT_Executable_Serialize_Args => PJRT_Executable_Serialize_Args_STRUCT_SIZE,
    PJRT_Executable_DeserializeAndLoad_Args => PJRT_Executable_DeserializeAndLoad_Args_STRUCT_SIZE,
    PJRT_Executable_OptimizedProgram_Args => PJRT_Executable_OptimizedProgram_Args_STRUCT_SIZE,
}

/// A zeroed args struct with `struct_size` set: the PJRT calling convention (pjrt.md §1).
pub(crate) fn new_args<T: PjrtArgs>() -> T {
    // SAFETY: `PjrtArgs` guarantees all-zero is a valid value.
    let mut args: T = unsafe { std::mem::zeroed() };
    args.set_struct_size(T::STRUCT_SIZE);
    args
}

/// Extracts `F` from bindgen's `Option<F>` function-pointer typedefs.
pub(crate) trait OptionalFn {
    type F: Copy;
}
impl<F: Copy> OptionalFn for Option<F> {
    type F = F;
}

macro_rules! entry_points {
    ($($name:ident),* $(,)?) => {
        /// The entry points this crate calls, bounds-checked and non-NULL.
        #[allow(non_snake_case)]
        #[derive(Clone, Copy)]
        pub(crate) struct Fns {
            $(pub(crate) $name: <sys::$name as OptionalFn>::F,)*
        }

        /// Byte offset just past each entry point's slot in `PJRT_Api`.
        pub(crate) const ENTRY_POINT_ENDS: &[(&str, usize)] = &[
            $((stringify!($name), offset_of!(sys::PJRT_Api, $name) + size_of::<sys::$name>()),)*
        ];

        impl Fns {
            /// Reads each slot only after checking it lies inside the plugin's table.
            ///
            /// # Safety
            /// `api` must point to a live `PJRT_Api` whose first `struct_size` bytes are readable.
            unsafe fn read(api: *const sys::PJRT_Api, struct_size: usize, path: &Path) -> Result<Fns> {
                check_table_size(struct_size, path)?;
                Ok(Fns {
                    $($name: {
                        // SAFETY: `check_table_size` proved this slot is within `struct_size`
                        // bytes; `addr_of!` avoids a reference to the (possibly shorter) table.
                        let slot = unsafe { ptr::addr_of!((*api).$name).read_unaligned() };
                        slot.ok_or_else(|| Error::MissingEntryPoint {
                            path: path.to_owned(),
                            name: stringify!($name),
                            needed: offset_of!(sys::PJRT_Api, $name) + size_of::<sys::$name>(),
                            struct_size,
                            is_null: true,
                        })?
                    },)*
                })
            }
        }
    };
}

entry_points! {
    PJRT_Error_Destroy,
    PJRT_Error_Message,
    PJRT_Error_GetCode,
    PJRT_Plugin_Initialize,
    PJRT_Event_Destroy,
    PJRT_Event_Await,
    PJRT_Client_Create,
    PJRT_Client_Destroy,
    PJRT_Client_PlatformName,
    PJRT_Client_AddressableDevices,
    PJRT_Client_Compile,
    PJRT_Client_BufferFromHostBuffer,
    PJRT_DeviceDescription_Id,
    PJRT_Device_GetDescription,
    PJRT_Executable_Destroy,
    PJRT_Executable_NumOutputs,
    PJRT_LoadedExecutable_Destroy,
    PJRT_LoadedExecutable_GetExecutable,
    PJRT_LoadedExecutable_AddressableDevices,
    PJRT_LoadedExecutable_Execute,
    PJRT_Buffer_Destroy,
    PJRT_Buffer_ElementType,
    PJRT_Buffer_Dimensions,
    PJRT_Buffer_Device,
    PJRT_Buffer_ToHostBuffer,
}

macro_rules! optional_entry_points {
    ($($name:ident),* $(,)?) => {
        /// Entry points some plugins lack; each is `None` when outside the plugin's table or
        /// NULL, and the methods that need one say so with [`Error::MissingEntryPoint`].
        #[allow(non_snake_case)]
        #[derive(Clone, Copy)]
        pub(crate) struct OptionalFns {
            $(pub(crate) $name: Option<<sys::$name as OptionalFn>::F>,)*
        }

        impl OptionalFns {
            /// # Safety
            /// As [`Fns::read`].
            unsafe fn read(api: *const sys::PJRT_Api, struct_size: usize) -> OptionalFns {
                OptionalFns {
                    $($name: {
                        let end = offset_of!(sys::PJRT_Api, $name) + size_of::<sys::$name>();
                        if end <= struct_size {
                            // SAFETY: the slot lies within the plugin's table (checked above).
                            unsafe { ptr::addr_of!((*api).$name).read_unaligned() }
                        } else {
                            None
                        }
                    },)*
                }
            }
        }
    };
}

/// The optional entry point `$name` of `$api` (an [`Api`]), or [`Error::MissingEntryPoint`]
/// naming it and the table size it needs.
macro_rules! optional_fn {
    ($api:expr, $name:ident) => {
        $api.optional.$name.ok_or_else(|| {
            $api.missing(
                stringify!($name),
                std::mem::offset_of!(sys::PJRT_Api, $name) + std::mem::size_of::<sys::$name>(),
            )
        })
    };
}
pub(crate) use optional_fn;

optional_entry_points! {
    PJRT_Event_IsReady,
    PJRT_Buffer_UnsafePointer,
    PJRT_Executable_Serialize,
    PJRT_Executable_DeserializeAndLoad,
    PJRT_Executable_OptimizedProgram,
}

/// Fails with the first entry point (in `PJRT_Api` order) that does not fit in `struct_size`.
pub(crate) fn check_table_size(struct_size: usize, path: &Path) -> Result<()> {
    let mut ends: Vec<_> = ENTRY_POINT_ENDS.to_vec();
    ends.sort_by_key(|&(_, end)| end);
    match ends.into_iter().find(|&(_, end)| end > struct_size) {
        Some((name, needed)) => Err(Error::MissingEntryPoint {
            path: path.to_owned(),
            name,
            needed,
            struct_size,
            is_null: false,
        }),
        None => Ok(()),
    }
}

/// What every handle needs to call the plugin: the checked function table.
pub(crate) struct PluginInner {
    path: PathBuf,
    raw: *const sys::PJRT_Api,
    pub(crate) fns: Fns,
    pub(crate) optional: OptionalFns,
    version: (i32, i32),
    struct_size: usize,
}

/// A loaded PJRT plugin. Cheap to copy: it refers to process-lifetime state.
///
/// The shared object is never unloaded. XLA registers process-global state when it is loaded
/// (op and compiler registries, thread pools, absl flags, LLVM's global options) and has no
/// teardown path for it; `dlclose` followed by a later `dlopen` can crash or double-register.
/// So the `libloading::Library` is leaked, and loading the same path twice returns the same
/// `Plugin` without calling `PJRT_Plugin_Initialize` again.
///
/// `Plugin` is `Send + Sync`: it only holds a `&'static` to an immutable, checked copy of the
/// plugin's function table.
#[derive(Clone, Copy)]
pub struct Plugin {
    pub(crate) inner: &'static PluginInner,
}

// SAFETY: `Fns` holds plain `extern "C"` function pointers copied once at load, and `raw` points
// to the plugin's static, never-written table; nothing in `PluginInner` is mutated after
// construction. PJRT entry points take all their state through explicit handles, whose
// thread-safety is discussed on each handle type.
unsafe impl Send for PluginInner {}
// SAFETY: as above; shared references only read immutable data.
unsafe impl Sync for PluginInner {}

/// Two `Plugin`s are equal when they are the same loaded library.
impl PartialEq for Plugin {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.inner, other.inner)
    }
}
impl Eq for Plugin {}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("path", &self.inner.path)
            .field("api_version", &self.inner.version)
            .field("api_struct_size", &self.inner.struct_size)
            .finish()
    }
}

fn loaded_plugins() -> &'static Mutex<HashMap<PathBuf, &'static PluginInner>> {
    static PLUGINS: OnceLock<Mutex<HashMap<PathBuf, &'static PluginInner>>> = OnceLock::new();
    PLUGINS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Where `tools/install-pjrt-plugin` puts the plugin:
/// `${XDG_CACHE_HOME:-$HOME/.cache}/phi3-neuron/xla-cpu-pjrt-0.0.1/xla_plugins/xla_cpu_pjrt/xla_cpu_pjrt.so`.
/// `None` when neither variable is set.
pub fn default_plugin_path() -> Option<PathBuf> {
    let cache = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?).join(".cache"),
    };
    Some(
        cache
            .join("phi3-neuron")
            .join(format!("xla-cpu-pjrt-{DEFAULT_PLUGIN_VERSION}"))
            .join("xla_plugins/xla_cpu_pjrt/xla_cpu_pjrt.so"),
    )
}

impl Plugin {
    /// Loads the plugin named by `$PJRT_PLUGIN`, or, when that is unset, the one
    /// `tools/install-pjrt-plugin` installs if it is present.
    ///
    /// A `PJRT_PLUGIN` that names a missing file is an error rather than a reason to fall back:
    /// an explicit setting that is wrong should be reported, not papered over.
    pub fn from_env() -> Result<Plugin> {
        let path = match std::env::var_os(PLUGIN_ENV).filter(|v| !v.is_empty()) {
            Some(p) => PathBuf::from(p),
            None => match default_plugin_path().filter(|p| p.is_file()) {
                Some(p) => p,
                None => {
                    return Err(Error::PluginNotFound {
                        detail: format!(
                            "{PLUGIN_ENV} is not set and the default {} does not exist",
                            default_plugin_path()
                                .map(|p| p.display().to_string())
                                .unwrap_or_else(|| "(no $HOME)".into())
                        ),
                    })
                }
            },
        };
        Plugin::load(path)
    }

    /// Loads (once per process) the plugin at `path`, checks its version and table size and
    /// calls `PJRT_Plugin_Initialize`.
    pub fn load(path: impl AsRef<Path>) -> Result<Plugin> {
        let path = path.as_ref();
        if !path.is_file() {
            return Err(Error::PluginNotFound {
                detail: format!("{} does not exist", path.display()),
            });
        }
        // Symlinks and relative paths to one file must share one load: a second
        // `PJRT_Plugin_Initialize` on the same library is not allowed.
        let key = path.canonicalize().unwrap_or_else(|_| path.to_owned());
        let mut plugins = loaded_plugins().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(inner) = plugins.get(&key) {
            return Ok(Plugin { inner });
        }
        // SAFETY: loading a PJRT plugin runs its static initializers; that is the documented way
        // to use one, and we never unload it (see the type's docs).
        let lib = unsafe { libloading::Library::new(&key) }.map_err(|source| Error::Load {
            path: key.clone(),
            source,
        })?;
        // SAFETY: `GetPjrtApi` has this signature in every PJRT plugin (pjrt_c_api.h).
        let get_api =
            unsafe { lib.get::<unsafe extern "C" fn() -> *const sys::PJRT_Api>(b"GetPjrtApi\0") }
                .map_err(|source| Error::Load {
                path: key.clone(),
                source,
            })?;
        // SAFETY: calling the plugin's exported getter; it returns a pointer to a static table.
        let api = unsafe { get_api() };
        // Leak: see the type-level docs for why the library must never be closed.
        std::mem::forget(lib);
        if api.is_null() {
            return Err(Error::PluginNotFound {
                detail: format!("GetPjrtApi in {} returned NULL", key.display()),
            });
        }
        // SAFETY: `struct_size` is the table's first field in every PJRT version.
        let struct_size = unsafe { ptr::addr_of!((*api).struct_size).read_unaligned() };
        let version_end =
            offset_of!(sys::PJRT_Api, pjrt_api_version) + size_of::<sys::PJRT_Api_Version>();
        if struct_size < version_end {
            return Err(Error::MissingEntryPoint {
                path: key,
                name: "pjrt_api_version",
                needed: version_end,
                struct_size,
                is_null: false,
            });
        }
        // SAFETY: checked just above that the version lies within the table.
        let version = unsafe { ptr::addr_of!((*api).pjrt_api_version).read_unaligned() };
        let (major, minor) = (version.major_version, version.minor_version);
        if major != BINDINGS_API_MAJOR as i32 || minor < BINDINGS_API_MINOR as i32 {
            return Err(Error::IncompatibleVersion {
                path: key,
                major,
                minor,
                required_minor: BINDINGS_API_MINOR,
            });
        }
        // SAFETY: `api` is the live static table and `struct_size` its self-declared size.
        let fns = unsafe { Fns::read(api, struct_size, &key)? };
        // SAFETY: as above.
        let optional = unsafe { OptionalFns::read(api, struct_size) };
        let inner: &'static PluginInner = Box::leak(Box::new(PluginInner {
            path: key.clone(),
            raw: api,
            fns,
            optional,
            version: (major, minor),
            struct_size,
        }));
        let mut args: sys::PJRT_Plugin_Initialize_Args = new_args();
        // SAFETY: valid args struct; called once per library thanks to the cache lock held here.
        unsafe { inner.check((fns.PJRT_Plugin_Initialize)(&mut args))? };
        plugins.insert(key, inner);
        Ok(Plugin { inner })
    }

    /// The canonical path the plugin was loaded from.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// `PJRT_Api.pjrt_api_version` as (major, minor).
    pub fn api_version(&self) -> (i32, i32) {
        self.inner.version
    }

    /// The plugin's raw function table, for entry points this crate does not wrap. Only the
    /// first [`Plugin::api_struct_size`] bytes of it exist: check a slot's offset against that
    /// before reading it.
    pub fn raw_api(&self) -> *const sys::PJRT_Api {
        self.inner.raw
    }

    /// `PJRT_Api.struct_size`: how many bytes of the function table the plugin provides.
    pub fn api_struct_size(&self) -> usize {
        self.inner.struct_size
    }
}

impl PluginInner {
    /// The error for an optional entry point this plugin does not provide.
    pub(crate) fn missing(&self, name: &'static str, needed: usize) -> Error {
        Error::MissingEntryPoint {
            path: self.path.clone(),
            name,
            needed,
            struct_size: self.struct_size,
            is_null: needed <= self.struct_size,
        }
    }

    /// Turns a returned `PJRT_Error*` into a `Result`, destroying the error.
    ///
    /// # Safety
    /// `err` must be NULL or an error just returned by this plugin and not yet destroyed.
    pub(crate) unsafe fn check(&self, err: *mut sys::PJRT_Error) -> Result<()> {
        if err.is_null() {
            return Ok(());
        }
        let mut msg_args: sys::PJRT_Error_Message_Args = new_args();
        msg_args.error = err;
        // SAFETY: `err` is live; the message is borrowed from it and copied before destroy.
        unsafe { (self.fns.PJRT_Error_Message)(&mut msg_args) };
        // SAFETY: NULL or the `message_size` readable bytes the plugin promises at `message`.
        let message = unsafe { string_from_raw(msg_args.message, msg_args.message_size) };
        let mut code_args: sys::PJRT_Error_GetCode_Args = new_args();
        code_args.error = err;
        // SAFETY: `err` is live.
        let code_err = unsafe { (self.fns.PJRT_Error_GetCode)(&mut code_args) };
        let code = if code_err.is_null() {
            ErrorCode::from_code(code_args.code.0)
        } else {
            // Getting the code failed; report UNKNOWN rather than recursing.
            // SAFETY: `code_err` is a fresh error we own.
            unsafe { self.destroy_error(code_err) };
            ErrorCode::Unknown
        };
        // SAFETY: `err` is live and owned by us; destroyed exactly once here.
        unsafe { self.destroy_error(err) };
        Err(Error::Pjrt { code, message })
    }

    /// # Safety
    /// `err` must be a live error owned by the caller.
    unsafe fn destroy_error(&self, err: *mut sys::PJRT_Error) {
        let mut args: sys::PJRT_Error_Destroy_Args = new_args();
        args.error = err;
        // SAFETY: forwarded from the caller.
        unsafe { (self.fns.PJRT_Error_Destroy)(&mut args) };
    }

    /// Whether `event` has fired (false when the plugin cannot tell).
    ///
    /// # Safety
    /// `event` must be a live event owned by the caller.
    pub(crate) unsafe fn event_is_ready(&self, event: *mut sys::PJRT_Event) -> bool {
        let Some(f) = self.optional.PJRT_Event_IsReady else {
            return false;
        };
        let mut args: sys::PJRT_Event_IsReady_Args = new_args();
        args.event = event;
        // SAFETY: live event.
        let ok = unsafe { self.check(f(&mut args)) };
        ok.is_ok() && args.is_ready
    }

    /// Blocks until `event` is ready and destroys it, returning the event's error if any.
    /// NULL is accepted (and means "nothing to wait for") so callers need not branch.
    ///
    /// # Safety
    /// `event` must be NULL or a live event owned by the caller; it is consumed.
    pub(crate) unsafe fn await_and_destroy_event(&self, event: *mut sys::PJRT_Event) -> Result<()> {
        if event.is_null() {
            return Ok(());
        }
        let mut await_args: sys::PJRT_Event_Await_Args = new_args();
        await_args.event = event;
        // SAFETY: live event.
        let result = unsafe { self.check((self.fns.PJRT_Event_Await)(&mut await_args)) };
        let mut destroy_args: sys::PJRT_Event_Destroy_Args = new_args();
        destroy_args.event = event;
        // SAFETY: live event, destroyed exactly once; an error from destroy is reported only if
        // awaiting succeeded, so the more informative await error wins.
        let destroyed = unsafe { self.check((self.fns.PJRT_Event_Destroy)(&mut destroy_args)) };
        result.and(destroyed)
    }
}

/// Reads `len` bytes at `data` as a `&str`-ish owned string.
///
/// # Safety
/// `data` must be NULL (then `len` is ignored) or point to `len` readable bytes.
pub(crate) unsafe fn string_from_raw(data: *const std::ffi::c_char, len: usize) -> String {
    if data.is_null() {
        return String::new();
    }
    // SAFETY: forwarded from the caller.
    let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) };
    String::from_utf8_lossy(bytes).into_owned()
}

/// Copies a plugin-owned `(pointer, count)` array into a `Vec`.
///
/// # Safety
/// `data` must be NULL (only when `len == 0`) or point to `len` readable elements.
pub(crate) unsafe fn vec_from_raw<T: Copy>(data: *const T, len: usize) -> Vec<T> {
    if data.is_null() || len == 0 {
        return Vec::new();
    }
    // SAFETY: forwarded from the caller.
    unsafe { std::slice::from_raw_parts(data, len) }.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_size_check_names_the_first_missing_entry_point() {
        let path = Path::new("/fake/plugin.so");
        assert!(check_table_size(sys::PJRT_Api_STRUCT_SIZE as usize, path).is_ok());
        let buffer_to_host_end = offset_of!(sys::PJRT_Api, PJRT_Buffer_ToHostBuffer)
            + size_of::<sys::PJRT_Buffer_ToHostBuffer>();
        // One byte short of the last slot we use: exactly that slot must be reported.
        let err = check_table_size(buffer_to_host_end - 1, path).unwrap_err();
        match err {
            Error::MissingEntryPoint { name, needed, .. } => {
                assert_eq!(name, "PJRT_Buffer_ToHostBuffer");
                assert_eq!(needed, buffer_to_host_end);
            }
            other => panic!("unexpected {other:?}"),
        }
        let msg = check_table_size(40, path).unwrap_err().to_string();
        assert!(msg.contains("PJRT_Error_Destroy"), "{msg}");
    }

    #[test]
    fn new_args_sets_struct_size_and_zeroes() {
        let args: sys::PJRT_Client_Create_Args = new_args();
        assert_eq!(args.struct_size, 88);
        assert!(args.create_options.is_null());
        assert_eq!(args.num_options, 0);
    }
}
