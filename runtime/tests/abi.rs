//! The committed bindings against the numbers measured on the real plugin (pjrt.md §1), and the
//! loaded plugin's version and table size against the bindings.

mod common;

use std::mem::{offset_of, size_of};

use pjrt_runtime::sys;
use pjrt_runtime::{Client, ClientOptions, Error, Plugin, BINDINGS_API_MAJOR, BINDINGS_API_MINOR};

#[test]
fn struct_sizes_match_pjrt_0_81_on_x86_64() {
    assert_eq!(size_of::<sys::PJRT_Client_Create_Args>(), 88);
    assert_eq!(size_of::<sys::PJRT_Client_Compile_Args>(), 56);
    assert_eq!(size_of::<sys::PJRT_Program>(), 48);
    assert_eq!(size_of::<sys::PJRT_Client_BufferFromHostBuffer_Args>(), 120);
    assert_eq!(size_of::<sys::PJRT_LoadedExecutable_Execute_Args>(), 80);
    assert_eq!(size_of::<sys::PJRT_ExecuteOptions>(), 112);
    assert_eq!(size_of::<sys::PJRT_Buffer_ToHostBuffer_Args>(), 56);
    assert_eq!(size_of::<sys::PJRT_NamedValue>(), 56);
    assert_eq!(size_of::<sys::PJRT_Api>(), 984);
}

#[test]
fn header_struct_size_constants_agree_with_rust_layout() {
    // `<Name>_STRUCT_SIZE` is offsetof(last field) + sizeof(last field); for these structs it has
    // no tail padding, so it equals size_of.
    assert_eq!(sys::PJRT_Client_Create_Args_STRUCT_SIZE, 88);
    assert_eq!(sys::PJRT_Client_Compile_Args_STRUCT_SIZE, 56);
    assert_eq!(sys::PJRT_Program_STRUCT_SIZE, 48);
    assert_eq!(sys::PJRT_Client_BufferFromHostBuffer_Args_STRUCT_SIZE, 120);
    assert_eq!(sys::PJRT_LoadedExecutable_Execute_Args_STRUCT_SIZE, 80);
    assert_eq!(sys::PJRT_ExecuteOptions_STRUCT_SIZE, 112);
    assert_eq!(sys::PJRT_Buffer_ToHostBuffer_Args_STRUCT_SIZE, 56);
    assert_eq!(sys::PJRT_NamedValue_STRUCT_SIZE, 56);
    assert_eq!(sys::PJRT_Api_STRUCT_SIZE, 984);
}

#[test]
fn execute_args_field_offsets() {
    type E = sys::PJRT_LoadedExecutable_Execute_Args;
    assert_eq!(offset_of!(E, argument_lists), 32);
    assert_eq!(offset_of!(E, num_devices), 40);
    assert_eq!(offset_of!(E, num_args), 48);
    assert_eq!(offset_of!(E, output_lists), 56);
    assert_eq!(offset_of!(E, device_complete_events), 64);
    assert_eq!(offset_of!(E, execute_device), 72);
}

#[test]
fn enum_codes_that_cross_the_abi() {
    assert_eq!(sys::PJRT_Buffer_Type::PJRT_Buffer_Type_BF16.0, 13);
    assert_eq!(sys::PJRT_Buffer_Type::PJRT_Buffer_Type_F32.0, 11);
    assert_eq!(sys::PJRT_NamedValue_Type::PJRT_NamedValue_kInt64.0, 1);
    assert_eq!(
        sys::PJRT_HostBufferSemantics::PJRT_HostBufferSemantics_kImmutableOnlyDuringCall.0,
        0
    );
    assert_eq!(sys::PJRT_Error_Code::PJRT_Error_Code_INVALID_ARGUMENT.0, 3);
    assert_eq!(sys::PJRT_Error_Code::PJRT_Error_Code_INTERNAL.0, 13);
}

#[test]
fn loaded_plugin_version_and_table_size() {
    let plugin = common::plugin();
    let (major, minor) = plugin.api_version();
    assert_eq!(major, BINDINGS_API_MAJOR as i32);
    assert!(minor >= BINDINGS_API_MINOR as i32, "plugin minor {minor}");
    assert_eq!((BINDINGS_API_MAJOR, BINDINGS_API_MINOR), (0, 81));
    assert!(plugin.api_struct_size() >= sys::PJRT_Api_STRUCT_SIZE as usize);
    // The wheel this project pins: exactly the header the bindings came from.
    assert_eq!((major, minor), (0, 81));
    assert_eq!(plugin.api_struct_size(), 984);
}

#[test]
fn loading_twice_returns_the_same_plugin() {
    let a = common::plugin();
    let b = Plugin::load(a.path()).unwrap();
    assert_eq!(a, b);
}

#[test]
fn missing_plugin_error_says_how_to_install() {
    let err = Plugin::load("/nonexistent/xla_cpu_pjrt.so").unwrap_err();
    assert!(matches!(err, Error::PluginNotFound { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("/nonexistent/xla_cpu_pjrt.so"), "{msg}");
    assert!(
        msg.contains("set PJRT_PLUGIN to the path of xla_cpu_pjrt.so; `tools/install-pjrt-plugin` installs xla-cpu-pjrt==0.0.1 and prints it"),
        "{msg}"
    );
}

#[test]
fn client_reports_platform_and_devices() {
    let client = common::cpu_client(3);
    assert_eq!(client.platform_name(), "cpu");
    assert_eq!(client.device_count(), 3);
    let ids: Vec<i32> = client
        .addressable_devices()
        .iter()
        .map(|d| d.id())
        .collect();
    assert_eq!(ids, [0, 1, 2], "CPU devices are listed in id order");
    for (i, d) in client.addressable_devices().iter().enumerate() {
        assert_eq!(d.index(), i);
    }
    let default = Client::new(&common::plugin(), &ClientOptions::default()).unwrap();
    assert_eq!(
        default.device_count(),
        4,
        "the CPU plugin defaults to 4 devices"
    );
}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<pjrt_runtime::Plugin>();
    check::<pjrt_runtime::Client>();
    check::<pjrt_runtime::Buffer>();
    check::<pjrt_runtime::LoadedExecutable>();
    check::<pjrt_runtime::Device>();
    check::<pjrt_runtime::HostBuffer>();
    check::<pjrt_runtime::Error>();
}
