//! The mock upstream (being written).
