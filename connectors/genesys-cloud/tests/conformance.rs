//! The shared conformance check and fixture snapshots for Genesys Cloud.

use std::path::Path;

use sticky_connector_genesys_cloud::GenesysCloud;
use sticky_connector_testkit::{conformance, describe, fixture};

#[test]
fn genesys_cloud_passes_the_connector_conformance_check() {
    conformance(
        &GenesysCloud,
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
        &[("vars", "name,order_id,tier")],
    );
}

#[test]
fn fixtures_parse_and_render_as_snapshotted() {
    insta::glob!("fixtures/*", |path| {
        insta::assert_json_snapshot!(describe(
            &GenesysCloud,
            &fixture(path),
            &[("vars", "name,order_id,tier")]
        ));
    });
}
