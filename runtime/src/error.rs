//! The crate's error type.
//!
//! PJRT reports failures as `PJRT_Error*` carrying an absl status code and a message. XLA's
//! messages are precise (they name the instruction, file and line of a failed check), so
//! [`Error::Pjrt`] keeps the whole message: truncating it would make compile errors
//! undebuggable.

use std::fmt;
use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How to get a plugin; part of every "plugin not found" message so that the fix is one copy
/// and paste away.
pub const INSTALL_HINT: &str = "set PJRT_PLUGIN to the path of xla_cpu_pjrt.so; \
`tools/install-pjrt-plugin` installs xla-cpu-pjrt==0.0.1 and prints it";

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The plugin returned a `PJRT_Error`. `message` is XLA's full message, verbatim.
    #[error("PJRT error {code}: {message}")]
    Pjrt { code: ErrorCode, message: String },

    /// No plugin path was given or the file does not exist.
    #[error("PJRT plugin not found ({detail}): {hint}", hint = INSTALL_HINT)]
    PluginNotFound { detail: String },

    /// `dlopen` or `dlsym("GetPjrtApi")` failed.
    #[error("cannot load PJRT plugin {path}: {source}")]
    Load {
        path: PathBuf,
        #[source]
        source: libloading::Error,
    },

    /// The plugin speaks an API version these bindings cannot use.
    #[error(
        "PJRT plugin {path} has API version {major}.{minor}; these bindings need 0.{required_minor} or a later 0.x"
    )]
    IncompatibleVersion {
        path: PathBuf,
        major: i32,
        minor: i32,
        required_minor: u32,
    },

    /// The plugin's `PJRT_Api` table ends before (or has NULL for) an entry point we call.
    #[error(
        "PJRT plugin {path} lacks entry point {name}: it needs PJRT_Api.struct_size >= {needed}, the plugin has {struct_size}{null}",
        null = if *is_null { " (or the pointer is NULL)" } else { "" }
    )]
    MissingEntryPoint {
        path: PathBuf,
        name: &'static str,
        needed: usize,
        struct_size: usize,
        is_null: bool,
    },

    /// The plugin does not provide an extension (or an extension's entry point) we need.
    #[error("PJRT plugin {path} lacks {what}")]
    MissingExtension { path: PathBuf, what: &'static str },

    /// Compile options rejected in Rust. The plugin aborts the process on some bad options
    /// (e.g. `num_replicas = 0`), so they must never reach it.
    #[error("invalid compile options: {0}")]
    InvalidCompileOptions(String),

    /// An argument was rejected in Rust before any FFI call (wrong count, device, shape, size…).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A buffer has an element type this crate does not model (e.g. F8 or complex types).
    #[error("unsupported PJRT buffer element type code {0}")]
    UnsupportedElementType(u32),

    /// `compile_bytes` was given bytes that are not an `HloModuleProto`.
    #[error("cannot decode HloModuleProto: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// absl status codes, as returned by `PJRT_Error_GetCode`.
///
/// `Display` prints the canonical upper-case name (`INVALID_ARGUMENT`), the same spelling
/// XLA uses in its own logs, so messages can be grepped across both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    Cancelled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
    /// A code outside absl's 1..=16 (including 0, which a real error should never carry).
    Other(u32),
}

impl ErrorCode {
    /// Maps the numeric absl code.
    pub fn from_code(code: u32) -> Self {
        match code {
            1 => Self::Cancelled,
            2 => Self::Unknown,
            3 => Self::InvalidArgument,
            4 => Self::DeadlineExceeded,
            5 => Self::NotFound,
            6 => Self::AlreadyExists,
            7 => Self::PermissionDenied,
            8 => Self::ResourceExhausted,
            9 => Self::FailedPrecondition,
            10 => Self::Aborted,
            11 => Self::OutOfRange,
            12 => Self::Unimplemented,
            13 => Self::Internal,
            14 => Self::Unavailable,
            15 => Self::DataLoss,
            16 => Self::Unauthenticated,
            other => Self::Other(other),
        }
    }

    /// The numeric absl code.
    pub fn code(self) -> u32 {
        match self {
            Self::Cancelled => 1,
            Self::Unknown => 2,
            Self::InvalidArgument => 3,
            Self::DeadlineExceeded => 4,
            Self::NotFound => 5,
            Self::AlreadyExists => 6,
            Self::PermissionDenied => 7,
            Self::ResourceExhausted => 8,
            Self::FailedPrecondition => 9,
            Self::Aborted => 10,
            Self::OutOfRange => 11,
            Self::Unimplemented => 12,
            Self::Internal => 13,
            Self::Unavailable => 14,
            Self::DataLoss => 15,
            Self::Unauthenticated => 16,
            Self::Other(c) => c,
        }
    }

    /// The canonical absl name, e.g. `"INVALID_ARGUMENT"`; `None` for [`ErrorCode::Other`].
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::Cancelled => "CANCELLED",
            Self::Unknown => "UNKNOWN",
            Self::InvalidArgument => "INVALID_ARGUMENT",
            Self::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Self::NotFound => "NOT_FOUND",
            Self::AlreadyExists => "ALREADY_EXISTS",
            Self::PermissionDenied => "PERMISSION_DENIED",
            Self::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Self::FailedPrecondition => "FAILED_PRECONDITION",
            Self::Aborted => "ABORTED",
            Self::OutOfRange => "OUT_OF_RANGE",
            Self::Unimplemented => "UNIMPLEMENTED",
            Self::Internal => "INTERNAL",
            Self::Unavailable => "UNAVAILABLE",
            Self::DataLoss => "DATA_LOSS",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Other(_) => return None,
        })
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "CODE_{}", self.code()),
        }
    }
}

impl Error {
    /// The absl code when this is a [`Error::Pjrt`].
    pub fn pjrt_code(&self) -> Option<ErrorCode> {
        match self {
            Error::Pjrt { code, .. } => Some(*code),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_round_trip_and_print_absl_names() {
        for code in 0..=17 {
            assert_eq!(ErrorCode::from_code(code).code(), code);
        }
        assert_eq!(ErrorCode::from_code(3).to_string(), "INVALID_ARGUMENT");
        assert_eq!(ErrorCode::from_code(13).to_string(), "INTERNAL");
        assert_eq!(ErrorCode::from_code(99).to_string(), "CODE_99");
        let e = Error::Pjrt {
            code: ErrorCode::InvalidArgument,
            message: "bad".into(),
        };
        assert_eq!(e.to_string(), "PJRT error INVALID_ARGUMENT: bad");
    }

    #[test]
    fn not_found_message_contains_install_hint() {
        let e = Error::PluginNotFound {
            detail: "PJRT_PLUGIN is not set".into(),
        };
        let msg = e.to_string();
        assert!(msg.contains(INSTALL_HINT), "{msg}");
    }
}
