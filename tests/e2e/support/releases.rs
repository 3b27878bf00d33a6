//! The releases the tests share, each packaged once in the shared clone: 1.0.0, and 1.2.0 (the
//! version a deploy upgrades to).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::{clone, lock, text, xtask};

/// Version 1.0.0, packaged once for all the tests that read it; returns its folder.
pub fn release_1_0_0() -> &'static Path {
    static RELEASE: OnceLock<PathBuf> = OnceLock::new();
    RELEASE.get_or_init(|| {
        let clone = clone();
        let _guard = lock(clone);
        let output = xtask(&clone.dir, &["package", "1.0.0", "--json"]);
        assert!(
            output.status.success(),
            "package 1.0.0 failed: {}",
            text(&output)
        );
        let summary: serde_json::Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|_| panic!("stdout is not one JSON object: {}", text(&output)));
        assert_eq!(summary["version"], "1.0.0");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("built "), "{stderr}");
        assert!(stderr.contains("wrote "), "{stderr}");
        clone.dir.join("dist/1.0.0")
    })
}

/// Version 1.2.0, packaged once for the tests that need a second release.
pub fn release_1_2_0() -> &'static Path {
    static RELEASE: OnceLock<PathBuf> = OnceLock::new();
    RELEASE.get_or_init(|| {
        release_1_0_0();
        let clone = clone();
        let _guard = lock(clone);
        let output = xtask(&clone.dir, &["package", "1.2.0"]);
        assert!(output.status.success(), "package 1.2.0: {}", text(&output));
        clone.dir.join("dist/1.2.0")
    })
}
