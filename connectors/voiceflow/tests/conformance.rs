//! The shared conformance check and fixture snapshots for Voiceflow.

use std::path::Path;

use sticky_connector_testkit::{conformance, describe, fixture};
use sticky_connector_voiceflow::Voiceflow;

#[test]
fn voiceflow_passes_the_connector_conformance_check() {
    conformance(
        &Voiceflow,
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
        &[],
    );
}

#[test]
fn fixtures_parse_and_render_as_snapshotted() {
    insta::glob!("fixtures/*", |path| {
        insta::assert_json_snapshot!(describe(&Voiceflow, &fixture(path), &[]));
    });
}
