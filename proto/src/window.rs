//! Windows: the records of one stream in one span of device time.
//!
//! Window boundaries are a mesh-wide constant (every node must cut the same windows to
//! compare them), aligned to multiples of [`SPAN_NS`] in Unix device time.

/// Device-time span of one window: 60 s (see `docs/protocol.md`, "Windows").
pub const SPAN_NS: u64 = 60_000_000_000;

/// Start of the window holding device time `t_ns`.
pub fn start(t_ns: u64) -> u64 {
    t_ns - t_ns % SPAN_NS
}

/// The window after the one starting at `start` (saturating at the end of time).
pub fn next(start: u64) -> u64 {
    start.saturating_add(SPAN_NS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_tile_device_time() {
        assert_eq!(start(0), 0);
        assert_eq!(start(SPAN_NS - 1), 0);
        assert_eq!(start(SPAN_NS), SPAN_NS);
        assert_eq!(next(start(1_765_477_200_758_000_000)), 1_765_477_260_000_000_000);
        assert_eq!(next(start(u64::MAX)), u64::MAX);
    }
}
