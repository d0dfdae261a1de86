//! Lowering of IR graphs to XLA `HloModuleProto`, and the HLO text printer.

pub mod check;
pub mod lower;
pub mod stats;
pub mod text;

pub use lower::{lower, LowerOptions};
pub use text::{print_module, PrintOptions};
