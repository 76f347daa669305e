//! The shared conformance check and fixture snapshots for Dialogflow CX.

use std::path::Path;

use sticky_connector_dialogflow_cx::DialogflowCx;
use sticky_connector_testkit::{conformance, describe, fixture};

const QUERY: &[(&str, &str)] = &[("greeting", "Welcome back, {name}!")];

#[test]
fn dialogflow_cx_passes_the_connector_conformance_check() {
    conformance(
        &DialogflowCx,
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
        QUERY,
    );
}

#[test]
fn fixtures_parse_and_render_as_snapshotted() {
    insta::glob!("fixtures/*", |path| {
        insta::assert_json_snapshot!(describe(&DialogflowCx, &fixture(path), QUERY));
    });
}
