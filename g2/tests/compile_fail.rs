//! Misuse of `#[g2::remote]` and of the node builder fails to compile, with
//! messages that say what to do.

#[test]
fn misuse_fails_to_compile() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
