//! The code that needs `unsafe` (STYLE.md habit 7), each block with the
//! invariant that makes it sound in a `// SAFETY:` comment.
//!
//! Today only a test-build allocation meter lives here; the cross-core ring
//! is the `rtrb` crate.
#![allow(unsafe_code)]

#[cfg(test)]
pub(crate) mod alloc_meter;
