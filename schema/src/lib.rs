//! ssi-schema: the Cap'n Proto protocol of an ssi cluster.
//!
//! The schema is `schema/ssi.capnp`; `ssi_capnp.rs` is the Rust code `capnpc`
//! generates from it, committed so that a machine without the `capnp` compiler
//! builds the project. The test `generated_code_is_current` regenerates it when
//! the compiler is installed and fails if the committed copy differs; run it with
//! `SSI_REGENERATE=1` to update the copy after changing the schema.

#[allow(clippy::all, clippy::unwrap_used, unused, missing_docs)]
#[rustfmt::skip]
pub mod ssi_capnp;

pub use ssi_capnp::*;

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    #[test]
    fn generated_code_is_current() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        assert!(
            Command::new("capnp").arg("--version").output().is_ok(),
            "the `capnp` compiler is not installed, so the committed ssi_capnp.rs cannot be \
             checked against ssi.capnp: install Debian's capnproto and libcapnp-dev (tests/run does)"
        );
        let out = tempfile::tempdir().expect("temp dir");
        capnpc::CompilerCommand::new()
            .src_prefix(dir)
            .file(dir.join("ssi.capnp"))
            .output_path(out.path())
            .run()
            .expect("capnp compile");
        let fresh = std::fs::read_to_string(out.path().join("ssi_capnp.rs")).expect("generated");
        let committed_path = dir.join("src/ssi_capnp.rs");
        let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
        if fresh != committed {
            if std::env::var_os("SSI_REGENERATE").is_some() {
                std::fs::write(&committed_path, fresh).expect("write ssi_capnp.rs");
            } else {
                panic!(
                    "schema/src/ssi_capnp.rs is not what schema/ssi.capnp generates; \
                     run `SSI_REGENERATE=1 cargo test -p ssi-schema` and commit the result"
                );
            }
        }
    }
}
