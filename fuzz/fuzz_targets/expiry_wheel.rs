//! The expiry wheel against the naive sorted deadline queue on byte-driven operation
//! sequences: the same expiry sets, nothing early, late, twice or lost, batches bounded.
#![no_main]

use keel_lease::wheel_reference::{compare_with_naive, WheelOp};
use libfuzzer_sys::fuzz_target;

/// A delay at one of four scales, so that entries land on every level of the wheel.
fn delay(scale: u8, raw: u32) -> u64 {
    let raw = u64::from(raw);
    match scale % 4 {
        0 => raw % 70,
        1 => raw % 5_000,
        2 => raw % 300_000,
        _ => raw << 4,
    }
}

fn ops(data: &[u8]) -> Vec<WheelOp> {
    data.chunks_exact(6)
        .map(|c| {
            let raw = u32::from_le_bytes([c[2], c[3], c[4], c[5]]);
            let which = raw as usize;
            match c[0] % 5 {
                0 => WheelOp::Insert { delay: delay(c[1], raw) },
                1 => WheelOp::Reschedule { which, delay: delay(c[1], raw >> 8) },
                2 => WheelOp::Cancel { which },
                3 => WheelOp::Remove { which },
                _ => WheelOp::Advance { by: delay(c[1], raw), max: usize::from(c[1] % 16) + 1 },
            }
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    if let Err(difference) = compare_with_naive(&ops(data)) {
        panic!("the wheel differs from the naive queue: {difference}");
    }
});
