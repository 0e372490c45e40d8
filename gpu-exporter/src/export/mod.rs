//! Where a snapshot goes: OTLP to the collector, and the Prometheus page.

pub mod otlp;
pub mod prom;
