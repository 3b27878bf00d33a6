//! The releases the tests share, each packaged once in the shared clone: 1.0.0, and 1.2.0 (the
//! version a deploy upgrades to).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::{clone, git, lock, text, xtask};

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

/// A release of a real code change to the product lookup, packaged in the shared clone as
/// `version` from a commit on top of its HEAD, which goes away again once it is packaged: the
/// lookup's body gets `code` first (it may `return` or `.await`).
fn release_with_lookup_change(version: &str, subject: &str, code: &str) -> PathBuf {
    release_1_2_0();
    let clone = clone();
    let _guard = lock(clone);
    let api = clone.dir.join("server/src/routes/api.rs");
    let original = std::fs::read_to_string(&api).unwrap();
    let anchor = "    plain_text(\"SKU\", &sku)?;\n";
    assert!(original.contains(anchor), "the lookup changed: {original}");
    std::fs::write(
        &api,
        original.replacen(anchor, &format!("{anchor}{code}\n"), 1),
    )
    .unwrap();
    let head = git(&clone.dir, &["rev-parse", "HEAD"]);
    git(&clone.dir, &["commit", "-q", "-a", "-m", subject]);
    let output = xtask(&clone.dir, &["package", version]);
    git(&clone.dir, &["reset", "-q", "--hard", head.trim()]);
    assert!(
        output.status.success(),
        "package {version}: {}",
        text(&output)
    );
    clone.dir.join("dist").join(version)
}

/// 1.3.0-errors: one lookup of the tills' product in five answers 500. The smoke checks look up
/// other SKUs, so the release passes its health gate and only the canary analysis can catch it
/// (a count over every lookup had the smoke check's own lookup fail whenever it came first).
pub fn release_with_errors() -> &'static Path {
    static RELEASE: OnceLock<PathBuf> = OnceLock::new();
    RELEASE.get_or_init(|| {
        release_with_lookup_change(
            "1.3.0-errors",
            "feat: a lookup that fails one time in five",
            "    static LOOKUPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);\n    if sku == \"BREAD-1\" && LOOKUPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 5 == 0 {\n        return Err(ApiError::Internal(anyhow::anyhow!(\"the lookup broke\")));\n    }",
        )
    })
}

/// 1.3.0-slow: every product lookup takes 150 ms more.
pub fn release_with_latency() -> &'static Path {
    static RELEASE: OnceLock<PathBuf> = OnceLock::new();
    RELEASE.get_or_init(|| {
        release_with_lookup_change(
            "1.3.0-slow",
            "feat: a lookup that takes 150 ms more",
            "    tokio::time::sleep(std::time::Duration::from_millis(150)).await;",
        )
    })
}
