pub mod address;
pub mod config;
