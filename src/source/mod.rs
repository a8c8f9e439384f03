//! Sources that read a messenger themselves and publish its events to the
//! events queue (the other sources are gateways that publish on their own).

#[cfg(feature = "e2ee")]
pub mod e2ee;
pub mod matrix;
