//! A thin, safe runtime over the PJRT C API.
//!
//! It loads a PJRT plugin (a shared object exporting `GetPjrtApi`), compiles
//! `xla_proto::HloModuleProto`s, moves arrays between host and devices and executes on one or
//! more devices. Tests run it against the CPU plugin from the PyPI wheel `xla-cpu-pjrt==0.0.1`;
//! `tools/install-pjrt-plugin` installs it and prints its path, which [`Plugin::from_env`] reads
//! from `PJRT_PLUGIN`.
//!
//! ```no_run
//! use pjrt_runtime::{Arg, Client, ClientOptions, CompileOptions, Plugin};
//! # fn run(module: &xla_proto::HloModuleProto) -> pjrt_runtime::Result<()> {
//! let plugin = Plugin::from_env()?;
//! let client = Client::new(&plugin, &ClientOptions::default())?;
//! let exe = client.compile(module, &CompileOptions::default())?;
//! let x = client.buffer_from_slice(&[1.0f32, 2.0, 3.0], &[3], 0)?;
//! let out = exe.execute(vec![vec![Arg::Borrow(&x)]])?;
//! let values: Vec<f32> = out[0][0].to_vec()?;
//! # let _ = values; Ok(()) }
//! ```
//!
//! Design notes:
//! - Raw bindings ([`sys`]) are generated once by `tools/regen-pjrt-bindings` from the plugin's own
//!   `pjrt_c_api.h` and committed, so builds need no libclang.
//! - Every entry point used is bounds-checked against the plugin's `PJRT_Api.struct_size` at load
//!   time; a too-old plugin is an [`Error::MissingEntryPoint`], never an out-of-bounds read.
//! - Handles ([`Buffer`], [`LoadedExecutable`]) keep their client alive through an `Arc`, so
//!   teardown order (buffers and executables before the client) holds by construction.
//! - Compile options and execution arguments are validated in Rust first: the plugin aborts the
//!   process on some invalid inputs instead of returning an error.

mod buffer;
mod client;
mod element_type;
mod error;
mod executable;
pub mod ffi;
mod plugin;

/// Raw bindgen output for `pjrt_c_api.h` (see the file header for its provenance). Exposed for
/// tests and for calling entry points this crate does not wrap.
#[allow(
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    dead_code,
    missing_docs,
    clippy::all
)]
pub mod sys;

pub use buffer::{Buffer, HostBuffer, HostBytes};
pub use client::{Client, ClientOptions, Device};
pub use element_type::{ElementType, NativeType};
pub use error::{Error, ErrorCode, Result, INSTALL_HINT};
pub use executable::{Arg, CompileOptions, LoadedExecutable};
pub use plugin::{default_plugin_path, Plugin, BINDINGS_API_MAJOR, BINDINGS_API_MINOR, PLUGIN_ENV};
