//! `sentinel-agent --once --format json` prints one real sample and exits.

use std::process::Command;

use sentinel_tests::*;

#[test]
fn once_json_prints_a_real_sample_with_the_api_field_names() {
    let out = Command::new(bin("sentinel-agent"))
        .args(["--once", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "exit status {:?}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stdout is one JSON object");
    assert_eq!(u64_field(&v, "mem_total_bytes"), mem_total_bytes());
    let avail = u64_field(&v, "mem_available_bytes");
    assert!(avail > 0 && avail <= mem_total_bytes());
    for key in [
        "cpu_percent",
        "cpu_user_percent",
        "cpu_system_percent",
        "cpu_iowait_percent",
        "cpu_steal_percent",
    ] {
        let x = v[key].as_f64().unwrap_or_else(|| panic!("{key} in {v}"));
        assert!((0.0..=100.5).contains(&x), "{key}={x}");
    }
    assert_eq!(
        v["cpu_cores_percent"].as_array().map(Vec::len),
        Some(online_cpus()),
        "one entry per core"
    );
    assert!(v["load1"].as_f64().is_some_and(|l| l >= 0.0));
    assert!(u64_field(&v, "uptime_s") > 0);
    assert!(u64_field(&v, "boot_time_s") > 1_500_000_000);
    assert!(u64_field(&v, "processes") > 1);
    assert!(
        v["filesystems"].as_array().is_some_and(|f| !f.is_empty()),
        "at least one real filesystem"
    );
    assert!(v["interfaces"].is_array());
    assert!(v["hostname"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(v["host"]["kernel"].as_str().is_some_and(|k| !k.is_empty()));
    assert!(v["host"]["cpu_count"].as_u64().is_some_and(|c| c >= 1));
    // The JSON sample is a protocol sample: it converts and validates.
    let sample: sentinel_protocol::Sample =
        serde_json::from_value(v.clone()).expect("fields of protocol::Sample");
    sample.validate().expect("sample within protocol limits");
}
