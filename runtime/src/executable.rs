//! Compiling HLO modules and running them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use prost::Message;
use xla_proto::{
    option_override_proto, CompileOptionsProto, ExecutableBuildOptionsProto, HloModuleProto,
    OptionOverrideProto, PrimitiveType, ShapeProto,
};

use crate::buffer::Buffer;
use crate::client::{Client, ClientInner, Device};
use crate::element_type::ElementType;
use crate::error::{Error, Result};
use crate::plugin::{new_args, optional_fn, string_from_raw, vec_from_raw};
use crate::sys;

/// The subset of XLA's compile options this project uses.
///
/// Validated in Rust before anything reaches the plugin: some invalid values do not produce an
/// error there but abort the whole process (e.g. `num_replicas = 0` trips
/// `Check failed: replica_count > 0`, hlo.md §1.10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileOptions {
    /// Data-parallel copies; one argument set per replica at execution. At least 1 and at most
    /// the client's addressable device count.
    pub num_replicas: i64,
    /// Must be 1: the project shards by hand (replicas plus collectives), never with SPMD.
    pub num_partitions: i64,
    /// XLA debug options by flag name (`xla_cpu_...`), as `env_option_overrides`: the plugin
    /// parses each value as that flag's type (an enum by its value name). A name or value the
    /// plugin does not know fails the compile with an error naming it.
    pub xla_options: BTreeMap<String, String>,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions::replicas(1)
    }
}

impl CompileOptions {
    /// `num_replicas` replicas, one partition.
    pub fn replicas(num_replicas: i64) -> Self {
        CompileOptions {
            num_replicas,
            num_partitions: 1,
            xla_options: BTreeMap::new(),
        }
    }

    /// These options with the XLA option overrides `xla_options` added.
    pub fn with_xla_options(mut self, xla_options: &BTreeMap<String, String>) -> Self {
        self.xla_options
            .extend(xla_options.iter().map(|(k, v)| (k.clone(), v.clone())));
        self
    }

    /// Checks the options against a client with `device_count` addressable devices.
    pub fn validate(&self, device_count: usize) -> Result<()> {
        if self.num_replicas < 1 {
            return Err(Error::InvalidCompileOptions(format!(
                "num_replicas must be at least 1, got {}",
                self.num_replicas
            )));
        }
        if self.num_partitions != 1 {
            return Err(Error::InvalidCompileOptions(format!(
                "num_partitions must be 1 (SPMD partitioning is not used), got {}",
                self.num_partitions
            )));
        }
        if self.num_replicas as u64 > device_count as u64 {
            return Err(Error::InvalidCompileOptions(format!(
                "num_replicas = {} but the client has only {device_count} addressable devices",
                self.num_replicas
            )));
        }
        Ok(())
    }

    /// The serialized `CompileOptionsProto` (never empty: an empty one aborts the plugin).
    ///
    /// Executables with more than one replica are compiled without XLA:CPU's XNNPACK fusions
    /// (`xla_cpu_use_xnnpack = false`, an XLA debug option every XLA plugin knows): an XNNPACK
    /// fusion thunk that rebuilds its runtime destroys its thread pool and waits for it, while
    /// another replica's thread of the same pool waits in a collective for this one, so the
    /// process deadlocks until XLA's 40 s rendezvous timeout aborts it (seen with f32 `[in, out]`
    /// projection weights at tp 2; `tests/tp_deadlock.rs` in the main crate reproduces it).
    /// That override comes after [`CompileOptions::xla_options`], so those cannot undo it.
    pub fn to_proto(&self) -> CompileOptionsProto {
        let mut env_option_overrides: BTreeMap<_, _> = (self.xla_options.iter())
            .map(|(name, value)| {
                let value = option_override_proto::Value::StringField(value.clone());
                (name.clone(), OptionOverrideProto { value: Some(value) })
            })
            .collect();
        if self.num_replicas > 1 {
            env_option_overrides.insert(
                "xla_cpu_use_xnnpack".to_string(),
                OptionOverrideProto {
                    value: Some(option_override_proto::Value::BoolField(false)),
                },
            );
        }
        CompileOptionsProto {
            executable_build_options: Some(ExecutableBuildOptionsProto {
                device_ordinal: -1,
                num_replicas: self.num_replicas,
                num_partitions: self.num_partitions,
                ..Default::default()
            }),
            env_option_overrides,
            ..Default::default()
        }
    }
}

/// A process-wide launch counter. XLA's collectives key each rendezvous by (run id, devices, op
/// id), and PJRT's CPU client takes the run id from `PJRT_ExecuteOptions.launch_id`, which is 0
/// unless set: two launches in flight at once with the same device set would then share keys.
fn next_launch_id() -> i32 {
    use std::sync::atomic::{AtomicI32, Ordering};
    static NEXT: AtomicI32 = AtomicI32::new(1);
    // Wraps after 2^31 launches, long after any earlier launch with that id has finished.
    NEXT.fetch_add(1, Ordering::Relaxed).max(1)
}

/// One argument of one device's argument list for [`LoadedExecutable::execute`].
#[derive(Debug)]
pub enum Arg<'a> {
    /// Read-only input. If the module aliases this parameter to an output, PJRT copies the buffer
    /// instead of reusing it (the index goes into `non_donatable_input_indices`), so the buffer
    /// keeps its old value.
    Borrow(&'a Buffer),
    /// Input given up to the execution. For a parameter in the module's `input_output_alias`
    /// (or `buffer_donor`) PJRT reuses its memory for the aliased output; either way the buffer is
    /// released after the call, and Rust's ownership rules make reading it afterwards impossible.
    Donate(Buffer),
}

impl Arg<'_> {
    fn buffer(&self) -> &Buffer {
        match self {
            Arg::Borrow(b) => b,
            Arg::Donate(b) => b,
        }
    }
}

impl<'a> From<&'a Buffer> for Arg<'a> {
    fn from(b: &'a Buffer) -> Self {
        Arg::Borrow(b)
    }
}

impl From<Buffer> for Arg<'_> {
    fn from(b: Buffer) -> Self {
        Arg::Donate(b)
    }
}

/// What the runtime keeps from the module: enough to validate arguments before the FFI call.
#[derive(Clone, Debug)]
struct ModuleInfo {
    name: String,
    /// Parameter numbers in `input_output_alias`.
    aliased_parameters: Vec<i64>,
    /// `host_program_shape.parameters`, if present.
    parameters: Option<Vec<ShapeProto>>,
}

impl ModuleInfo {
    fn of(module: &HloModuleProto) -> ModuleInfo {
        let aliased: BTreeSet<i64> = module
            .input_output_alias
            .iter()
            .flat_map(|a| a.entries.iter().map(|e| e.parameter_number))
            .collect();
        ModuleInfo {
            name: module.name.clone(),
            aliased_parameters: aliased.into_iter().collect(),
            parameters: module
                .host_program_shape
                .as_ref()
                .map(|s| s.parameters.clone()),
        }
    }
}

/// A compiled module loaded on its devices.
///
/// Holds an `Arc` of its client, so the client is destroyed only after it.
///
/// `LoadedExecutable` is `Send + Sync`: `xla::PjRtLoadedExecutable::Execute` may be called from
/// several threads at once (JAX does so), and this type has no `&self` mutation.
pub struct LoadedExecutable {
    client: Arc<ClientInner>,
    raw: *mut sys::PJRT_LoadedExecutable,
    devices: Vec<Device>,
    num_outputs: usize,
    info: ModuleInfo,
}

// SAFETY: see the type-level docs.
unsafe impl Send for LoadedExecutable {}
// SAFETY: see the type-level docs.
unsafe impl Sync for LoadedExecutable {}

impl std::fmt::Debug for LoadedExecutable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedExecutable")
            .field("module", &self.info.name)
            .field(
                "devices",
                &self.devices.iter().map(Device::id).collect::<Vec<_>>(),
            )
            .field("num_outputs", &self.num_outputs)
            .field("aliased_parameters", &self.info.aliased_parameters)
            .finish()
    }
}

impl Drop for LoadedExecutable {
    fn drop(&mut self) {
        let api = self.client.api();
        let mut args: sys::PJRT_LoadedExecutable_Destroy_Args = new_args();
        args.executable = self.raw;
        // SAFETY: owned handle, destroyed once; errors cannot be reported from `drop`.
        let _ = unsafe { api.check((api.fns.PJRT_LoadedExecutable_Destroy)(&mut args)) };
    }
}

impl Client {
    /// Compiles `module` (program format `"hlo"`).
    pub fn compile(
        &self,
        module: &HloModuleProto,
        options: &CompileOptions,
    ) -> Result<LoadedExecutable> {
        options.validate(self.device_count())?;
        self.compile_validated(module.encode_to_vec(), ModuleInfo::of(module), options)
    }

    /// Compiles a serialized `HloModuleProto`. The bytes are decoded once to learn the module's
    /// aliasing and parameter shapes.
    pub fn compile_bytes(
        &self,
        module: &[u8],
        options: &CompileOptions,
    ) -> Result<LoadedExecutable> {
        options.validate(self.device_count())?;
        let info = ModuleInfo::of(&HloModuleProto::decode(module)?);
        self.compile_validated(module.to_vec(), info, options)
    }

    fn compile_validated(
        &self,
        mut code: Vec<u8>,
        info: ModuleInfo,
        options: &CompileOptions,
    ) -> Result<LoadedExecutable> {
        let api = self.inner.api();
        let compile_options = options.to_proto().encode_to_vec();
        debug_assert!(!compile_options.is_empty());
        let format = b"hlo";

        let mut program: sys::PJRT_Program = new_args();
        program.code = code.as_mut_ptr().cast();
        program.code_size = code.len();
        program.format = format.as_ptr().cast();
        program.format_size = format.len();

        let mut args: sys::PJRT_Client_Compile_Args = new_args();
        args.client = self.inner.raw;
        args.program = &program;
        args.compile_options = compile_options.as_ptr().cast();
        args.compile_options_size = compile_options.len();
        // SAFETY: all pointers reference locals that outlive the call; options are validated.
        unsafe { api.check((api.fns.PJRT_Client_Compile)(&mut args))? };
        self.finish_loaded(args.executable, info)
    }

    /// Loads an executable that [`LoadedExecutable::serialize`] wrote (with the same plugin
    /// and version), skipping the compile. `module` is the serialized `HloModuleProto` it was
    /// compiled from, which the runtime reads for its aliasing and parameter shapes.
    pub fn load_serialized(&self, serialized: &[u8], module: &[u8]) -> Result<LoadedExecutable> {
        let info = ModuleInfo::of(&HloModuleProto::decode(module)?);
        let api = self.inner.api();
        let f = optional_fn!(api, PJRT_Executable_DeserializeAndLoad)?;
        let mut args: sys::PJRT_Executable_DeserializeAndLoad_Args = new_args();
        args.client = self.inner.raw;
        args.serialized_executable = serialized.as_ptr().cast();
        args.serialized_executable_size = serialized.len();
        // SAFETY: the bytes outlive the call; no compile-option override.
        unsafe { api.check(f(&mut args))? };
        self.finish_loaded(args.loaded_executable, info)
    }

    /// Takes ownership of a loaded executable and reads its devices and output count.
    fn finish_loaded(
        &self,
        raw: *mut sys::PJRT_LoadedExecutable,
        info: ModuleInfo,
    ) -> Result<LoadedExecutable> {
        let api = self.inner.api();
        // Owned from here on, so any failure below still destroys it.
        let mut exe = LoadedExecutable {
            client: Arc::clone(&self.inner),
            raw,
            devices: Vec::new(),
            num_outputs: 0,
            info,
        };

        let mut dev_args: sys::PJRT_LoadedExecutable_AddressableDevices_Args = new_args();
        dev_args.executable = exe.raw;
        // SAFETY: live executable; the array is owned by it and copied immediately.
        unsafe {
            api.check((api.fns.PJRT_LoadedExecutable_AddressableDevices)(
                &mut dev_args,
            ))?
        };
        // SAFETY: the plugin returned `num_addressable_devices` pointers.
        let raws = unsafe {
            vec_from_raw(
                dev_args.addressable_devices,
                dev_args.num_addressable_devices,
            )
        };
        exe.devices = raws
            .into_iter()
            .map(|raw| self.inner.device_by_raw(raw).cloned())
            .collect::<Result<_>>()?;

        exe.num_outputs = exe.with_executable(|executable| {
            let mut num_args: sys::PJRT_Executable_NumOutputs_Args = new_args();
            num_args.executable = executable;
            // SAFETY: live executable.
            unsafe { api.check((api.fns.PJRT_Executable_NumOutputs)(&mut num_args))? };
            Ok(num_args.num_outputs)
        })?;
        Ok(exe)
    }
}

impl LoadedExecutable {
    /// The devices the executable runs on, in replica order: `execute`'s outer index `d` means
    /// `devices()[d]`.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// Outputs per device. A tuple root is untupled: one buffer per element.
    pub fn num_outputs(&self) -> usize {
        self.num_outputs
    }

    /// Parameters the module aliases to outputs (`input_output_alias`), sorted.
    pub fn aliased_parameters(&self) -> &[i64] {
        &self.info.aliased_parameters
    }

    /// Number of entry parameters, when the module declared `host_program_shape`.
    pub fn num_parameters(&self) -> Option<usize> {
        self.info.parameters.as_ref().map(Vec::len)
    }

    /// The module's name.
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// The program the plugin compiled, after its optimisations
    /// (`PJRT_Executable_OptimizedProgram`): its format as the plugin names it (XLA's CPU
    /// plugin: `hlo_with_config`, a serialized `HloModuleProtoWithConfig` whose field 1 is the
    /// `HloModuleProto`) and its bytes. What XLA made of a graph, for tests and tools.
    pub fn optimized_program(&self) -> Result<(String, Vec<u8>)> {
        let api = self.client.api();
        let f = optional_fn!(api, PJRT_Executable_OptimizedProgram)?;
        self.with_executable(|executable| {
            let mut program: sys::PJRT_Program = new_args();
            let mut args: sys::PJRT_Executable_OptimizedProgram_Args = new_args();
            args.executable = executable;
            args.program = &mut program;
            // SAFETY: live executable; with a null `code` the plugin only sets `code_size` (and
            // the format, which it owns).
            unsafe { api.check(f(&mut args))? };
            let mut code = vec![0u8; program.code_size];
            program.code = code.as_mut_ptr().cast();
            // SAFETY: `code` holds the `code_size` bytes the plugin asked for.
            unsafe { api.check(f(&mut args))? };
            code.truncate(program.code_size);
            // SAFETY: NULL or the plugin's `format_size` bytes, live with the executable.
            let format = unsafe { string_from_raw(program.format, program.format_size) };
            Ok((format, code))
        })
    }

    /// Runs `f` on this executable's `PJRT_Executable` (`PJRT_LoadedExecutable_GetExecutable`),
    /// then destroys that, whether or not `f` succeeded.
    fn with_executable<T>(
        &self,
        f: impl FnOnce(*mut sys::PJRT_Executable) -> Result<T>,
    ) -> Result<T> {
        let api = self.client.api();
        let mut get_args: sys::PJRT_LoadedExecutable_GetExecutable_Args = new_args();
        get_args.loaded_executable = self.raw;
        // SAFETY: live executable; the returned PJRT_Executable is ours to destroy.
        unsafe { api.check((api.fns.PJRT_LoadedExecutable_GetExecutable)(&mut get_args))? };
        let result = f(get_args.executable);
        let mut destroy_args: sys::PJRT_Executable_Destroy_Args = new_args();
        destroy_args.executable = get_args.executable;
        // SAFETY: destroyed once, after `f`'s last use of it.
        unsafe { api.check((api.fns.PJRT_Executable_Destroy)(&mut destroy_args))? };
        result
    }

    /// The compiled executable's bytes (`PJRT_Executable_Serialize`), for a cache that
    /// [`Client::load_serialized`] reads back on a later run with the same plugin.
    pub fn serialize(&self) -> Result<Vec<u8>> {
        let api = self.client.api();
        let f = optional_fn!(api, PJRT_Executable_Serialize)?;
        self.with_executable(|executable| {
            let mut args: sys::PJRT_Executable_Serialize_Args = new_args();
            args.executable = executable;
            // SAFETY: live executable.
            let result = unsafe { api.check(f(&mut args)) };
            let bytes = if result.is_ok() && !args.serialized_bytes.is_null() {
                // SAFETY: the plugin hands out `serialized_bytes_size` readable bytes, owned by
                // `serialized_executable` until its deleter runs.
                unsafe {
                    std::slice::from_raw_parts(
                        args.serialized_bytes.cast::<u8>(),
                        args.serialized_bytes_size,
                    )
                }
                .to_vec()
            } else {
                Vec::new()
            };
            if let (Some(deleter), false) = (
                args.serialized_executable_deleter,
                args.serialized_executable.is_null(),
            ) {
                // SAFETY: the deleter frees the serialized executable once.
                unsafe { deleter(args.serialized_executable) };
            }
            result.map(|()| bytes)
        })
    }

    /// Runs the executable on all its devices.
    ///
    /// `args[d][a]` is parameter `a` for device `devices()[d]` and must live on that device. The
    /// result is `[d][output]`. Argument counts, devices, element types and dims are checked
    /// before the FFI call. Donated buffers are consumed even when an error is returned.
    pub fn execute(&self, args: Vec<Vec<Arg<'_>>>) -> Result<Vec<Vec<Buffer>>> {
        self.validate_args(&args)?;
        let api = self.client.api();
        let num_devices = args.len();
        let num_args = args.first().map_or(0, Vec::len);

        // An index is donated only if every device donates it; any Borrow keeps all copies intact.
        let non_donatable: Vec<i64> = (0..num_args)
            .filter(|&a| args.iter().any(|dev| matches!(dev[a], Arg::Borrow(_))))
            .map(|a| a as i64)
            .collect();

        let arg_ptrs: Vec<Vec<*mut sys::PJRT_Buffer>> = args
            .iter()
            .map(|dev| dev.iter().map(|a| a.buffer().raw).collect())
            .collect();
        let arg_lists: Vec<*const *mut sys::PJRT_Buffer> =
            arg_ptrs.iter().map(|v| v.as_ptr()).collect();
        let mut out_ptrs: Vec<Vec<*mut sys::PJRT_Buffer>> =
            vec![vec![std::ptr::null_mut(); self.num_outputs]; num_devices];
        let out_lists: Vec<*mut *mut sys::PJRT_Buffer> =
            out_ptrs.iter_mut().map(|v| v.as_mut_ptr()).collect();
        let mut events: Vec<*mut sys::PJRT_Event> = vec![std::ptr::null_mut(); num_devices];

        let mut options: sys::PJRT_ExecuteOptions = new_args();
        options.non_donatable_input_indices = non_donatable.as_ptr();
        options.num_non_donatable_input_indices = non_donatable.len();
        // XLA takes the run id of every rendezvous from `launch_id`; keep launches apart.
        options.launch_id = next_launch_id();

        let mut exec_args: sys::PJRT_LoadedExecutable_Execute_Args = new_args();
        exec_args.executable = self.raw;
        exec_args.options = &mut options;
        exec_args.argument_lists = arg_lists.as_ptr();
        exec_args.num_devices = num_devices;
        exec_args.num_args = num_args;
        exec_args.output_lists = out_lists.as_ptr();
        exec_args.device_complete_events = events.as_mut_ptr();
        // SAFETY: every array above has the [num_devices][num_args | num_outputs] shape PJRT expects
        // and outlives the call; all input buffers are live and on the right devices.
        let launched =
            unsafe { api.check((api.fns.PJRT_LoadedExecutable_Execute)(&mut exec_args)) };

        // Whatever happened, take ownership of everything the plugin handed out so it is freed.
        let mut first_error = launched.err();
        for event in events {
            // SAFETY: each non-NULL event is ours.
            if let Err(e) = unsafe { api.await_and_destroy_event(event) } {
                first_error.get_or_insert(e);
            }
        }
        let mut outputs = Vec::with_capacity(num_devices);
        for dev in out_ptrs {
            let mut bufs = Vec::with_capacity(dev.len());
            for raw in dev.into_iter().filter(|p| !p.is_null()) {
                // SAFETY: a non-NULL output is a new buffer owned by us.
                match unsafe { Buffer::from_raw(&self.client, raw) } {
                    Ok(b) => bufs.push(b),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            outputs.push(bufs);
        }
        // Donated inputs are released only now, after the device work has completed.
        drop(args);
        match first_error {
            Some(e) => Err(e),
            None => Ok(outputs),
        }
    }

    /// Single-device shorthand: `execute(vec![args])` and its one output list.
    pub fn execute_one(&self, args: Vec<Arg<'_>>) -> Result<Vec<Buffer>> {
        if self.devices.len() != 1 {
            return Err(Error::InvalidArgument(format!(
                "execute_one on an executable with {} devices; use execute",
                self.devices.len()
            )));
        }
        Ok(self.execute(vec![args])?.pop().unwrap_or_default())
    }

    fn validate_args(&self, args: &[Vec<Arg<'_>>]) -> Result<()> {
        let err = |msg: String| Err(Error::InvalidArgument(format!("{}: {msg}", self.info.name)));
        if args.len() != self.devices.len() {
            return err(format!(
                "expected one argument list per device ({} devices), got {}",
                self.devices.len(),
                args.len()
            ));
        }
        let expected = self
            .num_parameters()
            .unwrap_or_else(|| args.first().map_or(0, Vec::len));
        for (d, (dev_args, device)) in args.iter().zip(&self.devices).enumerate() {
            if dev_args.len() != expected {
                return err(format!(
                    "device {d}: expected {expected} arguments, got {}",
                    dev_args.len()
                ));
            }
            for (a, arg) in dev_args.iter().enumerate() {
                let b = arg.buffer();
                if matches!(arg, Arg::Donate(_)) && b.is_host_backed() {
                    return err(format!(
                        "device {d}, argument {a}: a buffer made from owned host bytes cannot be \
                         donated (its memory must outlive every buffer that aliases it)"
                    ));
                }
                if !Arc::ptr_eq(&b.client, &self.client) {
                    return err(format!(
                        "device {d}, argument {a}: buffer belongs to another client"
                    ));
                }
                if b.device().raw != device.raw {
                    return err(format!(
                        "device {d}, argument {a}: buffer is on device id {} but this slot runs on device id {}",
                        b.device().id(),
                        device.id()
                    ));
                }
                if let Some(shape) = self.info.parameters.as_ref().and_then(|p| p.get(a)) {
                    let declared = PrimitiveType::try_from(shape.element_type)
                        .ok()
                        .and_then(ElementType::from_primitive_type);
                    if let Some(ty) = declared {
                        if ty != b.element_type() || shape.dimensions != b.dims() {
                            return err(format!(
                                "device {d}, argument {a}: parameter is {ty}{:?} but the buffer is {}{:?}",
                                shape.dimensions,
                                b.element_type(),
                                b.dims()
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overrides(options: &CompileOptions) -> Vec<(String, option_override_proto::Value)> {
        options
            .to_proto()
            .env_option_overrides
            .into_iter()
            .map(|(k, v)| (k, v.value.expect("a value")))
            .collect()
    }

    #[test]
    fn xla_options_become_string_overrides_and_cannot_undo_the_replica_rule() {
        let xla_options: BTreeMap<String, String> = [
            ("xla_cpu_use_xnnpack", "true"),
            (
                "xla_cpu_experimental_xnn_fusion_type",
                "LIBRARY_FUSION_TYPE_DOT",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let string = |v: &str| option_override_proto::Value::StringField(v.into());
        assert_eq!(
            overrides(&CompileOptions::replicas(1).with_xla_options(&xla_options)),
            [
                (
                    "xla_cpu_experimental_xnn_fusion_type".to_string(),
                    string("LIBRARY_FUSION_TYPE_DOT")
                ),
                ("xla_cpu_use_xnnpack".to_string(), string("true")),
            ]
        );
        // More than one replica: XNNPACK off, whatever the options say.
        let two = overrides(&CompileOptions::replicas(2).with_xla_options(&xla_options));
        assert!(two.contains(&(
            "xla_cpu_use_xnnpack".to_string(),
            option_override_proto::Value::BoolField(false)
        )));
        assert_eq!(overrides(&CompileOptions::default()), []);
    }
}
