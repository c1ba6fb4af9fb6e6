//! The shared vocabulary of keel.
//!
//! What it is: the identifiers and values every keel crate speaks — [`Revision`], [`LeaseId`],
//! [`MemberId`], [`ClusterId`] and [`KeyRange`] (etcd's `key`/`range_end` rules) — and the
//! injected [`Clock`].
//!
//! What it is not: it holds no state and does no I/O. The protobuf encoding of these values
//! (where "no lease" is `0` and "latest" is `0`) lives in keel-server only; here those are
//! `Option`s and enum variants.
//!
//! # Examples
//! ```
//! use keel_types::{KeyRange, Revision};
//! let r = KeyRange::prefix(b"config/".to_vec());
//! assert!(r.contains(b"config/a"));
//! assert!(!r.contains(b"configx"));
//! assert_eq!(Revision::new(5).next(), Revision::new(6));
//! ```

mod clock;
mod ids;
mod range;

pub use clock::{Clock, ManualClock, SystemClock};
pub use ids::{ClusterId, LeaseId, MemberId, Revision};
pub use range::KeyRange;
