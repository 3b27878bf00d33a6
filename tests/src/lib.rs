//! The end-to-end test crate: its tests are in `e2e/`, its server binary in `src/bin/`.
