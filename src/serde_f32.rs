//! `f32` settings written as the decimals people wrote.
//!
//! Serde's JSON values and TOML widen an `f32` to `f64` before formatting it, so a setting of
//! 0.2 came out as 0.20000000298023224 in the analysis document. Fields that use
//! [`shortest`] are written as the shortest decimal that reads back as the same `f32`.

use serde::Serializer;

/// Serialises `value` as the `f64` nearest to its shortest round-trip decimal (0.2, not
/// 0.20000000298023224); use with `#[serde(serialize_with = "crate::serde_f32::shortest")]`.
pub fn shortest<S: Serializer>(value: &f32, serializer: S) -> Result<S::Ok, S::Error> {
    // `Display` for floats prints the shortest decimal that parses back to the same value.
    let decimal: f64 = value.to_string().parse().unwrap_or(f64::from(*value));
    serializer.serialize_f64(decimal)
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Setting {
        #[serde(serialize_with = "super::shortest")]
        threshold: f32,
    }

    #[test]
    fn settings_print_as_written_and_read_back_unchanged() {
        for (value, text) in [(0.2f32, "0.2"), (3.0, "3.0"), (0.35, "0.35"), (0.1, "0.1")] {
            let setting = Setting { threshold: value };
            let json = serde_json::to_value(&setting).unwrap();
            assert_eq!(json["threshold"].to_string(), text);
            assert_eq!(serde_json::from_value::<Setting>(json).unwrap(), setting);
            let toml_text = toml::to_string(&setting).unwrap();
            assert_eq!(toml_text.trim(), format!("threshold = {text}"));
            assert_eq!(toml::from_str::<Setting>(&toml_text).unwrap(), setting);
        }
    }
}
