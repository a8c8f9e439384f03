//! Sources that read a messenger themselves and publish its events to the
//! events queue (the other sources are gateways that publish on their own).

pub mod config;
pub mod matrix;

pub use config::MatrixConfig;
