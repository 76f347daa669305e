//! The shared conformance check and fixture snapshots for Five9.

use std::path::Path;

use sticky_connector_five9::Five9;
use sticky_connector_testkit::{conformance, describe, fixture};

#[test]
fn five9_passes_the_connector_conformance_check() {
    conformance(
        &Five9,
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
        &[],
    );
}

#[test]
fn fixtures_parse_and_render_as_snapshotted() {
    insta::glob!("fixtures/*", |path| {
        insta::assert_json_snapshot!(describe(&Five9, &fixture(path), &[]));
    });
}
