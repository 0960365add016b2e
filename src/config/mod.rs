//! Configuration: raw serde mirror → validation (every error, with its
//! location) → runtime types.

pub mod types;
