//! The shared conformance check and fixture snapshots for NICE CXone.

use std::path::Path;

use sticky_connector_nice_cxone::NiceCxone;
use sticky_connector_testkit::{conformance, describe, fixture};

#[test]
fn nice_cxone_passes_the_connector_conformance_check() {
    conformance(
        &NiceCxone,
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
        &[],
    );
}

#[test]
fn fixtures_parse_and_render_as_snapshotted() {
    insta::glob!("fixtures/*", |path| {
        insta::assert_json_snapshot!(describe(&NiceCxone, &fixture(path), &[]));
    });
}
