//! Running a Python reference harness from `benches/reference/` beside a bench.

use std::path::Path;
use std::process::Command;

/// The JSON object that `benches/reference/SCRIPT` prints when run with `args` by the
/// Python named in `KEYSCRIBE_REFERENCE_PYTHON`; `None` when that is unset or the script
/// fails (its error output is shown).
pub fn run_reference(script: &str, args: &[&std::ffi::OsStr]) -> Option<serde_json::Value> {
    let python = std::env::var_os("KEYSCRIBE_REFERENCE_PYTHON")?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("benches/reference")
        .join(script);
    let output = Command::new(python)
        .arg(script)
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .ok()?;
    if !output.status.success() {
        eprintln!(
            "the reference failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        return None;
    }
    serde_json::from_slice(&output.stdout).ok()
}
