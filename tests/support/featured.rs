//! The example proxy must be built with the feature a test needs: a build
//! from `cargo test --all-targets` without features (or an older one) is
//! rebuilt once with them, before the test starts any proxy.

use std::process::Command;
use std::sync::OnceLock;

use crate::support::process::proxy_binary;

/// Makes sure the proxy binary follows `probe` (a `--discover` value of
/// the kind the test needs), building it with `features` if it does not.
pub fn ensure_proxy_with(probe: &str, features: &str) {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        let binary = proxy_binary();
        // `--workers 0` makes a capable build stop at the settings check.
        let output = Command::new(&binary)
            .args(["--discover", probe, "--workers", "0"])
            .output()
            .expect("the proxy runs");
        let text = String::from_utf8_lossy(&output.stderr);
        if !text.contains("built without") {
            return;
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--example", "proxy", "--features", features])
            .status()
            .expect("cargo runs");
        assert!(
            status.success(),
            "building the proxy with {features} failed"
        );
    });
}
