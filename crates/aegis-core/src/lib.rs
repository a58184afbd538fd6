//! The pure core of AegisAgent: the vocabulary, canonical action hashing, the decision
//! function (Cedar policy evaluation), and receipt chains with signed checkpoints.
//!
//! Nothing here does I/O, spawns threads or reads the clock: every function is a function of
//! its inputs, so the same code serves the gateway, an SDK that precomputes action hashes,
//! and `aegis receipts verify`, which checks exported chains offline.
//!
//! ```
//! use aegis_core::canonical::ActionRef;
//! use serde_json::json;
//!
//! let parameters = json!({"base_branch": "main"});
//! let action = ActionRef {
//!     tool: "github",
//!     action: "merge_pull_request",
//!     resource: Some("payments-service#482"),
//!     mutates_state: true,
//!     parameters: Some(&parameters),
//! };
//! assert_eq!(
//!     action.canonical().unwrap(),
//!     r#"{"action":"merge_pull_request","mutates_state":true,"parameters":{"base_branch":"main"},"resource":"payments-service#482","tool":"github"}"#
//! );
//! ```

pub mod approval;
pub mod canonical;
pub mod correlate;
pub mod decision;
pub mod merkle;
pub mod model;
pub mod policy;
pub mod receipt;
pub mod timestamp;
