//! The feature spec's transforms, implemented once.
//!
//! A spec (docs/training.md) names a model's inputs as expressions over a
//! ROOT tree's branches: flat, or jagged padded to a length (sorted by a
//! key, with a mask), standardised with values fitted in a first pass over
//! the training data, plus a selection, a weight, labels and observer
//! columns. This crate parses the spec ([`toml::from_toml`], with line
//! numbers), evaluates its expressions ([`expr`]) and turns raw branch
//! values ([`Columns`]) into the model's tensors ([`Features::transform`]).
//! The same code runs at training time (through the `tensorgate` Python
//! extension) and at serving time (compiled into the `features` plugin);
//! its math is the pure-Rust `libm`, so both give the same bits.

pub mod columns;
pub mod expr;
pub mod records;
pub mod spec;
#[cfg(feature = "toml")]
pub mod toml;

pub use columns::{Column, ColumnError, Columns};
pub use expr::{Expr, ExprError, Value, FUNCTIONS};
pub use records::columns_from_json;
pub use spec::{Data, Error, Feature, Features, Fitted, Input, Labels, Located, Processed, Scale, Spec, Stats, Tensor, TensorInfo};

#[cfg(all(test, feature = "toml"))]
mod tests;
