//! The carrier's STIR/SHAKEN verdict on a caller number: how far the originating carrier
//! vouches that the caller may use it. A number is cheap to spoof; this says how much it is
//! worth as evidence (see `scoring`).

use super::InvalidValue;

/// STIR/SHAKEN attestation of the caller number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attestation {
    /// Full: the carrier knows the caller and that they may use the number.
    A,
    /// Partial: the carrier knows the caller, not their right to the number.
    B,
    /// Gateway: the carrier only knows where the call entered its network.
    C,
    /// Verification failed: the number is probably spoofed.
    Failed,
}

impl Attestation {
    /// Reads `A`, `B`, `C` or `failed` (any case).
    ///
    /// # Errors
    /// Any other value.
    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        match value.trim().to_ascii_lowercase().as_str() {
            "a" => Ok(Self::A),
            "b" => Ok(Self::B),
            "c" => Ok(Self::C),
            "failed" => Ok(Self::Failed),
            _ => Err(InvalidValue(
                "attestation must be `A`, `B`, `C` or `failed`".into(),
            )),
        }
    }

    /// Twilio's `StirVerstat` (<https://www.twilio.com/docs/voice/trusted-calling-with-shakenstir>):
    /// `TN-Validation-Passed-A/B/C` and `TN-Validation-Failed[-A/B/C]` (each also with a
    /// `-Diverted` suffix); `No-TN-Validation` and anything else say nothing.
    pub fn from_twilio(stir_verstat: &str) -> Option<Self> {
        let v = stir_verstat.trim();
        let v = v.strip_suffix("-Diverted").unwrap_or(v);
        if v.starts_with("TN-Validation-Failed") {
            return Some(Self::Failed);
        }
        match v.strip_prefix("TN-Validation-Passed-")? {
            "A" => Some(Self::A),
            "B" => Some(Self::B),
            "C" => Some(Self::C),
            _ => None,
        }
    }

    /// The wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::A => "A",
            Self::B => "B",
            Self::C => "C",
            Self::Failed => "failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attestation_levels_read_in_any_case() {
        assert_eq!(Attestation::parse("a").unwrap(), Attestation::A);
        assert_eq!(Attestation::parse(" C ").unwrap(), Attestation::C);
        assert_eq!(Attestation::parse("FAILED").unwrap(), Attestation::Failed);
        assert!(Attestation::parse("D").is_err());
    }

    #[test]
    fn twilio_verdicts_map_to_levels() {
        for (raw, want) in [
            ("TN-Validation-Passed-A", Some(Attestation::A)),
            ("TN-Validation-Passed-B", Some(Attestation::B)),
            ("TN-Validation-Passed-C-Diverted", Some(Attestation::C)),
            ("TN-Validation-Failed-A", Some(Attestation::Failed)),
            ("TN-Validation-Failed", Some(Attestation::Failed)),
            ("TN-Validation-Failed-B-Diverted", Some(Attestation::Failed)),
            ("No-TN-Validation", None),
            ("", None),
        ] {
            assert_eq!(Attestation::from_twilio(raw), want, "{raw}");
        }
    }
}
