//! The seed's `Pair`, shared by the examples that use it as it is.
#![allow(unreachable_pub, reason = "#[shared] exposes an impl's `pub` methods")]

/// Two values, `x` and `y`, as in the seed.
pub struct Pair {
    x: i64,
    y: i64,
}

#[manager::shared]
impl Pair {
    /// A pair of `x` and `y`.
    pub fn new(x: i64, y: i64) -> Self {
        Pair { x, y }
    }

    /// Returns `x`.
    pub fn get_x(&self) -> i64 {
        self.x
    }

    /// Returns `y`.
    pub fn get_y(&self) -> i64 {
        self.y
    }

    /// Sets `x`.
    pub fn set_x(&mut self, new_x: i64) {
        self.x = new_x;
    }

    /// Sets `y`.
    pub fn set_y(&mut self, new_y: i64) {
        self.y = new_y;
    }
}
