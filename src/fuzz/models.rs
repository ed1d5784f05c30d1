//! Model files an operator drops in or `stt models import` reads: the
//! CTranslate2 `model.bin` (header, variables, conversion plan), its
//! `vocabulary.txt`, and ggml files (whisper.cpp's format, inspected
//! before whisper.cpp is handed one).

use std::io::Cursor;
use std::sync::OnceLock;

use proptest::prelude::*;

use super::{fuzz_config, mutated, word_patched};
use crate::models::ct2::Ct2Model;
use crate::models::fixture;
use crate::models::plan::Plan;
use crate::models::vocab::Vocabulary;
use crate::models::{import_ct2, inspect, ImportOptions};

/// A valid float32 `model.bin` of the synthetic Whisper.
fn model_bin() -> Vec<u8> {
    static BIN: OnceLock<Vec<u8>> = OnceLock::new();
    BIN.get_or_init(|| fixture::encode(&fixture::whisper_vars(false)))
        .clone()
}

/// The synthetic Whisper converted to ggml by our importer.
fn ggml_bin() -> Vec<u8> {
    static BIN: OnceLock<Vec<u8>> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        fixture::write_dir(dir.path(), &fixture::whisper_vars(true));
        let out = dir.path().join("m.bin");
        import_ct2(dir.path(), &out, &quiet()).expect("the fixture imports");
        std::fs::read(&out).expect("read m.bin")
    })
    .clone()
}

fn quiet() -> ImportOptions {
    ImportOptions {
        show_progress: false,
    }
}

fn broken(valid: fn() -> Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![mutated(valid()), word_patched(valid())]
}

proptest! {
    #![proptest_config(fuzz_config(2000))]

    /// Any `model.bin` is indexed or refused; an indexed one reads every
    /// variable within the file and plans a conversion or says why not.
    #[test]
    fn ct2_model_files_are_read_or_refused(bytes in broken(model_bin)) {
        let len = bytes.len();
        if let Ok(mut model) = Ct2Model::from_reader(Cursor::new(bytes)) {
            for var in model.variables().to_vec() {
                if let Ok(data) = model.read_bytes(&var) {
                    prop_assert!(data.len() <= len);
                }
            }
            let _ = Plan::build(&mut model);
        }
    }

    /// Any `vocabulary.txt` parses or is refused.
    #[test]
    fn vocabularies_parse_or_are_refused(
        text in prop_oneof![
            mutated(fixture::VOCABULARY.as_bytes().to_vec())
                .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
            "\\PC{0,200}",
        ]
    ) {
        let _ = Vocabulary::parse(&text);
    }

    /// Any file handed to the server as a ggml model is inspected or
    /// refused with its name; every tensor an inspected file lists lies
    /// inside it.
    #[test]
    fn ggml_files_are_inspected_or_refused(bytes in broken(ggml_bin)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("model.bin");
        std::fs::write(&path, &bytes).expect("write");
        match inspect(&path) {
            Ok(info) => {
                for t in &info.tensors {
                    prop_assert!(t.offset.checked_add(t.nbytes).is_some_and(|end| end <= bytes.len() as u64));
                }
            }
            Err(e) => prop_assert!(e.to_string().contains("model.bin"), "{}", e),
        }
    }
}

proptest! {
    #![proptest_config(fuzz_config(300))]

    /// `stt models import` on a broken directory converts it or refuses;
    /// what it writes, whisper.cpp's reader accepts.
    #[test]
    fn broken_ct2_directories_import_or_are_refused(bytes in broken(model_bin)) {
        let dir = tempfile::tempdir().expect("tempdir");
        fixture::write_dir(dir.path(), &fixture::whisper_vars(false));
        std::fs::write(dir.path().join("model.bin"), &bytes).expect("write");
        let out = dir.path().join("out.bin");
        if import_ct2(dir.path(), &out, &quiet()).is_ok() {
            prop_assert!(inspect(&out).is_ok());
        }
    }
}
