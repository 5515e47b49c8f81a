//! Size and count limits enforced by the decoder.

use serde::{Deserialize, Serialize};

/// Limits applied while decoding; every violation names the limit it broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Largest header, error, summary or reply frame body (bytes).
    pub max_header_bytes: u32,
    /// Largest item or result frame body as sent, i.e. compressed (bytes).
    pub max_frame_bytes: u64,
    /// Largest item payload after decompression (bytes).
    pub max_item_bytes: u64,
    /// Most items in one request.
    pub max_items_per_request: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 64 * 1024,
            max_frame_bytes: 256 * 1024 * 1024,
            max_item_bytes: 512 * 1024 * 1024,
            max_items_per_request: 100_000,
        }
    }
}
