//! Tests of [`super::import_ct2`]: synthetic models value by value, one test
//! per error, and the provisioned real models when they are present.

use std::path::{Path, PathBuf};

use half::f16;

use super::*;
use crate::models::fixture::{self, Data, Var, N_AUDIO_CTX, N_FF, N_MELS, N_STATE, N_TEXT_CTX};
use crate::models::ggml::{inspect, GgmlInfo, TensorType};

const N: i64 = N_STATE as i64;

fn quiet() -> ImportOptions {
    ImportOptions {
        show_progress: false,
    }
}

/// Writes `vars` as a model directory and converts it into `<tmp>/out/m.bin`.
fn convert(
    vars: &[Var],
) -> (
    tempfile::TempDir,
    PathBuf,
    Result<ImportSummary, ImportError>,
) {
    let tmp = tempfile::tempdir().expect("tempdir");
    fixture::write_dir(tmp.path(), vars);
    let out = tmp.path().join("out").join("m.bin");
    let result = import_ct2(tmp.path(), &out, &quiet());
    (tmp, out, result)
}

/// A tensor's data read back from the file, as f32.
fn tensor_values(path: &Path, info: &GgmlInfo, name: &str) -> Vec<f32> {
    let t = info
        .tensor(name)
        .unwrap_or_else(|| panic!("no tensor {name}"));
    let bytes = std::fs::read(path).expect("read output");
    let data = &bytes[t.offset as usize..(t.offset + t.nbytes) as usize];
    match t.ttype {
        TensorType::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        TensorType::F16 => data
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        TensorType::Other(code) => panic!("{name} has type {code}"),
    }
}

#[test]
fn float32_model_gets_whisper_cpp_names_types_and_shapes() {
    let vars = fixture::whisper_vars(false);
    let (_tmp, out, result) = convert(&vars);
    let summary = result.expect("import");
    let info = inspect(&out).expect("inspect");

    assert_eq!(summary.tensors, 50);
    assert_eq!(info.tensors.len(), 50);
    assert_eq!(summary.bytes, info.file_size);
    assert_eq!(summary.source_dtype, "float32");
    assert!(!summary.multilingual && !info.multilingual);
    let h = info.hparams;
    assert_eq!(
        [
            h.n_vocab,
            h.n_audio_ctx,
            h.n_audio_state,
            h.n_audio_head,
            h.n_audio_layer
        ],
        [fixture::N_VOCAB as i32, N_AUDIO_CTX as i32, N as i32, 2, 1]
    );
    assert_eq!(
        [
            h.n_text_ctx,
            h.n_text_state,
            h.n_text_head,
            h.n_text_layer,
            h.n_mels,
            h.ftype
        ],
        [N_TEXT_CTX as i32, N as i32, 2, 1, N_MELS as i32, 1]
    );
    assert_eq!(
        info.n_vocab_tokens, 4,
        "tokens up to and including <|endoftext|>"
    );

    let mut names: Vec<_> = info.tensors.iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 50, "tensor names are unique");
    assert!(
        !names.iter().any(|n| n.ends_with("key.bias")),
        "keys have no bias"
    );

    let (f16t, f32t) = (TensorType::F16, TensorType::F32);
    let (a, t, m, f) = (
        N_AUDIO_CTX as i64,
        N_TEXT_CTX as i64,
        N_MELS as i64,
        N_FF as i64,
    );
    let v = fixture::N_VOCAB as i64;
    let expected: &[(&str, TensorType, &[i64])] = &[
        ("encoder.conv1.weight", f16t, &[3, m, N]),
        ("encoder.conv1.bias", f32t, &[1, N]),
        ("encoder.conv2.weight", f16t, &[3, N, N]),
        ("encoder.conv2.bias", f32t, &[1, N]),
        ("encoder.positional_embedding", f32t, &[N, a]),
        ("encoder.blocks.0.attn_ln.weight", f32t, &[N]),
        ("encoder.blocks.0.attn.query.weight", f16t, &[N, N]),
        ("encoder.blocks.0.attn.query.bias", f32t, &[N]),
        ("encoder.blocks.0.attn.key.weight", f16t, &[N, N]),
        ("encoder.blocks.0.attn.value.bias", f32t, &[N]),
        ("encoder.blocks.0.attn.out.weight", f16t, &[N, N]),
        ("encoder.blocks.0.mlp_ln.bias", f32t, &[N]),
        ("encoder.blocks.0.mlp.0.weight", f16t, &[N, f]),
        ("encoder.blocks.0.mlp.0.bias", f32t, &[f]),
        ("encoder.blocks.0.mlp.2.weight", f16t, &[f, N]),
        ("encoder.ln_post.weight", f32t, &[N]),
        ("decoder.token_embedding.weight", f16t, &[N, v]),
        ("decoder.positional_embedding", f32t, &[N, t]),
        ("decoder.blocks.0.cross_attn_ln.weight", f32t, &[N]),
        ("decoder.blocks.0.cross_attn.query.weight", f16t, &[N, N]),
        ("decoder.blocks.0.cross_attn.key.weight", f16t, &[N, N]),
        ("decoder.blocks.0.cross_attn.value.bias", f32t, &[N]),
        ("decoder.blocks.0.cross_attn.out.bias", f32t, &[N]),
        ("decoder.blocks.0.attn.value.weight", f16t, &[N, N]),
        ("decoder.blocks.0.mlp.2.bias", f32t, &[N]),
        ("decoder.ln.bias", f32t, &[N]),
    ];
    for (name, ttype, ne) in expected {
        let t = info
            .tensor(name)
            .unwrap_or_else(|| panic!("no tensor {name}"));
        assert_eq!((t.ttype, t.ne.as_slice()), (*ttype, *ne), "{name}");
    }
}

#[test]
fn fused_projections_split_into_query_key_value() {
    let vars = fixture::whisper_vars(false);
    let (_tmp, out, result) = convert(&vars);
    result.expect("import");
    let info = inspect(&out).expect("inspect");
    let n = N_STATE;

    let qkv = fixture::f32_values(&vars, "encoder/layer_0/self_attention/linear_0/weight");
    let prefix = "encoder.blocks.0.attn";
    for (i, part) in ["query", "key", "value"].iter().enumerate() {
        let got = tensor_values(&out, &info, &format!("{prefix}.{part}.weight"));
        assert_eq!(got, qkv[i * n * n..(i + 1) * n * n], "{part}");
    }
    let bias = fixture::f32_values(&vars, "encoder/layer_0/self_attention/linear_0/bias");
    assert_eq!(
        tensor_values(&out, &info, &format!("{prefix}.value.bias")),
        bias[2 * n..]
    );

    let kv = fixture::f32_values(&vars, "decoder/layer_0/attention/linear_1/weight");
    let value = tensor_values(&out, &info, "decoder.blocks.0.cross_attn.value.weight");
    assert_eq!(value, kv[n * n..]);
    let conv_bias = fixture::f32_values(&vars, "encoder/conv1/bias");
    assert_eq!(tensor_values(&out, &info, "encoder.conv1.bias"), conv_bias);
}

#[test]
fn int8_weights_are_dequantised_by_their_row_scale() {
    let vars = fixture::whisper_vars(true);
    let (_tmp, out, result) = convert(&vars);
    let summary = result.expect("import");
    assert_eq!(summary.source_dtype, "int8");
    assert_eq!(summary.tensors, 50, "scales are not tensors");
    let info = inspect(&out).expect("inspect");

    let name = "encoder/layer_0/self_attention/linear_0/weight";
    let Some(Data::I8(q)) = vars.iter().find(|v| v.name == name).map(|v| &v.data) else {
        panic!("{name} is not int8");
    };
    let scales = fixture::f32_values(&vars, &format!("{name}_scale"));
    let n = N_STATE;
    // Row 1, column 3 of the value block (rows 2n..3n of the fused matrix).
    let (row, col) = (2 * n + 1, 3);
    let want = f16::from_f32(f32::from(q[row * n + col]) / scales[row]).to_f32();
    let value = tensor_values(&out, &info, "encoder.blocks.0.attn.value.weight");
    assert_eq!(value[n + col], want);
    assert!(
        want != 0.0 && want.fract() != 0.0,
        "a real dequantised value: {want}"
    );

    let emb = tensor_values(&out, &info, "decoder.token_embedding.weight");
    let original =
        fixture::f32_values(&fixture::whisper_vars(false), "decoder/embeddings/weight").to_vec();
    for (got, orig) in emb.iter().zip(&original) {
        assert!((got - orig).abs() <= 1.0 / 127.0, "{got} vs {orig}");
    }
}

fn without(name: &str) -> Vec<Var> {
    let mut vars = fixture::whisper_vars(false);
    vars.retain(|v| v.name != name);
    vars
}

#[test]
fn missing_tensor_is_named() {
    for name in [
        "encoder/layer_0/ffn/linear_1/bias",
        "decoder/layer_0/attention/linear_2/weight",
        "decoder/num_heads",
        "encoder/conv1/weight",
    ] {
        let (tmp, out, result) = convert(&without(name));
        match result {
            Err(ImportError::MissingTensor { name: got }) => assert_eq!(got, name),
            other => panic!("{name}: {other:?}"),
        }
        assert!(!out.exists());
        drop(tmp);
    }
}

#[test]
fn missing_scale_of_int8_weight_is_named() {
    let mut vars = fixture::whisper_vars(true);
    let scale = "decoder/layer_0/ffn/linear_0/weight_scale";
    vars.retain(|v| v.name != scale);
    let (_tmp, _out, result) = convert(&vars);
    assert!(matches!(result, Err(ImportError::MissingTensor { name }) if name == scale));
}

#[test]
fn odd_shape_is_named_with_its_shape() {
    let mut vars = fixture::whisper_vars(false);
    let var = vars
        .iter_mut()
        .find(|v| v.name == "decoder/layer_0/attention/linear_1/bias")
        .expect("bias present");
    var.shape = vec![N_STATE];
    var.data = Data::F32(vec![0.0; N_STATE]);
    let (_tmp, _out, result) = convert(&vars);
    let err = result.expect_err("bias of the wrong length");
    assert!(
        matches!(&err, ImportError::OddShape { name, shape, .. }
            if name == "decoder/layer_0/attention/linear_1/bias" && shape == &[N_STATE]),
        "{err:?}"
    );
    assert!(err.to_string().contains("[8]"), "{err}");
}

#[test]
fn truncated_model_bin_is_reported() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let vars = fixture::whisper_vars(false);
    fixture::write_dir(tmp.path(), &vars);
    let full = fixture::encode(&vars);
    std::fs::write(tmp.path().join("model.bin"), &full[..full.len() * 2 / 3]).expect("cut");
    let out = tmp.path().join("m.bin");
    let err = import_ct2(tmp.path(), &out, &quiet()).expect_err("truncated");
    assert!(
        matches!(
            err,
            ImportError::Model {
                source: Ct2Error::Truncated { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!out.exists());
}

#[test]
fn missing_file_is_named_with_a_hint() {
    for file in REQUIRED_FILES {
        let tmp = tempfile::tempdir().expect("tempdir");
        fixture::write_dir(tmp.path(), &fixture::whisper_vars(false));
        std::fs::remove_file(tmp.path().join(file)).expect("remove");
        let err =
            import_ct2(tmp.path(), &tmp.path().join("m.bin"), &quiet()).expect_err("missing file");
        assert!(matches!(err, ImportError::MissingFile { file: f, .. } if f == file));
        let text = err.to_string();
        assert!(text.contains(file) && text.contains("hint:"), "{text}");
    }
    let err = import_ct2(Path::new("/nonexistent/stt"), Path::new("x"), &quiet());
    assert!(matches!(err, Err(ImportError::NotADirectory { .. })));
}

#[test]
fn broken_config_json_is_reported() {
    let tmp = tempfile::tempdir().expect("tempdir");
    fixture::write_dir(tmp.path(), &fixture::whisper_vars(false));
    std::fs::write(tmp.path().join("config.json"), "{ not json").expect("write");
    let err = import_ct2(tmp.path(), &tmp.path().join("m.bin"), &quiet());
    assert!(matches!(err, Err(ImportError::Config { .. })));
}

#[test]
fn non_zero_key_bias_is_refused_and_leaves_no_file() {
    let mut vars = fixture::whisper_vars(false);
    let name = "decoder/layer_0/self_attention/linear_0/bias";
    if let Some(Var {
        data: Data::F32(v), ..
    }) = vars.iter_mut().find(|v| v.name == name)
    {
        v[N_STATE + 2] = 0.25;
    }
    let (tmp, _out, result) = convert(&vars);
    match result {
        Err(ImportError::NonZeroKeyBias { name: got, max_abs }) => {
            assert_eq!((got.as_str(), max_abs), (name, 0.25));
        }
        other => panic!("{other:?}"),
    }
    let left: Vec<_> = std::fs::read_dir(tmp.path().join("out"))
        .expect("out dir")
        .collect();
    assert!(left.is_empty(), "no part file left: {left:?}");
}

// === real models (provisioned by scripts/setup.sh, which the test command runs) ===

/// A provisioned CTranslate2 model, found by the product's own rules
/// (`STT_MODELS_DIR`, then the cache); missing is a failure, not a skip.
fn provisioned(name: &str) -> PathBuf {
    let dir = crate::models::store::ct2_dir(name);
    assert!(
        dir.join("model.bin").is_file(),
        "{} missing: run scripts/setup.sh first",
        dir.display()
    );
    dir
}

fn convert_real(dir: &Path) -> (tempfile::TempDir, PathBuf, ImportSummary) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("ggml.bin");
    let summary = import_ct2(dir, &out, &quiet()).expect("import");
    (tmp, out, summary)
}

#[test]
fn tiny_en_converts_to_the_official_size() {
    let dir = provisioned("tiny.en");
    let (_tmp, out, summary) = convert_real(&dir);
    assert_eq!(summary.bytes, 77_704_715);
    assert_eq!(summary.tensors, 167);
    assert_eq!((summary.n_vocab, summary.multilingual), (51864, false));
    assert_eq!(summary.source_dtype, "float16");
    let info = inspect(&out).expect("inspect");
    assert_eq!(info.file_size, 77_704_715);
    assert_eq!(info.tensors.len(), 167);
    assert_eq!(info.n_vocab_tokens, 50257);
    assert_eq!(info.model_size, "tiny");
}

#[test]
fn base_converts_to_the_expected_size() {
    let dir = provisioned("base");
    let (_tmp, out, summary) = convert_real(&dir);
    assert_eq!(summary.bytes, 147_951_482);
    assert_eq!((summary.n_vocab, summary.multilingual), (51865, true));
    let info = inspect(&out).expect("inspect");
    assert_eq!(info.n_vocab_tokens, 50258);
    assert_eq!(info.model_size, "base");
}

#[test]
fn tiny_en_loads_in_whisper_cpp() {
    let dir = provisioned("tiny.en");
    let (_tmp, out, _) = convert_real(&dir);
    let ctx = whisper_rs::WhisperContext::new_with_params(
        &out,
        whisper_rs::WhisperContextParameters::default(),
    )
    .expect("whisper.cpp loads the converted file");
    ctx.create_state().expect("whisper.cpp creates a state");
}
