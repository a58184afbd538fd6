//! Domain vocabulary shared by every layer (README, "First steps" and "Credentials and roles").
//!
//! Each enum has one wire spelling (snake_case), used by the API, the database and the
//! receipt bodies alike, so a stored value always parses back.

/// Declares a closed string enum with its wire spelling, `Display` and `FromStr`.
/// Used for every enum of the vocabulary, here and in `correlate.rs`.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ::serde::Serialize, ::serde::Deserialize, ::utoipa::ToSchema)]
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

/// A string did not name any variant of a wire enum.
#[derive(Debug, Clone, thiserror::Error)]
#[error("expected one of {expected:?}")]
pub struct UnknownVariant {
    pub kind: &'static str,
    pub expected: &'static [&'static str],
}

wire_enum! {
    /// The gateway's verdict on one tool call.
    Verdict { Allow => "allow", Deny => "deny", RequireApproval => "require_approval" }
}

wire_enum! {
    /// Provenance of the content that triggered a tool call, most to least trusted.
    SourceTrust {
        TrustedInternalSigned => "trusted_internal_signed",
        TrustedInternalUnsigned => "trusted_internal_unsigned",
        SemiTrustedCustomer => "semi_trusted_customer",
        UntrustedExternal => "untrusted_external",
        MaliciousSuspected => "malicious_suspected",
        Unknown => "unknown",
    }
}

impl SourceTrust {
    /// The less trusted of two sources: a multi-hop run can only tighten trust.
    pub fn tighten(self, other: SourceTrust) -> SourceTrust {
        self.max(other)
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

wire_enum! {
    /// How far a tenant's SOC may act on its own (README, "The SOC plane").
    AutonomyLevel { L0 => "L0", L1 => "L1", L2 => "L2", L3 => "L3", L4 => "L4" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_spellings_round_trip() {
        for v in SourceTrust::ALL {
            assert_eq!(v.as_str().parse::<SourceTrust>().unwrap(), *v);
            assert_eq!(serde_json::to_string(v).unwrap(), format!("\"{v}\""));
        }
        assert!("nope".parse::<Verdict>().is_err());
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
