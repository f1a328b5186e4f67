//! The shopping cart example.
