//! Domain newtypes shared by every layer: arms, weights, route names.
//!
//! They live apart from `config` and `routing` so that metrics, the ramp and
//! the proxy can name the same concepts without depending on each other.

use std::fmt;
use std::sync::Arc;

/// Which version of the backend serves a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Arm {
    /// The old, trusted version.
    Stable,
    /// The new version being rolled out.
    Canary,
}

impl Arm {
    /// Both arms, stable first; the index matches [`Arm::index`].
    pub const ALL: [Arm; 2] = [Arm::Stable, Arm::Canary];

    /// The label value used in headers, metrics and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Arm::Stable => "stable",
            Arm::Canary => "canary",
        }
    }

    /// 0 for stable, 1 for canary: index into per-arm arrays.
    pub fn index(self) -> usize {
        match self {
            Arm::Stable => 0,
            Arm::Canary => 1,
        }
    }

    /// Parses `"stable"` or `"canary"`.
    pub fn parse(s: &str) -> Option<Arm> {
        match s {
            "stable" => Some(Arm::Stable),
            "canary" => Some(Arm::Canary),
            _ => None,
        }
    }
}

impl fmt::Display for Arm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The canary's share of weight-assigned traffic, kept in basis points
/// (hundredths of a percent) so that the contract's "at most two decimals"
/// is exact and bucket comparison is integer-only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct CanaryWeight(u16);

impl CanaryWeight {
    /// 0 %: everything to stable.
    pub const ZERO: CanaryWeight = CanaryWeight(0);
    /// 100 %: everything to canary.
    pub const FULL: CanaryWeight = CanaryWeight(10_000);

    /// From basis points (0..=10000); larger values are clamped to 100 %.
    pub fn from_basis_points(bp: u16) -> CanaryWeight {
        CanaryWeight(bp.min(10_000))
    }

    /// From a percentage with at most two decimals; `None` when out of
    /// `0.0..=100.0`, not finite, or more precise than 0.01.
    pub fn from_percent(p: f64) -> Option<CanaryWeight> {
        if !p.is_finite() || !(0.0..=100.0).contains(&p) {
            return None;
        }
        let scaled = p * 100.0;
        let rounded = scaled.round();
        if (scaled - rounded).abs() > 1e-6 {
            return None;
        }
        // In range by the check above, so the cast cannot truncate.
        Some(CanaryWeight(rounded as u16))
    }

    /// Basis points, 0..=10000.
    pub fn basis_points(self) -> u16 {
        self.0
    }

    /// Percentage, 0.0..=100.0.
    pub fn percent(self) -> f64 {
        f64::from(self.0) / 100.0
    }
}

impl fmt::Display for CanaryWeight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.percent())
    }
}

/// A route's name, cheap to clone into metrics, logs and JSON.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteName(Arc<str>);

impl RouteName {
    /// Wraps a name.
    pub fn new(name: &str) -> RouteName {
        RouteName(Arc::from(name))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RouteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_accepts_two_decimals_only() {
        assert_eq!(
            CanaryWeight::from_percent(5.0).map(|w| w.basis_points()),
            Some(500)
        );
        assert_eq!(
            CanaryWeight::from_percent(0.01).map(|w| w.basis_points()),
            Some(1)
        );
        assert_eq!(
            CanaryWeight::from_percent(12.34).map(|w| w.basis_points()),
            Some(1234)
        );
        assert_eq!(CanaryWeight::from_percent(100.0), Some(CanaryWeight::FULL));
        assert_eq!(CanaryWeight::from_percent(0.001), None);
        assert_eq!(CanaryWeight::from_percent(100.01), None);
        assert_eq!(CanaryWeight::from_percent(-1.0), None);
        assert_eq!(CanaryWeight::from_percent(f64::NAN), None);
    }

    #[test]
    fn arm_round_trips() {
        for arm in Arm::ALL {
            assert_eq!(Arm::parse(arm.as_str()), Some(arm));
            assert_eq!(Arm::ALL[arm.index()], arm);
        }
    }
}
