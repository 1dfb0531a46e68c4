//! Metric names shared by several stages (each stage's own are constants in its module).

/// Metric `screenpop_drops_total`.
pub const DROPS_TOTAL: &str = "screenpop_drops_total";
