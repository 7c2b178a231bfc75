//! The snodo hub library.
