//! Domain vocabulary shared by every layer (README, "First steps" and "Credentials and roles").
//!
//! Each enum has one wire spelling (snake_case), used by the API, the database and the
//! receipt bodies alike, so a stored value always parses back.

/// Declares a closed string enum with its wire spelling, `Display` and `FromStr`.
/// Used for every enum of the vocabulary, here and in `correlate.rs`.
///
/// The enum is ordered by declaration (`Ord`), unless it starts with `unordered`: an enum
/// whose order carries security meaning defines it explicitly instead (see [`SourceTrust`]).
///
/// The wire spellings are matched as `tt`, not `literal`: a `literal` fragment reaches derive
/// macros wrapped in an invisible group, which serde reads but utoipa skips, so the document
/// would show the Rust variant names instead of the wire ones.
macro_rules! wire_enum {
    (unordered $(#[$meta:meta])* $name:ident { $($variant:ident => $text:tt),+ $(,)? }) => {
        $crate::model::wire_enum!(@define [] $(#[$meta])* $name { $($variant => $text),+ });
    };
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:tt),+ $(,)? }) => {
        $crate::model::wire_enum!(@define [PartialOrd, Ord] $(#[$meta])* $name { $($variant => $text),+ });
    };
    (@define [$($order:ident),*] $(#[$meta:meta])* $name:ident { $($variant:ident => $text:tt),+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, $($order,)* ::serde::Serialize, ::serde::Deserialize, ::utoipa::ToSchema)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire spelling.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::model::UnknownVariant;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::model::UnknownVariant {
                        kind: stringify!($name),
                        expected: &[$($text),+],
                    }),
                }
            }
        }
    };
}
pub(crate) use wire_enum;

/// A string did not name any variant of a wire enum. Shown to the client as is.
#[derive(Debug, Clone, thiserror::Error)]
#[error("must be one of {}", expected.join(", "))]
pub struct UnknownVariant {
    pub kind: &'static str,
    pub expected: &'static [&'static str],
}

wire_enum! {
    /// The gateway's verdict on one tool call.
    Verdict { Allow => "allow", Deny => "deny", RequireApproval => "require_approval" }
}

wire_enum! {
    unordered
    /// Provenance of the content that triggered a tool call. Deliberately not `Ord`: the
    /// trust order is [`SourceTrust::distrust_rank`], never the declaration order.
    SourceTrust {
        TrustedInternalSigned => "trusted_internal_signed",
        TrustedInternalUnsigned => "trusted_internal_unsigned",
        SemiTrustedCustomer => "semi_trusted_customer",
        Unknown => "unknown",
        UntrustedExternal => "untrusted_external",
        MaliciousSuspected => "malicious_suspected",
    }
}

impl SourceTrust {
    /// The trust order: 0 is the most trusted source, higher ranks are trusted less.
    ///
    /// `unknown` (no claim) ranks below every vouched-for source and above every source
    /// known to be bad. Trust needs every hop to vouch for the content, so a hop nobody
    /// vouched for takes a run's trusted or semi-trusted claim away; but a missing claim must
    /// never hide a known-bad one, so `untrusted_external` and `malicious_suspected` survive
    /// any `unknown` hop (a policy that forbids them cannot be sidestepped by leaving the
    /// claim out). `malicious_suspected`, a positive detection, is trusted least of all.
    pub const fn distrust_rank(self) -> u8 {
        match self {
            SourceTrust::TrustedInternalSigned => 0,
            SourceTrust::TrustedInternalUnsigned => 1,
            SourceTrust::SemiTrustedCustomer => 2,
            SourceTrust::Unknown => 3,
            SourceTrust::UntrustedExternal => 4,
            SourceTrust::MaliciousSuspected => 5,
        }
    }

    /// The less trusted of two sources: a multi-hop run can only tighten trust.
    pub const fn tighten(self, other: SourceTrust) -> SourceTrust {
        if other.distrust_rank() > self.distrust_rank() {
            other
        } else {
            self
        }
    }

    /// Whether nobody vouched for the content: `unknown`, `untrusted_external` or
    /// `malicious_suspected` (the default pack denies writes driven by these).
    pub const fn is_unvouched(self) -> bool {
        self.distrust_rank() >= SourceTrust::Unknown.distrust_rank()
    }
}

wire_enum! {
    /// How much scrutiny an agent's calls get; escalation steps it up one level.
    RiskTier { Low => "low", Medium => "medium", High => "high" }
}

impl RiskTier {
    /// One level up, or `None` at the top.
    pub fn escalated(self) -> Option<RiskTier> {
        match self {
            RiskTier::Low => Some(RiskTier::Medium),
            RiskTier::Medium => Some(RiskTier::High),
            RiskTier::High => None,
        }
    }

    /// The tier an agent steps up to as it is denied once more: when its denies within the
    /// trailing window since its last tier change, this one included, reach `threshold`.
    /// `earlier_denies` may be counted only up to `threshold - 1`; more changes nothing.
    pub fn after_deny(self, earlier_denies: u32, threshold: u32) -> Option<RiskTier> {
        if earlier_denies.saturating_add(1) >= threshold {
            self.escalated()
        } else {
            None
        }
    }
}

wire_enum! {
    /// Lifecycle of an agent. `Revoked` is terminal.
    AgentStatus { Active => "active", Frozen => "frozen", Revoked => "revoked" }
}

wire_enum! {
    /// The intrinsic risk of a tool action, registered by an admin.
    ActionRisk { Low => "low", Medium => "medium", High => "high", Critical => "critical" }
}

wire_enum! {
    /// Operator key roles; each includes the powers of the ones before it.
    Role { Viewer => "viewer", Responder => "responder", Admin => "admin" }
}

impl Role {
    /// Whether a key of this role may act where `required` is needed.
    pub fn grants(self, required: Role) -> bool {
        self >= required
    }
}

wire_enum! {
    /// Severity of alerts and incidents.
    Severity { Info => "info", Low => "low", Medium => "medium", High => "high", Critical => "critical" }
}

/// An action's risk as the severity of what reports it (a denied call's notification).
impl From<ActionRisk> for Severity {
    fn from(risk: ActionRisk) -> Severity {
        match risk {
            ActionRisk::Low => Severity::Low,
            ActionRisk::Medium => Severity::Medium,
            ActionRisk::High => Severity::High,
            ActionRisk::Critical => Severity::Critical,
        }
    }
}

wire_enum! {
    /// How far a tenant's SOC may act on its own (README, "The SOC plane").
    AutonomyLevel { L0 => "L0", L1 => "L1", L2 => "L2", L3 => "L3", L4 => "L4" }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_deny_steps_the_tier_up_once_the_threshold_is_reached() {
        use super::RiskTier::{High, Low, Medium};
        assert_eq!(Low.after_deny(3, 5), None);
        assert_eq!(Low.after_deny(4, 5), Some(Medium));
        assert_eq!(Medium.after_deny(4, 5), Some(High));
        assert_eq!(High.after_deny(4, 5), None, "high is the top");
        assert_eq!(Low.after_deny(0, 1), Some(Medium), "a threshold of one");
        assert_eq!(Low.after_deny(u32::MAX, 5), Some(Medium), "no overflow");
    }

    use super::*;

    #[test]
    fn wire_spellings_round_trip() {
        for v in SourceTrust::ALL {
            assert_eq!(v.as_str().parse::<SourceTrust>().unwrap(), *v);
            assert_eq!(serde_json::to_string(v).unwrap(), format!("\"{v}\""));
        }
        let unknown = "nope".parse::<Verdict>().unwrap_err();
        assert_eq!(
            unknown.to_string(),
            "must be one of allow, deny, require_approval"
        );
    }

    #[test]
    fn trust_only_tightens() {
        use SourceTrust::*;
        assert_eq!(
            TrustedInternalSigned.tighten(UntrustedExternal),
            UntrustedExternal
        );
        assert_eq!(
            MaliciousSuspected.tighten(TrustedInternalSigned),
            MaliciousSuspected
        );
        // The audit's bypass: a suspected-malicious root over a hop without a claim.
        assert_eq!(MaliciousSuspected.tighten(Unknown), MaliciousSuspected);
        assert_eq!(Unknown.tighten(MaliciousSuspected), MaliciousSuspected);
        assert_eq!(Unknown.tighten(UntrustedExternal), UntrustedExternal);
        assert_eq!(TrustedInternalSigned.tighten(Unknown), Unknown);
        assert_eq!(SemiTrustedCustomer.tighten(Unknown), Unknown);
    }

    #[test]
    fn the_trust_order_is_explicit_and_total() {
        use SourceTrust::*;
        let by_rank = [
            TrustedInternalSigned,
            TrustedInternalUnsigned,
            SemiTrustedCustomer,
            Unknown,
            UntrustedExternal,
            MaliciousSuspected,
        ];
        let ranks: Vec<u8> = by_rank.iter().map(|t| t.distrust_rank()).collect();
        assert_eq!(ranks, vec![0, 1, 2, 3, 4, 5], "one rank per level, no ties");
        assert_eq!(SourceTrust::ALL.len(), by_rank.len());
        let unvouched: Vec<SourceTrust> =
            by_rank.into_iter().filter(|t| t.is_unvouched()).collect();
        assert_eq!(
            unvouched,
            vec![Unknown, UntrustedExternal, MaliciousSuspected]
        );
    }

    proptest::proptest! {
        #[test]
        fn tightening_never_trusts_more_than_either_input(
            a in proptest::sample::select(SourceTrust::ALL),
            b in proptest::sample::select(SourceTrust::ALL),
            c in proptest::sample::select(SourceTrust::ALL),
        ) {
            let t = a.tighten(b);
            proptest::prop_assert!(t == a || t == b, "the result is one of the inputs");
            proptest::prop_assert!(t.distrust_rank() >= a.distrust_rank());
            proptest::prop_assert!(t.distrust_rank() >= b.distrust_rank());
            proptest::prop_assert_eq!(t, b.tighten(a), "commutative");
            proptest::prop_assert_eq!(a.tighten(b).tighten(c), a.tighten(b.tighten(c)), "associative");
            proptest::prop_assert_eq!(a.tighten(a), a, "idempotent");
            proptest::prop_assert_eq!(a.tighten(SourceTrust::TrustedInternalSigned), a, "the most trusted level is neutral");
            proptest::prop_assert_eq!(a.tighten(SourceTrust::MaliciousSuspected), SourceTrust::MaliciousSuspected, "the least trusted level absorbs");
            if a.is_unvouched() || b.is_unvouched() {
                proptest::prop_assert!(t.is_unvouched(), "no hop can vouch for content another hop did not");
            }
        }
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Admin.grants(Role::Responder));
        assert!(Role::Responder.grants(Role::Viewer));
        assert!(!Role::Viewer.grants(Role::Responder));
        assert!(!Role::Responder.grants(Role::Admin));
    }

    #[test]
    fn escalation_stops_at_high() {
        assert_eq!(RiskTier::Low.escalated(), Some(RiskTier::Medium));
        assert_eq!(RiskTier::High.escalated(), None);
    }
}
