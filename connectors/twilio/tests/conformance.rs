//! The shared conformance check and fixture snapshots for Twilio.

use std::path::Path;

use sticky_connector_testkit::{conformance, describe, fixture};
use sticky_connector_twilio::Twilio;

const QUERY: &[(&str, &str)] = &[("next", "https://example.com/voice?lang=en")];

#[test]
fn twilio_passes_the_connector_conformance_check() {
    conformance(
        &Twilio,
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
        QUERY,
    );
}

#[test]
fn fixtures_parse_and_render_as_snapshotted() {
    insta::glob!("fixtures/*", |path| {
        insta::assert_json_snapshot!(describe(&Twilio, &fixture(path), QUERY));
    });
}
