//! The shared conformance check and fixture snapshots for Amazon Lex V2.

use std::path::Path;

use sticky_connector_amazon_lex::AmazonLex;
use sticky_connector_testkit::{conformance, describe, fixture};

#[test]
fn amazon_lex_passes_the_connector_conformance_check() {
    conformance(
        &AmazonLex,
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
        &[],
    );
}

#[test]
fn fixtures_parse_and_render_as_snapshotted() {
    insta::glob!("fixtures/*", |path| {
        insta::assert_json_snapshot!(describe(&AmazonLex, &fixture(path), &[]));
    });
}
