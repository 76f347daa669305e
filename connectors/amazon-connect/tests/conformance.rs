//! The shared conformance check and fixture snapshots for Amazon Connect.

use std::path::Path;

use sticky_connector_amazon_connect::AmazonConnect;
use sticky_connector_testkit::{conformance, describe, fixture};

#[test]
fn amazon_connect_passes_the_connector_conformance_check() {
    conformance(
        &AmazonConnect,
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
        &[],
    );
}

#[test]
fn fixtures_parse_and_render_as_snapshotted() {
    insta::glob!("fixtures/*", |path| {
        insta::assert_json_snapshot!(describe(&AmazonConnect, &fixture(path), &[]));
    });
}
