//! Load averages (1, 5, 15 minutes).

use sentinel_protocol::Sample;
use sysinfo::System;

use super::CollectError;

pub fn collect(s: &mut Sample) -> Result<(), CollectError> {
    let load = System::load_average().map_err(|e| CollectError::sysinfo("load average", e))?;
    let clean = |v: f64| {
        if v.is_finite() && v >= 0.0 {
            v as f32
        } else {
            0.0
        }
    };
    s.load1 = clean(load.one);
    s.load5 = clean(load.five);
    s.load15 = clean(load.fifteen);
    Ok(())
}
