//! The `str0m` stack under test (placeholder).

use std::time::Instant;

use anyhow::{bail, Result};

use crate::measure::Stack;

/// N established server peers of this stack, and the simulated clock after setup.
pub fn setup(_peers: usize) -> Result<(Box<dyn Stack>, Instant)> {
    bail!("not built yet")
}
