//! Any text given to the manifest parser yields a manifest or an error
//! naming the problem, never a panic; a manifest that parses is consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tensorgate_server::manifest::Manifest;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Manifest::parse(text, "fuzz/manifest.toml") {
        Ok(m) => {
            assert!(!m.name.is_empty());
            assert!(m.model.max_batch >= 1 && (1..=64).contains(&m.model.instances));
            // What the plugin sees, and the batching policy, derive without panicking.
            let _ = m.params_as_text();
            let _ = m.model.batch_policy();
        }
        Err(e) => assert!(e.to_string().starts_with("fuzz/manifest.toml")),
    }
});
