//! Sources that read a messenger themselves and publish its events to the
//! events queue (the other sources are gateways that publish on their own).

pub mod config;
#[cfg(feature = "e2ee")]
pub mod e2ee;
pub mod matrix;

pub use config::MatrixConfig;
